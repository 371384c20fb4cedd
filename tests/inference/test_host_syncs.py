"""No host synchronisation in the per-chunk DiT loop, counted on the CPU through the code path a GPU runs.

On CUDA a host sync happens when the host reads device memory (``item``, ``tolist``, ``cpu``,
``numpy``, ``bool``/``int``/``float`` of a tensor), builds a device tensor from host data
(``torch.tensor(list, device=...)``), or waits explicitly (``synchronize``). The counter patches each
of these and records the thread that called it; the GPU counterpart (tests/models/test_gpu.py) runs the
same loop under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline
from selfforcing.inference.batching import ChunkBatcher

_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")


class SyncCounter:
    """Counts would-be host syncs as (thread name, what)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter = Counter()
        self.enabled = False
        for name in _READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name), f"Tensor.{name}"))
        for owner, name in ((torch.cuda, "synchronize"), (torch.cuda.Event, "synchronize"),
                            (torch.cuda.Stream, "synchronize")):
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), f"{owner.__name__}.{name}"))
        for name in ("tensor", "as_tensor", "from_numpy"):
            monkeypatch.setattr(torch, name, self._wrap(getattr(torch, name), f"torch.{name}", host_data=True))

    def _wrap(self, fn, what: str, host_data: bool = False):
        def wrapper(*args, **kwargs):
            if self.enabled and not (host_data and args and isinstance(args[0], torch.Tensor)):
                self.calls[(threading.current_thread().name, what)] += 1
            return fn(*args, **kwargs)

        return wrapper

    def in_thread(self, name: str) -> dict:
        return {what: n for (thread, what), n in self.calls.items() if thread == name}


@pytest.fixture
def counter(monkeypatch):
    return SyncCounter(monkeypatch)


@pytest.fixture(scope="module")
def pipe():
    cfg = load_config("tiny", overrides=["generation.overlap_decode=true"])
    return VideoPipeline.from_config(cfg, device="cpu")


def _run(pipe, counter, **kwargs) -> list:
    """One stream, counted from after prompt encoding (once per request) to its last chunk."""
    text = pipe.encode_prompts(["a red square"])
    counter.enabled = True
    try:
        return list(pipe.stream("a red square", seed=3, text_embeddings=text, **kwargs))
    finally:
        counter.enabled = False


@pytest.mark.parametrize("window", [None, 6])
def test_dit_loop_has_no_host_syncs(pipe, counter, window):
    chunks = _run(pipe, counter, num_frames=45, decode=False, window_frames=window)
    assert len(chunks) == 4
    assert counter.in_thread("dit-rollout") == {}
    assert counter.in_thread(threading.current_thread().name) == {}  # nothing to wait for without frames


def test_the_counter_sees_a_sync_in_the_loop(pipe, counter):
    """The control: one ``.item()`` per model call, as the reference implementation has, is counted."""
    def read_back(module, args, out) -> None:
        out.abs().max().item()

    handle = pipe.model.register_forward_hook(read_back)
    try:
        _run(pipe, counter, num_frames=21, decode=False)
    finally:
        handle.remove()
    assert counter.in_thread("dit-rollout") == {"Tensor.item": 2 * 5}  # 2 chunks x (4 steps + cache pass)


def test_frames_reach_the_host_in_the_consumer_not_the_dit_thread(pipe, counter):
    chunks = _run(pipe, counter, num_frames=33)
    assert [c.frames.shape[1] for c in chunks] == [9, 12, 12]
    assert counter.in_thread("dit-rollout") == {}
    assert counter.in_thread(threading.current_thread().name).get("Tensor.numpy", 0) == 3


def test_batched_streams_at_different_positions_step_without_syncs(pipe, counter):
    """Rows at different frames need a key mask; it is built on the device, once per call."""
    text = pipe.encode_prompts(["a red square"])
    batcher = ChunkBatcher(pipe, max_streams=2, decode=False)
    batcher.add("a", text, 1, None)
    batcher.step()
    batcher.add("b", text, 2, None)
    batcher.step()  # the new prompt batch is assembled here (membership changed)
    counter.enabled = True
    out = batcher.step() + batcher.step()
    counter.enabled = False
    assert [c.latent_start for _, c in out] == [6, 3, 9, 6]
    assert dict(counter.calls) == {}
    assert all(s.generator.device == pipe.device for s in batcher.streams)
