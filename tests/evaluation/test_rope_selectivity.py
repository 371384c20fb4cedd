"""How sharply a head can pick the previous frame: the exact margin, and the toy preset's frame frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfforcing.config import load_config
from selfforcing.evaluation.rope_selectivity import frame_frequencies, frame_margin
from selfforcing.models.rope import rope_angles, rope_split


def test_margin_of_one_quarter_turn_pair_is_root_two():
    """One pair at pi/2 per frame over offsets {-1, 0, 1}: b = (i - 1) / sqrt 2 gives f = (1, -1, -1) / sqrt 2,
    the best any unit b can do (b = i only reaches f = (1, 0, -1), a margin of 1)."""
    assert frame_margin([math.pi / 2], target=-1, span=1) == pytest.approx(math.sqrt(2), rel=1e-4)


def test_aliased_offsets_have_no_margin():
    """A pair turning 2 pi / 3 per frame cannot tell d = -1 from d = 2; nor can any set of its multiples."""
    assert frame_margin([2 * math.pi / 3, 4 * math.pi / 3], span=3) == pytest.approx(0.0, abs=1e-6)


def test_frame_frequencies_are_the_ones_rope_applies():
    cfg = load_config("toy").model
    ct = rope_split(cfg.head_dim)[0]
    cos, _ = rope_angles(0, 2, 1, 1, cfg.head_dim, cfg.rope_theta, "cpu", cfg.rope_spatial_period,
                         cfg.rope_time_scale)
    w = frame_frequencies(ct, cfg.rope_theta, cfg.rope_time_scale)
    assert np.allclose(cos[1, :ct].numpy(), np.cos(w), atol=1e-6)  # frame 1 turned by w_j


def test_toy_preset_picks_the_previous_frame_far_more_sharply_than_wans_formula():
    cfg = load_config("toy").model
    ct = rope_split(cfg.head_dim)[0]
    toy = frame_margin(frame_frequencies(ct, cfg.rope_theta, cfg.rope_time_scale), span=11)
    for theta in (10.0, 20.0, 10000.0):  # Wan's formula caps the fastest pair at 1 rad per frame
        assert toy > 3 * frame_margin(frame_frequencies(ct, theta), span=11)
    # and it still tells every offset of a 36-frame window apart
    assert frame_margin(frame_frequencies(ct, cfg.rope_theta, cfg.rope_time_scale), span=35) > 1.0
