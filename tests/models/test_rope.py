"""RoPE: Wan's frequencies by default; periodic row / column frequencies for worlds that wrap around."""

from __future__ import annotations

import pytest
import torch

from selfforcing.config import ConfigError, load_config
from selfforcing.models.rope import apply_rope, rope_angles


def _scores(cos, sin, q, k):
    """Attention logits between every pair of tokens after rotating q and k by their positions."""
    qr = apply_rope(q.expand(1, cos.shape[0], 1, -1).clone(), cos, sin)[0, :, 0]
    kr = apply_rope(k.expand(1, cos.shape[0], 1, -1).clone(), cos, sin)[0, :, 0]
    return qr @ kr.T  # [L, L]


def test_periodic_spatial_rope_makes_a_wrap_the_same_offset():
    """On a 5x5 torus, the logit from token (r, c) to (r, c+1) equals the one to (r, c-4): a move that wraps
    is the same relative offset as one that does not. Wan's frequencies do not have this property."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(32, generator=g, dtype=torch.float64), torch.randn(32, generator=g, dtype=torch.float64)
    for period, equal in (((5, 5), True), (None, False)):
        cos, sin = rope_angles(0, 1, 5, 5, 32, 10.0, "cpu", period)
        s = _scores(cos.double(), sin.double(), q, k).reshape(5, 5, 5, 5)  # [r, c, r', c']
        right_of_4 = s[2, 4, 2, 0]  # from column 4 to column 0 = +1 with the wrap
        right_of_1 = s[2, 1, 2, 2]  # from column 1 to column 2 = +1 without it
        assert bool(torch.isclose(right_of_4, right_of_1, atol=1e-4)) == equal
    # the frame axis keeps Wan's frequencies either way
    a, _ = rope_angles(3, 4, 5, 5, 32, 10.0, "cpu", (5, 5))
    b, _ = rope_angles(3, 4, 5, 5, 32, 10.0, "cpu", None)
    assert torch.equal(a[:, :6], b[:, :6]) and not torch.equal(a, b)


def test_periodic_rope_config_is_validated():
    cfg = load_config("toy", overrides=["model.rope_spatial_period=[5,5]"])
    assert cfg.model.rope_spatial_period == (5, 5)
    with pytest.raises(ConfigError, match="rope_spatial_period"):
        load_config("toy", overrides=["model.rope_spatial_period=[0,5]"])


def test_time_scale_multiplies_only_the_frame_angles():
    """rope_time_scale s: the frame pairs turn s times as fast (frame t under s = frame s*t under 1), rows and
    columns are untouched, and 1.0 is Wan's RoPE exactly."""
    ct = 6  # frame pairs of head_dim 32
    base_c, base_s = rope_angles(0, 6, 5, 5, 32, 10.0, "cpu", (5, 5))
    assert torch.equal(rope_angles(0, 6, 5, 5, 32, 10.0, "cpu", (5, 5), 1.0)[0], base_c)
    scaled, _ = rope_angles(0, 6, 5, 5, 32, 10.0, "cpu", (5, 5), 3.0)
    assert torch.equal(scaled[:, ct:], base_c[:, ct:])
    angle = torch.atan2(base_s[:, :ct].double(), base_c[:, :ct].double())  # frame angles at scale 1
    assert torch.allclose(scaled[:, :ct].double(), torch.cos(3.0 * angle), atol=1e-6)
    with pytest.raises(ConfigError, match="rope_time_scale"):
        load_config("toy", overrides=["model.rope_time_scale=0"])
