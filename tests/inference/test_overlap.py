"""Decode overlapped with the DiT: same video, same order, the DiT really runs ahead, clean shutdown."""

import threading

import numpy as np
import pytest
import torch

from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline
from selfforcing.inference.overlap import BackgroundRollout


def _pipe(overlap) -> VideoPipeline:
    cfg = load_config("tiny", overrides=[f"generation.overlap_decode={overlap}"])
    return VideoPipeline.from_config(cfg, device="cpu")


@pytest.fixture(scope="module")
def pipes():
    return _pipe("false"), _pipe("true")


def test_auto_overlaps_only_on_cuda(pipes):
    assert not _pipe("auto").overlaps_decode()  # CPU: DiT and VAE would share the same cores
    serial, overlapped = pipes
    assert overlapped.overlaps_decode() and not serial.overlaps_decode()


def test_overlapped_stream_equals_serial_stream(pipes):
    serial, overlapped = pipes
    kwargs = dict(num_frames=33, seed=[4, 9])
    a = list(serial.stream(["a red square", "a cat"], **kwargs))
    b = list(overlapped.stream(["a red square", "a cat"], **kwargs))
    assert [c.index for c in b] == list(range(len(a)))
    assert [c.frame_start for c in b] == [c.frame_start for c in a] == [0, 9, 21]
    assert [c.latent_start for c in b] == [c.latent_start for c in a]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.latents, y.latents)
        assert x.frames.dtype == y.frames.dtype == np.uint8
        assert np.array_equal(x.frames, y.frames)
    assert [c.elapsed for c in b] == sorted(c.elapsed for c in b)


def test_dit_denoises_the_next_chunk_while_a_chunk_is_decoded(monkeypatch):
    """While chunk 0 is being decoded, the DiT thread must reach chunk 1's first model call. A serial
    pipeline never does (the wait below would time out), so this proves the overlap itself."""
    pipe = _pipe("true")
    next_chunk_started = threading.Event()
    saw_overlap = []

    def pre_hook(module, args, kwargs):
        if kwargs.get("start_frame") == 3:
            next_chunk_started.set()

    handle = pipe.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    decoder_cls = type(pipe.vae.streaming_decoder())
    original = decoder_cls.decode_chunk

    def decode_chunk(self, latents):
        if not saw_overlap:  # chunk 0: wait (generously) for the DiT thread to start chunk 1
            saw_overlap.append(next_chunk_started.wait(timeout=60))
        return original(self, latents)

    monkeypatch.setattr(decoder_cls, "decode_chunk", decode_chunk)
    try:
        chunks = list(pipe.stream("a red square", num_frames=21, seed=1))
    finally:
        handle.remove()
    assert saw_overlap == [True]
    assert len(chunks) == 2


def test_closing_early_stops_the_dit_thread_and_returns_the_cache():
    pipe = _pipe("true")
    before = {t.ident for t in threading.enumerate()}
    it = pipe.stream("a red square", num_frames=81, seed=1)
    first = next(it)
    assert first.index == 0
    it.close()
    workers = [t for t in threading.enumerate() if t.name == "dit-rollout" and t.ident not in before]
    assert not any(t.is_alive() for t in workers)
    assert len(pipe.kv_caches) == 1  # leased for the stream, given back when it closed


def test_an_error_in_the_dit_thread_reaches_the_consumer():
    pipe = _pipe("true")
    bad_text = torch.zeros(1, 4, 7)  # text_dim must be 32
    with pytest.raises(ValueError, match="text must be"):
        list(pipe.stream("x", num_frames=21, text_embeddings=bad_text, decode=False))
    # and the pipeline still works afterwards
    assert len(list(pipe.stream("x", num_frames=21, decode=False))) == 2


def test_background_rollout_keeps_order_and_rejects_bad_depth():
    items = list(BackgroundRollout(iter(range(20)), torch.device("cpu"), depth=3))
    assert [i for i, _ in items] == list(range(20))
    assert all(ready.event is None for _, ready in items)
    with pytest.raises(ValueError, match="depth=0"):
        BackgroundRollout(iter([]), torch.device("cpu"), depth=0)
