"""GPU-only checks (skipped without CUDA): bf16 + flash-attn paths agree with fp32 / SDPA."""

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.models import WanDiT
from selfforcing.models.attention import attention, flash_available

pytestmark = pytest.mark.gpu


def _model(backend: str, dtype: torch.dtype) -> WanDiT:
    torch.manual_seed(0)
    cfg = load_config("tiny", overrides=["model.dim=128", "model.num_heads=2"]).model  # head_dim 64
    return WanDiT(cfg, attention_backend=backend).to("cuda", dtype).eval()


@pytest.mark.skipif(not flash_available(), reason="flash-attn is not installed")
def test_flash_matches_sdpa_in_bf16():
    q, k, v = (torch.randn(2, 300, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = attention(q.float(), k.float(), v.float(), "sdpa")
    out = attention(q, k, v, "flash")
    assert (out.float() - ref).abs().max() < 2e-2


@torch.no_grad()
def test_bf16_cached_generation_tracks_block_causal_forward_on_cuda():
    model = _model("auto", torch.bfloat16)
    x = torch.randn(1, 9, 4, 8, 8, device="cuda", dtype=torch.bfloat16)
    t = torch.rand(1, 9, device="cuda") * 1000
    text = torch.randn(1, 16, 32, device="cuda", dtype=torch.bfloat16)
    full = model(x, t, text, frames_per_chunk=3).float()
    cache = model.new_kv_cache(1)
    cached = torch.cat(
        [model(x[:, s : s + 3], t[:, s : s + 3], text, kv_cache=cache, start_frame=s) for s in (0, 3, 6)], 1
    ).float()
    assert (cached - full).abs().mean() < 0.02 * full.abs().mean()


# ------------------------------------------------------------------ issue 15: the real-time path on CUDA
def _tiny_pipeline(*overrides: str):
    from selfforcing.inference import VideoPipeline

    cfg = load_config("tiny", overrides=["runtime.dtype=bfloat16", *overrides])
    return VideoPipeline.from_config(cfg, device="cuda", text_encoder=False)


def _dit_loop(pipe, num_chunks: int = 2):
    """The per-chunk loop itself (the rollout), on this thread: latents of ``num_chunks`` chunks."""
    from selfforcing.forcing.rollout import NoiseSource, RolloutConfig, rollout

    geo = pipe.geometry()
    text = torch.randn(1, 16, 32, device="cuda", dtype=torch.bfloat16)
    cache = pipe.model.new_kv_cache(1, max_frames=num_chunks * geo.frames_per_chunk)
    chunks = rollout(pipe.model, text, num_chunks, (4, geo.latent_height, geo.latent_width),
                     RolloutConfig(pipe.timesteps, geo.frames_per_chunk), pipe.schedule,
                     NoiseSource([3], device="cuda"), cache)
    return [c.latents for c in chunks]


@torch.no_grad()
def test_dit_loop_runs_under_sync_debug_mode_error():
    pipe = _tiny_pipeline()
    _dit_loop(pipe)  # warm-up: allocator, cuDNN/cuBLAS handles, lazy module state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call raises
    try:
        out = _dit_loop(pipe)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(torch.cat(out, 1).float()).all()


@torch.no_grad()
def test_profiler_sees_no_synchronisation_in_a_chunk():
    from torch.profiler import ProfilerActivity, profile

    pipe = _tiny_pipeline()
    _dit_loop(pipe, 1)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _dit_loop(pipe, 1)
        torch.cuda.synchronize()  # the profiler's own, outside the loop: exactly one expected
    names = [e.name for e in prof.events()]
    syncs = [n for n in names if "Synchronize" in n or n in ("aten::_local_scalar_dense", "cudaMemcpy")]
    assert syncs.count("cudaDeviceSynchronize") <= 1
    assert [n for n in syncs if n != "cudaDeviceSynchronize"] == []


@torch.no_grad()
def test_overlapped_decode_on_a_side_stream_equals_serial():
    import numpy as np

    text = torch.randn(1, 16, 32, device="cuda", dtype=torch.bfloat16)
    runs = []
    for overlap in ("false", "true"):
        pipe = _tiny_pipeline(f"generation.overlap_decode={overlap}")
        runs.append(list(pipe.stream([""], 33, seed=[5], text_embeddings=text)))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a.latents, b.latents)
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1


@torch.no_grad()
def test_compiled_blocks_track_eager_on_cuda():
    text = torch.randn(1, 16, 32, device="cuda", dtype=torch.bfloat16)
    eager = _tiny_pipeline().generate([""], 21, seed=[1], text_embeddings=text, decode=False).latents
    pipe = _tiny_pipeline("runtime.compile=default")
    got = pipe.generate([""], 21, seed=[1], text_embeddings=text, decode=False).latents
    assert pipe.compiled.active, pipe.compiled.error
    rel = ((got.float() - eager.float()).norm() / eager.float().norm()).item()
    assert rel < 0.02


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9), reason="FP8 needs sm89+"
)
@torch.no_grad()
def test_fp8_precision_tracks_fp32_on_cuda():
    from selfforcing.inference.precision import PrecisionMode

    model32 = _model("sdpa", torch.float32)
    model = _model("sdpa", torch.bfloat16)
    x = torch.randn(1, 3, 4, 8, 8, device="cuda")
    t = torch.full((1, 3), 700.0, device="cuda")
    text = torch.randn(1, 16, 32, device="cuda")
    ref = model32(x, t, text)
    mode = PrecisionMode(model, "fp8")
    out = model(x.bfloat16(), t, text.bfloat16()).float()
    mode.restore()
    assert ((out - ref).norm() / ref.norm()).item() < 0.08
