"""Measure a stage: sample the evaluation set, score it with ``evaluate_videos``.

The teacher (and the untrained model, its baseline) are sampled with the Euler sampler + CFG and compared
with real renderer videos; the students are rolled out with the KV cache and compared with the
*teacher's* samples (the distribution they were distilled from), at the training length and extrapolated
to ``extrapolate_frames`` with a rolling cache of ``window_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from selfforcing.config import PlatformConfig
from selfforcing.data.toyworld import DIRECTION_STEPS, Scenes, render, render_every_start
from selfforcing.evaluation import (
    FrechetComparison,
    analyse_videos,
    compare_frechet,
    evaluate_videos,
    fit_frames,
    moving_steps,
    posterior_x0,
)
from selfforcing.models.wan_dit import WanDiT

from .config import EvalBudget
from .teacher import sample_teacher, schedule_of
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


DIAGNOSTIC_TIMESTEPS = (950, 900, 850, 800)


@torch.no_grad()
def denoising_diagnostics(
    model: WanDiT, config: PlatformConfig, data: ToyData, timesteps=DIAGNOSTIC_TIMESTEPS, n: int = 48,
    seed: int = 7,
) -> Metrics:
    """x0 error of the model on noised real videos against the exact denoiser and the per-frame one.

    Errors are mean squared, divided by the latents' variance (predicting the mean scores ~1). At the noise
    levels where a video's start cell is decided (t ~ 800-950 here), ``x0_error`` near ``frame_oracle``
    means the model denoises frames independently (no coherent motion can come out); near ``oracle`` it
    uses the whole clip. See ``selfforcing.evaluation.posterior``.
    """
    batch = data.batch(n, np.random.default_rng(seed))
    modes = data.codec.encode(render_every_start(batch.scenes, data.world.num_frames).reshape(
        -1, data.world.num_frames, data.world.height, data.world.width, 3))
    modes = modes.reshape(n, -1, *modes.shape[1:])
    x0 = batch.latents.cpu()
    var = float(x0.var())
    schedule = schedule_of(config)
    gen = torch.Generator().manual_seed(seed)
    out: Metrics = {}
    for tv in timesteps:
        sigma = tv / config.schedule.num_train_timesteps
        xt = schedule.add_noise(x0, torch.randn(x0.shape, generator=gen), torch.full(x0.shape[:2], float(tv)))
        t = torch.full(x0.shape[:2], float(tv), device=data.device)
        pred = schedule.x0_from_flow(xt, model(xt.to(data.device), t, batch.text).cpu(), t.cpu())
        err = lambda z: float((z.to(torch.float64) - x0).pow(2).mean()) / var  # noqa: E731
        out[f"x0_error_t{tv}"] = err(pred)
        out[f"oracle_x0_error_t{tv}"] = err(posterior_x0(xt, sigma, modes))
        out[f"frame_oracle_x0_error_t{tv}"] = err(posterior_x0(xt, sigma, modes, per_frame=True))
    return out


STILLNESS_TIMESTEPS = (700, 850, 950)


@torch.no_grad()
def stillness_diagnostics(
    model: WanDiT, config: PlatformConfig, data: ToyData, timesteps=STILLNESS_TIMESTEPS, n: int = 48,
    seed: int = 11,
) -> Metrics:
    """Does the denoiser put a standing object, captioned as moving, back into motion?

    Each scene's first frame is repeated for the whole clip, noised to t and denoised once;
    ``still_x0_moving_t*`` is the share of frame steps in which the x0 prediction moves, and
    ``still_oracle_moving_t*`` the same for the exact denoiser, which pulls the clip onto the nearest
    captioned trajectory. A model near 0 where the oracle is near 1 gives DMD's real score no signal
    against the stillness that autoregressive students drift into (docs/results/toyworld.md).
    """
    world = data.world
    batch = data.batch(n, np.random.default_rng(seed))
    still = np.repeat(render(batch.scenes, 1), world.num_frames, axis=1)  # frame 0, held
    x0 = data.codec.encode(still)
    frames = render_every_start(batch.scenes, world.num_frames)  # [n, K, T, H, W, 3]: the captioned clips
    modes = data.codec.encode(frames.reshape(-1, *frames.shape[2:])).reshape(n, -1, *x0.shape[1:])
    schedule = schedule_of(config)
    gen = torch.Generator().manual_seed(seed)

    def moving(latents: torch.Tensor) -> float:
        fit = fit_frames(data.decode(latents), world)
        return float(moving_steps(fit.position, world.grid).mean())

    out: Metrics = {}
    for tv in timesteps:
        t = torch.full(x0.shape[:2], float(tv))
        xt = schedule.add_noise(x0, torch.randn(x0.shape, generator=gen), t)
        pred = schedule.x0_from_flow(xt, model(xt.to(data.device), t.to(data.device), batch.text).cpu(), t)
        out[f"still_x0_moving_t{tv}"] = moving(pred)
        out[f"still_oracle_moving_t{tv}"] = moving(posterior_x0(xt.double(), tv / 1000, modes.double()).float())
    return out


SWAPS = ("opposite", "speed", "axis", "colour")


def swapped_scenes(scenes: Scenes, kind: str) -> Scenes:
    """The same scenes captioned differently in one respect: ``opposite`` direction (same axis), the next
    ``speed``, the ``axis`` turned (left -> up, right -> down, ...), or the next ``colour``."""
    w = scenes.config
    if kind in ("opposite", "axis"):
        steps = [DIRECTION_STEPS[d] for d in w.directions]
        target = {"opposite": lambda r, c: (-r, -c), "axis": lambda r, c: (c, r)}[kind]
        missing = [d for d, st in zip(w.directions, steps, strict=True) if target(*st) not in steps]
        if missing:
            raise ValueError(f"swap {kind!r} needs the {kind} of {missing} among the directions {w.directions}")
        mapping = np.array([steps.index(target(*st)) for st in steps])
        return replace(scenes, direction=mapping[scenes.direction])
    if kind == "speed":
        return replace(scenes, speed=(scenes.speed + 1) % len(w.speeds))
    if kind == "colour":
        return replace(scenes, colour=(scenes.colour + 1) % len(w.colours))
    raise ValueError(f"unknown swap {kind!r}; valid swaps are {list(SWAPS)}")


@torch.no_grad()
def caption_sensitivity(
    model: WanDiT, config: PlatformConfig, data: ToyData, timesteps=(950, 900), n: int = 48, seed: int = 13,
    swaps=SWAPS,
) -> Metrics:
    """Does the model's x0 prediction depend on each part of the caption as much as the exact denoiser's?

    Real videos are noised to t and denoised with their own caption and with a caption changed in one
    respect (``swapped_scenes``). ``swap_<kind>_t<t>`` is the mean squared change of the model's x0
    prediction divided by the latents' variance; ``swap_oracle_<kind>_t<t>`` the same for the exact
    denoiser of each caption (``posterior_x0``). A model that ignores the sign of the move scores
    ``swap_opposite`` near 0 where the oracle's is large; one that ignores the speed, ``swap_speed``.
    """
    world = data.world
    batch = data.batch(n, np.random.default_rng(seed))
    x0 = batch.latents.cpu()
    var = float(x0.var())
    schedule = schedule_of(config)
    gen = torch.Generator().manual_seed(seed)

    def modes(scenes: Scenes) -> torch.Tensor:
        clips = render_every_start(scenes, world.num_frames)  # [n, K, T, H, W, 3]
        return data.codec.encode(clips.reshape(-1, *clips.shape[2:])).reshape(n, -1, *x0.shape[1:]).double()

    variants = {kind: swapped_scenes(batch.scenes, kind) for kind in swaps}
    own_modes = modes(batch.scenes)
    out: Metrics = {}
    for tv in timesteps:
        t = torch.full(x0.shape[:2], float(tv))
        xt = schedule.add_noise(x0, torch.randn(x0.shape, generator=gen), t)

        def predict(text: torch.Tensor, xt=xt, t=t) -> torch.Tensor:
            return schedule.x0_from_flow(xt, model(xt.to(data.device), t.to(data.device), text).cpu(), t)

        own = predict(batch.text)
        own_oracle = posterior_x0(xt.double(), tv / 1000, own_modes)
        for kind, scenes in variants.items():
            other = predict(data.embed(scenes.captions()))
            other_oracle = posterior_x0(xt.double(), tv / 1000, modes(scenes))
            out[f"swap_{kind}_t{tv}"] = float((other - own).double().pow(2).mean()) / var
            out[f"swap_oracle_{kind}_t{tv}"] = float((other_oracle - own_oracle).pow(2).mean()) / var
    return out


def evaluate_teacher(
    model: WanDiT, config: PlatformConfig, data: ToyData, es: EvalSet, diagnostics_n: int = 48,
) -> tuple[Metrics, np.ndarray]:
    """Metrics of Euler + CFG samples against real videos, plus ``denoising_diagnostics``,
    ``stillness_diagnostics`` and ``caption_sensitivity`` (on ``diagnostics_n`` scenes each); also returns
    the samples (uint8)."""
    videos = data.decode(sample_teacher(model, config, data, es.prompts, es.seeds))
    metrics = measure(videos, es.prompts, data, es.real_videos, es.prompts)
    metrics.update(denoising_diagnostics(model, config, data, n=diagnostics_n))
    metrics.update(stillness_diagnostics(model, config, data, n=diagnostics_n))
    metrics.update(caption_sensitivity(model, config, data, n=diagnostics_n))
    return metrics, videos


@torch.no_grad()
def sample_student(
    model: WanDiT, config: PlatformConfig, data: ToyData, prompts: list[str], seeds: list[int],
    num_frames: int, window_frames: int | None = None, batch_size: int = 64,
) -> np.ndarray:
    """uint8 [N, T, H, W, 3] from the few-step AR rollout (KV cache; rolling when ``window_frames``)."""
    # Imported here: the teacher's evaluation (and the GPU teacher script) must not need PyAV, which the
    # inference package's video writer imports.
    from selfforcing.inference import VideoPipeline
    from selfforcing.models.vae import build_vae

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


def compare_students(
    a: np.ndarray, b: np.ndarray, teacher_videos: np.ndarray, data: ToyData, prompts: list[str],
    draws: int = 200,
) -> FrechetComparison:
    """How much closer student A's videos are to the teacher's than B's, with a paired bootstrap over the
    evaluation videos (``selfforcing.evaluation.bootstrap``); a and b may be extrapolated (longer)."""
    k = data.world.frames_per_chunk

    def features(videos: np.ndarray) -> np.ndarray:
        return analyse_videos(videos, prompts, k, data.world).frechet_features(with_captions=True)

    return compare_frechet(features(a), features(b), features(teacher_videos), draws=draws)
