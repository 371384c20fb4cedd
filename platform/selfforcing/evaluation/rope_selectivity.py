"""How sharply one attention head can pick a single frame offset with a given set of RoPE frequencies.

With RoPE, the frame part of a head's logit between tokens ``d`` frames apart is
f(d) = sum_j Re(b_j exp(i w_j d)), with b_j = q_j conj(k_j) for the frame pairs j; QK-RMSNorm bounds |b|.
To follow a moving object, a head must prefer one offset (the previous frame, d = -1) over every other
offset in the window. The best achievable preference per unit |b| is

    margin(w) = max_{|b| = 1} min_{d != target} f(target) - f(d),

which equals the distance from the origin to the convex hull of the difference vectors (minimax), computed
here exactly up to the solver's tolerance. Wan's formula w_j = theta^(-j/m) caps the fastest pair at
1 rad per frame whatever theta, which leaves the previous frame hard to tell from its neighbours;
``rope_time_scale`` in ``ModelConfig`` multiplies every w_j (docs/results/toyworld.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def frame_frequencies(num_pairs: int, theta: float, time_scale: float = 1.0) -> np.ndarray:
    """The frame pairs' angular frequencies (rad per frame) of ``rope.rope_angles``."""
    return time_scale * theta ** (-np.arange(num_pairs) / num_pairs)


def _min_norm_in_hull(points: np.ndarray, iters: int = 20000) -> float:
    """Distance from 0 to the convex hull of ``points`` [P, D] (Frank-Wolfe with exact line search)."""
    x = points[np.argmin((points**2).sum(1))].copy()
    for _ in range(iters):
        s = points[np.argmin(points @ x)]
        d = s - x
        dd = float(d @ d)
        if dd == 0.0:
            break
        gamma = min(1.0, max(0.0, -float(x @ d) / dd))
        if gamma == 0.0:
            break
        x = x + gamma * d
    return float(np.sqrt(x @ x))


def frame_margin(frequencies: Sequence[float], target: int = -1, span: int = 11) -> float:
    """``margin`` above over offsets d in [-span, span] (0 when some other offset cannot be told apart)."""
    w = np.asarray(frequencies, dtype=np.float64)
    d = np.arange(-span, span + 1, dtype=np.float64)
    feats = np.concatenate([np.cos(np.outer(d, w)), -np.sin(np.outer(d, w))], axis=1)  # f(d) = feats @ [Re b, Im b]
    i = int(np.nonzero(d == target)[0][0])
    diffs = feats[i] - np.delete(feats, i, axis=0)
    return _min_norm_in_hull(diffs)
