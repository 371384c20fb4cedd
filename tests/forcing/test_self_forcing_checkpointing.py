"""Gradient checkpointing through the KV cache is exact: a Self Forcing training rollout's gradients (fp64)
are the same with and without it, for a full cache, a rolling cache whose ring is overwritten after a grad
chunk attended to it, sink frames, and frame-wise chunks whose context wraps around the ring. It also
leaves the cache as the rollout left it, and keeps far fewer tensors for backward."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

from selfforcing.forcing import NoiseSource, RolloutConfig, RolloutPlan, self_forcing_rollout
from selfforcing.models.checkpointing import CachePins

LATENT = (4, 4, 4)
SEEDS = (11, 12)

# name: (frames_per_chunk, window_frames, sink_frames, plan)
CASES = {
    "full": (3, None, 0, RolloutPlan(3, (3, 1, 2))),
    # Ring of 6 frames, 4 chunks of 3: chunk 3 overwrites the frames chunk 2's exit step attended to.
    "rolling": (3, 6, 0, RolloutPlan(4, (2, 2, 2, 2))),
    # 3 sink frames + a ring of 6; per-chunk exits; the loss window's first chunk carries no grad.
    "rolling_sink": (3, 9, 3, RolloutPlan(5, (0, 3, 1, 2, 3), loss_start_chunk=1, mask_first_window_chunk=True)),
    # Frame pairs in a ring of 3 behind 1 sink: writes and contexts wrap, so writes cut pinned runs in two.
    "framewise_wrap": (2, 4, 1, RolloutPlan(5, (1, 3, 0, 2, 3))),
}


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _max_rel_err(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)) for n in a)


def _rollout(model, text, steps, schedule, case: str, cache=None):
    k, window, sink, plan = CASES[case]
    if cache is None:
        cache = model.new_kv_cache(
            2, window_frames=window, sink_frames=sink, max_frames=None if window else plan.num_chunks * k
        )
    sample = self_forcing_rollout(
        model, text, plan, LATENT, RolloutConfig(steps, k), schedule, NoiseSource(SEEDS), cache=cache
    )
    return sample, cache


def _train_step(model, text, steps, schedule, case: str, checkpointing: bool):
    """One generator backward as training does it: ``video.backward(dL/dx)``; returns what it changed."""
    model.zero_grad()
    model.enable_gradient_checkpointing(checkpointing)
    sample, cache = _rollout(model, text, steps, schedule, case)
    g = torch.randn(sample.video.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sample.video.backward(g)
    return sample.video.detach(), _grads(model), cache


@pytest.mark.parametrize("case", list(CASES))
def test_checkpointed_rollout_gradients_equal_plain(make_model, text, steps, schedule, case):
    model = make_model(0)
    k, window, sink, plan = CASES[case]
    if window is not None:  # the case must really overwrite frames a grad chunk attended to
        assert plan.num_chunks * k - window >= k
    video, plain, cache = _train_step(model, text, steps, schedule, case, checkpointing=False)
    video_ckpt, ckpt, cache_ckpt = _train_step(model, text, steps, schedule, case, checkpointing=True)

    assert torch.equal(video_ckpt, video)
    assert all(plain[n].abs().max() > 0 for n in plain), "every parameter must receive gradient"
    err = _max_rel_err(ckpt, plain)
    print(f"{case}: checkpointed vs plain gradient, max relative error {err:.2e}")
    assert err < 1e-10, err
    # The recomputation in backward wrote nothing: the cache is what the rollout left.
    assert torch.equal(cache_ckpt.k, cache.k) and torch.equal(cache_ckpt.v, cache.v)


def test_two_rollouts_through_one_reused_cache_then_one_backward(make_model, text, steps, schedule):
    """Gradient accumulation: a second rollout rewrites every slot before the first one's backward."""
    model = make_model(0)
    g = torch.randn(2, 12, *LATENT, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    results = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.enable_gradient_checkpointing(checkpointing)
        first, cache = _rollout(model, text, steps, schedule, "rolling")
        cache.reset()
        second, _ = _rollout(model, text, steps, schedule, "rolling", cache=cache)
        (first.video * g).sum().backward()
        (second.video * g.flip(0)).sum().backward()
        results.append(_grads(model))
    err = _max_rel_err(results[1], results[0])
    print(f"two rollouts on one cache, checkpointed vs plain: max relative error {err:.2e}")
    assert err < 1e-10, err


def _live_storages(extra: list[torch.Tensor] = ()) -> dict[int, int]:
    """data_ptr -> bytes of every distinct storage held by a live Python tensor (or in ``extra``)."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance on deprecated module proxies warns
        warnings.simplefilter("ignore")
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    out: dict[int, int] = {}
    for t in [*extra, *tensors]:
        try:
            s = t.untyped_storage()
            out[s.data_ptr()] = s.nbytes()
        except (RuntimeError, NotImplementedError):  # fake / meta tensors a compiler keeps alive: no storage
            continue
    return out


def _retained_for_backward(run) -> tuple[int, int, object]:
    """(tensors saved for backward, bytes of new storages alive after ``run()``, its result)."""
    before = _live_storages()
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        result = run()
    after = _live_storages(saved)
    return len(saved), sum(n for p, n in after.items() if p not in before), result


@pytest.mark.parametrize("case", ["full", "rolling_sink"])
def test_checkpointing_keeps_far_less_for_backward(make_model, text, steps, schedule, case):
    """Counted, not timed: what the forward leaves alive for backward, beyond the video and the cache.

    The no-grad rollout leaves exactly the video and the cache; subtracting it leaves the activations
    (plus, when checkpointing a rolling cache, the copies of evicted pinned frames)."""
    model = make_model(0)
    model.eval()
    with torch.no_grad():
        _, base, _ = _retained_for_backward(lambda: _rollout(model, text, steps, schedule, case))
    measured = {}
    for checkpointing in (False, True):
        model.enable_gradient_checkpointing(checkpointing)
        count, total, (sample, cache) = _retained_for_backward(lambda: _rollout(model, text, steps, schedule, case))
        measured[checkpointing] = (count, total - base)
        if checkpointing:
            pins = CachePins.of(cache)
            segments = [s for refs in pins.pins.values() for r in refs if r() for s in r().segments]
            copied = sum(s.buffers is None for s in segments)
            assert (copied == 0) == (case == "full"), "a full cache needs no copies, a rolling one some"
        del sample, cache
    (n_plain, b_plain), (n_ckpt, b_ckpt) = measured[False], measured[True]
    print(f"{case}: saved tensors {n_plain} -> {n_ckpt}, activation bytes {b_plain} -> {b_ckpt} "
          f"({b_ckpt / b_plain:.2f}x)")
    assert n_ckpt < 0.4 * n_plain
    assert b_ckpt < 0.6 * b_plain


def test_pins_and_copies_are_released_with_the_graph(make_model, text, steps, schedule):
    model = make_model(0)
    model.enable_gradient_checkpointing(True)
    sample, cache = _rollout(model, text, steps, schedule, "rolling")
    pins = CachePins.of(cache)
    assert any(r() is not None for refs in pins.pins.values() for r in refs)
    sample.video.sum().backward()
    del sample
    gc.collect()
    assert all(r() is None for refs in pins.pins.values() for r in refs)
