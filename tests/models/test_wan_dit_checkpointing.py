"""WanDiT gradient checkpointing is exact (fp64): the same outputs and gradients (parameters, latents, text)
with and without it, without a cache (bidirectional, block-causal, windowed with sinks, features) and
through a KV cache whose frames are overwritten before backward; a cache changed behind WanDiT's back
makes backward fail loudly instead of silently differing."""

from __future__ import annotations

import pytest
import torch

from selfforcing.models import WanDiT

TOL = dict(rtol=1e-10, atol=1e-13)


def _inputs(frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, frames, 4, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(2, frames, generator=g, dtype=torch.float64) * 1000).requires_grad_(False)
    text = torch.randn(2, 16, 32, generator=g, dtype=torch.float64, requires_grad=True)
    return x, t, text


def _run(model: WanDiT, checkpointing: bool, fn):
    """fn() -> scalar loss; returns (loss, grads of every parameter and of the leaf inputs it used)."""
    model.zero_grad()
    model.enable_gradient_checkpointing(checkpointing)
    loss, leaves = fn()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()] + [leaf.grad.clone() for leaf in leaves]
    for leaf in leaves:
        leaf.grad = None
    return loss.detach(), grads


def _assert_same(model, fn):
    loss, plain = _run(model, False, fn)
    loss_ckpt, ckpt = _run(model, True, fn)
    assert torch.equal(loss, loss_ckpt)
    assert all(g.abs().max() > 0 for g in plain), "every parameter and input must receive gradient"
    for a, b in zip(ckpt, plain, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # bidirectional (teacher, critic)
        dict(frames_per_chunk=3),  # block-causal (training with a causal mask)
        dict(frames_per_chunk=1, window_frames=3, sink_frames=1),
    ],
    ids=["bidirectional", "block_causal", "window_sink"],
)
def test_no_cache_forward(tiny_model, kwargs):
    x, t, text = _inputs(6)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _assert_same(tiny_model, lambda: ((tiny_model(x, t, text, **kwargs) * w).sum(), [x, text]))


def test_features_for_a_discriminator_head(tiny_model):
    x, t, text = _inputs(3)

    def loss():
        out, feats = tiny_model(x, t, text, return_features=True)
        return out.square().mean() + feats.sin().mean(), [x, text]

    _assert_same(tiny_model, loss)


def _chunk_then_overwrite(model: WanDiT, text: torch.Tensor, x: torch.Tensor):
    """Four chunks of 2 frames through a rolling cache (1 sink + a ring of 3): chunk 2 runs with grad;
    chunk 3 then overwrites ring slots chunk 2 attended to. Loss on chunk 2's output only."""
    cache = model.new_kv_cache(2, window_frames=4, sink_frames=1)
    t = torch.full((2, 2), 400.0, dtype=torch.float64)
    with torch.no_grad():
        for i in (0, 1):
            model(x[:, 2 * i : 2 * i + 2], t, text, kv_cache=cache, start_frame=2 * i)
    out = model(x[:, 4:6], t, text, kv_cache=cache, start_frame=4)
    with torch.no_grad():
        model(x[:, 4:6], t * 0, text, kv_cache=cache, start_frame=4)
        model(x[:, 6:8], t, text, kv_cache=cache, start_frame=6)
    return out, cache


def test_chunk_through_a_ring_overwritten_before_backward(tiny_model):
    x, _, text = _inputs(8)
    x = x.detach()

    def loss():
        out, _ = _chunk_then_overwrite(tiny_model, text, x)
        return out.square().sum(), [text]

    _assert_same(tiny_model, loss)


def test_cache_changed_outside_the_model_fails_backward(tiny_model):
    x, _, text = _inputs(8)
    tiny_model.enable_gradient_checkpointing(True)
    out, cache = _chunk_then_overwrite(tiny_model, text, x.detach())
    cache.keep_rows([1, 0])  # swaps the streams in place, behind WanDiT's back
    with pytest.raises(RuntimeError, match="modified outside WanDiT"):
        out.sum().backward()
