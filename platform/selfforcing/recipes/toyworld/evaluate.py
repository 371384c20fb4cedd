"""Measure a stage: sample the evaluation set, score it with ``evaluate_videos``.

The teacher (and the untrained model, its baseline) are sampled with the Euler sampler + CFG and compared
with real renderer videos; the students are rolled out with the KV cache and compared with the
*teacher's* samples (the distribution they were distilled from), at the training length and extrapolated
to ``extrapolate_frames`` with a rolling cache of ``window_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from selfforcing.config import PlatformConfig
from selfforcing.evaluation import evaluate_videos
from selfforcing.inference import VideoPipeline
from selfforcing.models.vae import build_vae
from selfforcing.models.wan_dit import WanDiT

from .config import EvalBudget
from .teacher import sample_teacher
from .world import ToyData

Metrics = dict[str, float | int | list | None]


@dataclass
class EvalSet:
    """The prompts and noise seeds every stage is measured on, and real videos of the same captions."""

    prompts: list[str]
    seeds: list[int]
    real_videos: np.ndarray  # uint8 [N, T, H, W, 3]

    @classmethod
    def build(cls, data: ToyData, budget: EvalBudget) -> EvalSet:
        captions = data.captions[: budget.max_captions]
        prompts = [c for c in captions for _ in range(budget.seeds_per_caption)]
        seeds = [budget.seed + i for i in range(len(prompts))]
        return cls(prompts, seeds, data.render_captions(prompts, np.random.default_rng(budget.seed)))


def measure(
    videos: np.ndarray, prompts: list[str], data: ToyData, reference: np.ndarray,
    reference_prompts: list[str], prefix: str = "",
) -> Metrics:
    """evaluate_videos against a reference set (Fréchet features include caption agreement)."""
    m = evaluate_videos(
        videos, prompts, data.world.frames_per_chunk, reference_videos=reference,
        reference_scenes_or_captions=reference_prompts, config=data.world,
    )
    return {f"{prefix}{k}": v for k, v in m.items()}


def evaluate_teacher(
    model: WanDiT, config: PlatformConfig, data: ToyData, es: EvalSet
) -> tuple[Metrics, np.ndarray]:
    """Metrics of Euler + CFG samples against real videos; also returns the samples (uint8)."""
    videos = data.decode(sample_teacher(model, config, data, es.prompts, es.seeds))
    return measure(videos, es.prompts, data, es.real_videos, es.prompts), videos


@torch.no_grad()
def sample_student(
    model: WanDiT, config: PlatformConfig, data: ToyData, prompts: list[str], seeds: list[int],
    num_frames: int, window_frames: int | None = None, batch_size: int = 64,
) -> np.ndarray:
    """uint8 [N, T, H, W, 3] from the few-step AR rollout (KV cache; rolling when ``window_frames``)."""
    pipe = VideoPipeline(config, model, data.encoder, build_vae(config.vae), data.device)
    out = []
    for a in range(0, len(prompts), batch_size):
        p, s = prompts[a : a + batch_size], seeds[a : a + batch_size]
        video = pipe.generate(p, num_frames, s, window_frames=window_frames, decode=False,
                              text_embeddings=data.embed(p))
        out.append(data.decode(video.latents))
    return np.concatenate(out)


def evaluate_student(
    model: WanDiT, config: PlatformConfig, data: ToyData, es: EvalSet, budget: EvalBudget,
    teacher_videos: np.ndarray,
) -> tuple[Metrics, np.ndarray, np.ndarray]:
    """Training-length metrics (vs the teacher's samples), ``extrap_*`` metrics of the long rolling-cache
    rollout, and ``real_frechet_distance`` (vs real videos). Returns (metrics, short, long videos)."""
    short = sample_student(model, config, data, es.prompts, es.seeds, data.world.num_frames)
    long = sample_student(model, config, data, es.prompts, es.seeds, budget.extrapolate_frames,
                          window_frames=budget.window_frames)
    metrics = measure(short, es.prompts, data, teacher_videos, es.prompts)
    metrics.update(measure(long, es.prompts, data, teacher_videos, es.prompts, prefix="extrap_"))
    real = measure(short, es.prompts, data, es.real_videos, es.prompts)
    metrics["real_frechet_distance"] = real["frechet_distance"]
    return metrics, short, long
