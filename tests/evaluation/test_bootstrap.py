"""The paired Fréchet bootstrap: which of two sets is closer to a reference, and how sure that is."""

from __future__ import annotations

import numpy as np
import pytest

from selfforcing.evaluation import compare_frechet


def sets(n: int = 64, k: int = 3, d: int = 4, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, k, d)) + shift


def test_a_set_from_the_reference_distribution_is_reliably_closer_than_a_shifted_one():
    ref, good, bad = sets(seed=0), sets(seed=1), sets(shift=1.0, seed=2)
    c = compare_frechet(good, bad, ref, draws=100)
    assert c.distance_a < c.distance_b
    assert c.margin == pytest.approx(c.distance_b - c.distance_a)
    assert c.margin > 5 * c.margin_std > 0
    assert c.a_closer == 1.0


def test_swapping_the_sets_negates_the_margin_and_the_closer_fraction():
    ref, a, b = sets(seed=0), sets(seed=1), sets(shift=0.2, seed=2)
    ab, ba = compare_frechet(a, b, ref, seed=3), compare_frechet(b, a, ref, seed=3)
    assert ab.margin == pytest.approx(-ba.margin)
    assert ab.margin_std == pytest.approx(ba.margin_std)
    assert ab.a_closer == pytest.approx(1 - ba.a_closer)


def test_identical_sets_have_no_margin_and_no_spread():
    ref, a = sets(seed=0), sets(seed=1)
    c = compare_frechet(a, a, ref, draws=20)
    assert c.margin == 0 and c.margin_std == 0 and c.a_closer == 0


def test_unpaired_sets_are_refused():
    with pytest.raises(ValueError, match="same number of videos"):
        compare_frechet(sets(n=10), sets(n=9), sets(n=10))
