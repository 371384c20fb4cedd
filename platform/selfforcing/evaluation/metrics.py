"""``evaluate_videos``: every toy-world metric of a batch of decoded videos, as one flat JSON-able dict.

Keys (``*_by_chunk`` lists hold the same measure per chunk index, chunk = ``frames_per_chunk`` frames):
- fidelity, fit_mse: how well the best renderer template explains each frame (higher / lower is better).
- colour_agreement, shape_agreement: fraction of frames whose fitted colour / shape is the caption's.
- direction_agreement, speed_agreement, motion_agreement: fraction of steps (frame t-1 -> t) moving in the
  caption's direction / by the caption's number of cells / by exactly the caption's velocity.
- step_exact, step_wrong_speed, step_opposite, step_other_axis, step_still, step_diagonal: where every step
  went relative to the caption's velocity (``confusion.step_confusion``; they sum to 1): a model that knows
  the axis but not the sign has its misses in ``step_opposite``, one that misses the axis in
  ``step_other_axis``.
- moving_fraction: fraction of steps in which the fitted object moves at all (every real video moves; an
  autoregressive model that copies its context drifts towards 0). It needs no caption.
- trajectory_error: RMS toroidal distance (cells) between fitted positions and the best constant-velocity
  trajectory of the same video; by chunk it shows drift.
- A per-step ``*_by_chunk`` entry is None for a chunk with no step (chunk 0 when frames_per_chunk = 1).
- frechet_distance (+ frechet_by_chunk): only with ``reference_videos``; mean over chunks of the Fréchet
  distance between chunk features of the two sets (see ``frechet.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from selfforcing.data.toyworld.config import ToyWorldConfig
from selfforcing.data.toyworld.scenes import Scenes

from .agreement import Agreement, Targets, as_scenes, caption_agreement
from .chunks import by_chunk
from .confusion import step_confusion
from .fitting import FrameFit, as_unit_float, fit_frames
from .frechet import agreement_features, chunk_features, frechet_by_chunk
from .trajectory import TrajectoryFit, fit_trajectory, moving_steps


@dataclass
class VideoAnalysis:
    """Everything measured on N videos of T frames, per frame / step / video."""

    fit: FrameFit
    trajectory: TrajectoryFit
    agreement: Agreement | None
    features: np.ndarray  # [N, K, D] chunk features for Fréchet distances
    caption_features: np.ndarray | None  # [N, K, 4] chunk agreement features, with targets only

    def frechet_features(self, with_captions: bool) -> np.ndarray:
        """[N, K, D (+4)]: the video features, plus the caption agreements when asked for."""
        if not with_captions:
            return self.features
        if self.caption_features is None:
            raise ValueError("caption features need the videos' captions or scenes")
        return np.concatenate([self.features, self.caption_features], axis=-1)


def analyse_videos(
    videos: np.ndarray | torch.Tensor,
    targets: Targets | None,
    frames_per_chunk: int,
    config: ToyWorldConfig | None = None,
) -> VideoAnalysis:
    """Fit, trajectory, caption agreement (when targets are given) and chunk features of [N, T, H, W, 3]."""
    config = config or ToyWorldConfig()
    if frames_per_chunk <= 0:
        raise ValueError(f"frames_per_chunk={frames_per_chunk} must be > 0")
    x = as_unit_float(videos, config)
    if x.shape[1] < 2:
        raise ValueError(f"videos need at least 2 frames to measure motion; got T={x.shape[1]}")
    fit = fit_frames(x, config)
    agreement = caption_agreement(fit, as_scenes(targets, config)) if targets is not None else None
    return VideoAnalysis(
        fit=fit,
        trajectory=fit_trajectory(fit.position, config.grid),
        agreement=agreement,
        features=chunk_features(x, fit, config, frames_per_chunk),
        caption_features=agreement_features(agreement, frames_per_chunk) if agreement is not None else None,
    )


def _put(out: dict, name: str, values: np.ndarray, frames_per_chunk: int, first_frame: int = 0) -> None:
    out[name] = float(values.mean())
    out[f"{name}_by_chunk"] = by_chunk(values.astype(np.float64), frames_per_chunk, first_frame)


def evaluate_videos(
    videos: np.ndarray | torch.Tensor,
    scenes_or_captions: Scenes | list,
    frames_per_chunk: int,
    reference_videos: np.ndarray | torch.Tensor | None = None,
    reference_scenes_or_captions: Scenes | list | None = None,
    config: ToyWorldConfig | None = None,
) -> dict[str, float | int | list[float | None]]:
    """All metrics of videos [N, T, H, W, 3] (uint8, or float in [-1, 1]) against their captions.

    reference_videos [M, T', H, W, 3] (real videos, or a teacher's samples) adds the Fréchet distance;
    T' may be shorter than T (extrapolation). Giving ``reference_scenes_or_captions`` too adds caption
    agreement to the Fréchet features, so a set that ignores its captions is farther from the reference.
    """
    config = config or ToyWorldConfig()
    use_captions = reference_videos is not None and reference_scenes_or_captions is not None
    a = analyse_videos(videos, scenes_or_captions, frames_per_chunk, config)
    n, t = a.fit.colour.shape
    out: dict[str, float | int | list[float | None]] = {
        "num_videos": n, "num_frames": t, "frames_per_chunk": frames_per_chunk,
    }
    _put(out, "fidelity", a.fit.fidelity, frames_per_chunk)
    _put(out, "fit_mse", a.fit.mse, frames_per_chunk)
    for name in ("colour", "shape"):
        _put(out, f"{name}_agreement", getattr(a.agreement, name), frames_per_chunk)
    for name in ("direction", "speed", "motion"):
        _put(out, f"{name}_agreement", getattr(a.agreement, name), frames_per_chunk, first_frame=1)
    for name, value in step_confusion(a.fit, as_scenes(scenes_or_captions, config)).fractions.items():
        out[f"step_{name}"] = value
    _put(out, "moving_fraction", moving_steps(a.fit.position, config.grid), frames_per_chunk, first_frame=1)
    dist = a.trajectory.distance
    out["trajectory_error"] = float(np.sqrt((dist**2).mean()))
    out["trajectory_error_by_chunk"] = [float(np.sqrt(v)) for v in by_chunk(dist**2, frames_per_chunk)]  # type: ignore[arg-type]
    if reference_videos is not None:
        ref = analyse_videos(
            reference_videos, reference_scenes_or_captions, frames_per_chunk, config
        )
        per_chunk = frechet_by_chunk(a.frechet_features(use_captions), ref.frechet_features(use_captions))
        out["frechet_distance"] = float(np.mean(per_chunk))
        out["frechet_by_chunk"] = per_chunk
    return out
