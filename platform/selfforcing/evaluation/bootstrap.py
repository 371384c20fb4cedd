"""How sure is "A is closer to the reference than B"? A paired bootstrap of two Fréchet distances.

Two students are sampled on the same prompts and noise seeds as the reference set (the teacher's samples),
so video i of A, of B and of the reference belong together. Resampling the N indices with replacement, and
applying the same draw to all three sets, gives the spread of the difference that comes from which videos
happened to be in the evaluation set. At 96 videos that spread is about as large as the differences between
toy-world students, which is why reports quote it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frechet import frechet_by_chunk


@dataclass(frozen=True)
class FrechetComparison:
    """Fréchet distances of A and B to one reference and the bootstrap of their difference.

    ``margin`` = distance(B) - distance(A) on the full sets (positive: A is closer); ``margin_std`` its
    bootstrap standard deviation; ``a_closer`` the fraction of draws in which A was closer.
    """

    distance_a: float
    distance_b: float
    margin: float
    margin_std: float
    a_closer: float
    draws: int


def _distance(features: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(frechet_by_chunk(features, reference)))


def compare_frechet(
    a: np.ndarray, b: np.ndarray, reference: np.ndarray, draws: int = 200, seed: int = 0
) -> FrechetComparison:
    """Paired bootstrap of the mean-over-chunks Fréchet distance of features a, b [N, K, D] to reference
    [N, K_ref, D] (row i of each set shares its prompt and seed)."""
    n = len(a)
    if len(b) != n or len(reference) != n:
        raise ValueError(f"paired sets need the same number of videos; got {len(a)}, {len(b)}, {len(reference)}")
    if draws < 2:
        raise ValueError(f"draws={draws} must be >= 2")
    rng = np.random.default_rng(seed)
    margins = []
    for _ in range(draws):
        idx = rng.integers(0, n, n)
        margins.append(_distance(b[idx], reference[idx]) - _distance(a[idx], reference[idx]))
    da, db = _distance(a, reference), _distance(b, reference)
    m = np.asarray(margins)
    return FrechetComparison(da, db, db - da, float(m.std(ddof=1)), float((m > 0).mean()), draws)
