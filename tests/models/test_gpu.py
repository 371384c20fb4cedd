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
