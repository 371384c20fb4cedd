"""Per-forward work done once: RoPE tables, the attention backend choice, the batcher's key mask."""

import importlib.util

import torch

from selfforcing.config import load_config
from selfforcing.diffusion.samplers import timesteps_like
from selfforcing.models import WanDiT
from selfforcing.models.attention import flash_available, resolve_backend
from selfforcing.models.kv_cache import KVCache
from selfforcing.models.rope import apply_rope, rope_angles, rope_table


def _rotate_written_out(x, cos, sin):
    """The rotation as Wan writes it: pairs (x1, x2) -> (x1 c - x2 s, x1 s + x2 c)."""
    xf = x.float()
    x1, x2 = xf[..., 0::2], xf[..., 1::2]
    if cos.ndim == 2:
        cos, sin = cos[None], sin[None]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2).to(x.dtype)


def test_rope_table_is_memoised_and_bit_identical():
    a = rope_table(9, 3, 4, 6, 64, 10000.0, torch.device("cpu"), None)
    b = rope_table(9, 3, 4, 6, 64, 10000.0, torch.device("cpu"), None)
    assert a[0] is b[0] and a[1] is b[1]
    ref = rope_angles(9, 3, 4, 6, 64)
    assert torch.equal(a[0], ref[0]) and torch.equal(a[1], ref[1])
    assert not torch.equal(rope_table(12, 3, 4, 6, 64)[0], a[0])


def test_complex_rope_equals_the_written_out_rotation():
    g = torch.Generator().manual_seed(0)
    cos, sin = rope_angles(7, 3, 4, 6, 64)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 72, 4, 64, generator=g).to(dtype)
        torch.testing.assert_close(apply_rope(x, cos, sin), _rotate_written_out(x, cos, sin), rtol=1e-6, atol=1e-6)
    per_row = [rope_angles(s, 3, 4, 6, 64) for s in (0, 9)]
    cos2, sin2 = torch.stack([c for c, _ in per_row]), torch.stack([s for _, s in per_row])
    x = torch.randn(2, 72, 4, 64, generator=g)
    torch.testing.assert_close(apply_rope(x, cos2, sin2), _rotate_written_out(x, cos2, sin2), rtol=1e-6, atol=1e-6)


def test_backend_is_resolved_without_a_path_scan_per_forward(monkeypatch):
    scans = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: scans.append(a) or real(*a, **k))
    flash_available.cache_clear()
    resolve_backend.cache_clear()
    torch.manual_seed(0)
    model = WanDiT(load_config("tiny").model)
    x = torch.randn(1, 3, 4, 4, 6)
    with torch.no_grad():
        for _ in range(5):
            model(x, timesteps_like(x, 500.0), torch.zeros(1, 4, 32))
    assert len([a for a in scans if a and a[0] == "flash_attn"]) <= 1
    assert resolve_backend.cache_info().hits >= 4


def test_key_mask_is_built_once_per_call_for_rows_at_different_frames():
    cache = KVCache(num_layers=2, batch_size=3, num_heads=1, head_dim=4, max_frames=12)
    step = cache.begin(0, 3, 2)
    cache.commit(step)
    cache.keep_rows([0, 1])  # row 2 leaves, a fresh stream takes its place at frame 0
    cache.add_row()
    step = cache.begin([3, 3, 0], 3, 2)
    masks = [cache.visible(layer, step)[2] for layer in range(2)]
    assert masks[0] is masks[1] is step.key_mask
    expected = torch.zeros(3, 12, dtype=torch.bool)
    expected[0, :12] = expected[1, :12] = True  # 6 frames of 2 tokens
    expected[2, :6] = True
    assert torch.equal(step.key_mask[:, 0, 0], expected)
