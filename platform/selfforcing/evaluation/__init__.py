"""Quality metrics for generated videos: the toy world's fit-based measures, per chunk, and Fréchet distances."""

from .agreement import Agreement, as_scenes, caption_agreement
from .bootstrap import FrechetComparison, compare_frechet
from .chunks import by_chunk
from .confusion import STEP_CLASSES, StepConfusion, classify_steps, step_confusion, velocity_confusion
from .fitting import FrameFit, fit_frames
from .frechet import agreement_features, chunk_features, frechet_by_chunk, frechet_distance
from .metrics import VideoAnalysis, analyse_videos, evaluate_videos
from .posterior import posterior_flow, posterior_x0
from .trajectory import TrajectoryFit, displacements, fit_trajectory, moving_steps, wrap

__all__ = [
    "Agreement",
    "FrameFit",
    "FrechetComparison",
    "STEP_CLASSES",
    "StepConfusion",
    "TrajectoryFit",
    "VideoAnalysis",
    "agreement_features",
    "analyse_videos",
    "as_scenes",
    "by_chunk",
    "caption_agreement",
    "chunk_features",
    "classify_steps",
    "compare_frechet",
    "displacements",
    "evaluate_videos",
    "fit_frames",
    "fit_trajectory",
    "frechet_by_chunk",
    "frechet_distance",
    "moving_steps",
    "posterior_flow",
    "posterior_x0",
    "step_confusion",
    "velocity_confusion",
    "wrap",
]
