"""The incremental (KV-cached) path must compute exactly what one block-causal pass computes."""

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.models import WanDiT

B, C, H, W = 2, 4, 4, 6


@pytest.fixture(scope="module")
def model32():
    torch.manual_seed(0)
    return WanDiT(load_config("tiny").model).float().eval()


def _inputs(frames, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, frames, C, H, W, generator=g, dtype=dtype)
    t = torch.rand(B, frames, generator=g, dtype=dtype) * 1000
    text = torch.randn(B, 10, 32, generator=g, dtype=dtype)
    return x, t, text


def _cached(model, x, t, text, chunk, window=None, sink=0, noisy_first=True):
    cache = model.new_kv_cache(x.shape[0], window_frames=window, sink_frames=sink)
    outs = []
    for s in range(0, x.shape[1], chunk):
        if noisy_first:  # a denoising pass at the same start frame must be overwritten
            model(torch.randn_like(x[:, s : s + chunk]), t[:, s : s + chunk] * 0 + 999, text,
                  kv_cache=cache, start_frame=s)
        outs.append(model(x[:, s : s + chunk], t[:, s : s + chunk], text, kv_cache=cache, start_frame=s))
    return torch.cat(outs, dim=1), cache


@pytest.mark.parametrize("chunk", [3, 1])
@torch.no_grad()
def test_cached_generation_equals_block_causal_forward(model32, chunk):
    x, t, text = _inputs(9)
    full = model32(x, t, text, frames_per_chunk=chunk)
    cached, _ = _cached(model32, x, t, text, chunk)
    assert (cached - full).abs().max().item() < 1e-4


@pytest.mark.parametrize("window, sink", [(6, 0), (6, 3), (5, 1), (4, 0)])
@torch.no_grad()
def test_rolling_cache_equals_local_window_mask(model32, window, sink):
    chunk = 3 if window - sink >= 3 else 1
    chunk = 1 if window == 4 else chunk
    x, t, text = _inputs(15, seed=1)
    full = model32(x, t, text, frames_per_chunk=chunk, window_frames=window, sink_frames=sink)
    cached, _ = _cached(model32, x, t, text, chunk, window, sink)
    assert (cached - full).abs().max().item() < 1e-4
    # The window really restricts attention: late frames differ from the unrestricted model.
    unrestricted = model32(x, t, text, frames_per_chunk=chunk)
    assert (unrestricted[:, -3:] - full[:, -3:]).abs().max().item() > 1e-3


@torch.no_grad()
def test_rolling_cache_memory_is_constant(model32):
    short, cache_short = _cached(model32, *_inputs(6), 3, window=6, noisy_first=False)
    long_, cache_long = _cached(model32, *_inputs(30), 3, window=6, noisy_first=False)
    assert cache_short.nbytes == cache_long.nbytes > 0
    assert cache_long.frames_written == 30
    _, full_cache = _cached(model32, *_inputs(30), 3, noisy_first=False)
    assert full_cache.nbytes > cache_long.nbytes


@torch.no_grad()
def test_text_kv_computed_once_and_replaced_on_new_prompt(model32, monkeypatch):
    x, t, text = _inputs(6)
    calls = []
    real = model32.embed_text
    monkeypatch.setattr(model32, "embed_text", lambda tx: calls.append(1) or real(tx))
    cache = model32.new_kv_cache(B)
    for s in (0, 3):
        model32(x[:, s : s + 3], t[:, s : s + 3], text, kv_cache=cache, start_frame=s)
    assert len(calls) == 1
    other = torch.randn_like(text)
    switched = model32(x[:, 3:6], t[:, 3:6], other, kv_cache=cache, start_frame=3)
    assert len(calls) == 2
    # Prompt switching keeps the frame cache: the result differs from a fresh cache with the new text.
    fresh = model32.new_kv_cache(B)
    model32(x[:, :3], t[:, :3], text, kv_cache=fresh, start_frame=0)
    expected = model32(x[:, 3:6], t[:, 3:6], other, kv_cache=fresh, start_frame=3)
    torch.testing.assert_close(switched, expected)


def test_grad_path_matches_and_cache_stays_detached(model32):
    x, t, text = _inputs(6)
    cache = model32.new_kv_cache(B)
    with torch.no_grad():
        model32(x[:, :3], t[:, :3], text, kv_cache=cache, start_frame=0)
    out = model32(x[:, 3:6], t[:, 3:6], text, kv_cache=cache, start_frame=3)
    with torch.no_grad():
        ref = model32(x, t, text, frames_per_chunk=3)[:, 3:6]
    assert out.requires_grad and not cache.k.requires_grad and not cache.v.requires_grad
    assert (out - ref).abs().max().item() < 1e-4
    out.square().mean().backward()
    assert model32.blocks[0].self_attn.k.weight.grad.abs().sum() > 0


def test_cache_rejects_gaps_and_wrong_batch(model32):
    x, t, text = _inputs(6)
    cache = model32.new_kv_cache(B)
    with torch.no_grad(), pytest.raises(ValueError, match="without gaps"):
        model32(x[:, :3], t[:, :3], text, kv_cache=cache, start_frame=3)
    with torch.no_grad(), pytest.raises(ValueError, match="batch"):
        model32(x[:1, :3], t[:1, :3], text[:1], kv_cache=cache, start_frame=0)
    rolling = model32.new_kv_cache(B, window_frames=4, sink_frames=2)
    with torch.no_grad(), pytest.raises(ValueError, match="does not fit the rolling window"):
        model32(x[:, :3], t[:, :3], text, kv_cache=rolling, start_frame=0)
