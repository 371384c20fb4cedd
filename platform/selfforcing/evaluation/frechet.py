"""A Fréchet distance between two sets of toy-world videos in a fixed, interpretable feature space.

Each chunk of each video becomes one feature vector (no training, no downloads, deterministic):
per-frame means over the chunk of the fitted colour and shape (one-hot), fidelity and pixel spread, and
per-step means of the wrapped displacement d (in units of the fastest speed), d^2, |d|, moving or not and
the mean absolute frame difference; optionally the caption agreements, which makes the distance
sensitive to videos that look right but ignore their caption. Step features of a chunk include the step
into it from the previous chunk, so seams between autoregressive chunks show.
"""

from __future__ import annotations

import numpy as np
import torch

from selfforcing.data.toyworld.config import ToyWorldConfig

from .agreement import Agreement
from .chunks import masked_mean, to_chunks
from .fitting import FrameFit
from .trajectory import displacements


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussians fitted to a [n, D], b [m, D]."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be [n, D] and [m, D] with the same D; got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set for a covariance; got {len(a)} and {len(b)}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(sa)
    sa_half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sa_half @ sb @ sa_half
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(max(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross, 0.0))


def chunk_features(
    x: torch.Tensor,
    fit: FrameFit,
    config: ToyWorldConfig,
    frames_per_chunk: int,
) -> np.ndarray:
    """float64 [N, K, D] features of each chunk; x: float [N, T, H, W, 3] in [-1, 1] (the fitted videos)."""
    n, t = fit.colour.shape
    colour = np.eye(len(config.colours))[fit.colour]  # [N, T, C]
    shape = np.eye(len(config.shapes))[fit.shape]  # [N, T, S]
    spread = x.reshape(n, t, -1).std(dim=2).double().numpy()[..., None]
    frame = [colour, shape, fit.fidelity[..., None], spread]

    step = displacements(fit.position, config.grid) / max(config.speeds.values())  # [N, T-1, 2]
    moving = (np.abs(step).sum(-1, keepdims=True) > 0).astype(np.float64)
    diff = (x[:, 1:] - x[:, :-1]).abs().reshape(n, t - 1, -1).mean(dim=2).double().numpy()[..., None]
    steps = [step, step**2, np.abs(step).sum(-1, keepdims=True), moving, diff]
    return _chunk_means(frame, steps, frames_per_chunk)


def agreement_features(agreement: Agreement, frames_per_chunk: int) -> np.ndarray:
    """float64 [N, K, 4]: per chunk, the fractions of colour, direction, speed and motion agreement."""
    frame = [agreement.colour[..., None].astype(np.float64)]
    steps = [getattr(agreement, k)[..., None].astype(np.float64) for k in ("direction", "speed", "motion")]
    return _chunk_means(frame, steps, frames_per_chunk)


def _chunk_means(frame: list[np.ndarray], steps: list[np.ndarray], frames_per_chunk: int) -> np.ndarray:
    """Per-chunk means of per-frame [N, T, *] and per-step [N, T-1, *] features, concatenated."""
    fv, fm = to_chunks(np.concatenate(frame, axis=-1), frames_per_chunk)
    sv, sm = to_chunks(np.concatenate(steps, axis=-1), frames_per_chunk, first_frame=1)
    return np.concatenate([masked_mean(fv, fm), masked_mean(sv, sm)], axis=-1)


def frechet_by_chunk(features: np.ndarray, reference: np.ndarray) -> list[float]:
    """Fréchet distance of each chunk k of features [N, K, D] to the reference [M, K_ref, D].

    Chunk k is compared with reference chunk k; beyond the reference's length (evaluation extrapolates
    past the training length) with all reference chunks but the first pooled, which is exact for this
    world because its statistics do not change over time after chunk 0.
    """
    kr = reference.shape[1]
    pooled = reference[:, 1:].reshape(-1, reference.shape[2]) if kr > 1 else reference[:, 0]
    out = []
    for k in range(features.shape[1]):
        ref = reference[:, k] if k < kr else pooled
        out.append(frechet_distance(features[:, k], ref))
    return out
