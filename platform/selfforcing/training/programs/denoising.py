"""Flow matching on videos as a step program: the teacher (bidirectional) and the block-causal baselines.

``training.loss``:
- ``flow_matching``: a bidirectional DiT, one shifted-uniform t per video for all its frames (the density
  the shifted Euler sampler visits): the toy world's teacher, or fine-tuning a Wan teacher on latents.
- ``teacher_forcing`` / ``diffusion_forcing``: the block-causal baselines of SPEC section 5 (one target
  chunk with clean context / every chunk at its own noise level), from ``forcing``'s input draws.

A ``caption_dropout`` fraction of the samples train on the negative (empty) prompt, the unconditional
branch classifier-free guidance needs. Every draw of sample i at step k (dropout, t, noise, target chunk)
comes from generators seeded by (seed, k, i), so the loss of a micro-batch is the mean of its samples'
losses whatever the split of the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ...config import PlatformConfig, video_geometry
from ...diffusion.schedule import FlowMatchSchedule
from ...forcing import sample_generators
from ...forcing.diffusion_forcing import per_chunk_timesteps
from ...forcing.teacher_forcing import teacher_forcing_inputs
from ...objectives.denoising import flow_matching_loss
from ..batches import BatchSource, LatentsSource, RandomSource, ToyWorldSource
from ..ema import EMA
from ..local import TrainState
from ..loop import LoopContext, TrainedNetwork
from ..reporting import write_sample_video, write_teacher_video
from ..supervised_config import TeacherJobConfig
from .supervised import SupervisedProgram

NOISE_STREAM = 22  # sample_seed stream of the per-sample draws (caption dropout, t, noise)
METRIC = {"flow_matching": "fm_loss", "teacher_forcing": "tf_loss", "diffusion_forcing": "df_loss"}


def denoising_source(job: TeacherJobConfig) -> BatchSource:
    """Videos (real latents) with their prompts' and negative prompts' embeddings."""
    data, training = job.data, job.training
    frames = video_geometry(job.platform).latent_frames
    if data.source == "random":
        return RandomSource(job.platform, training.batch_size, data.num_prompts, frames, data.seed)
    if data.source == "toyworld":
        return ToyWorldSource(job.platform, frames, data.seed)
    source = LatentsSource(job.platform, data.path, data.embeddings, training.batch_size, data.seed)
    if training.caption_dropout > 0 and not source.has_negative:
        raise ValueError(
            f"training.caption_dropout={training.caption_dropout} trains on the negative prompt, but "
            f"{data.embeddings!r} holds no negative embeddings: encode with encode_negative=true, or set "
            "training.caption_dropout=0"
        )
    return source


def denoising_draws(
    loss: str, x0: torch.Tensor, generators: Sequence[torch.Generator], schedule: FlowMatchSchedule,
    frames_per_chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(t [B, F], noise like x0 [B, F, C, h, w], loss frames [B, F] or None), sample b drawn from its own
    generator in the order its single-sample loss function draws (``teacher_forcing_loss`` /
    ``diffusion_forcing_loss``), so the batch's loss is the mean of the samples' own losses."""
    b, f = x0.shape[:2]
    ts, noises, masks = [], [], []
    for g in generators:
        if loss == "flow_matching":
            u = torch.rand(1, 1, generator=g, dtype=torch.float64)
            ts.append(schedule.timestep(schedule.shift_sigma(u)).float().expand(1, f))
            noises.append(torch.randn((1, *x0.shape[1:]), generator=g))
            continue
        if loss == "teacher_forcing":
            t, mask = teacher_forcing_inputs(1, f, frames_per_chunk, schedule, g)
            masks.append(mask)
        else:
            t = per_chunk_timesteps(1, f, frames_per_chunk, schedule, g)
        ts.append(t)
        noises.append(torch.randn((1, *x0.shape[1:]), generator=g, dtype=torch.float64))
    t, noise = torch.cat(ts), torch.cat(noises).to(x0.device, x0.dtype)
    return t.to(x0.device), noise, (torch.cat(masks).to(x0.device) if masks else None)


class DenoisingProgram(SupervisedProgram):
    """Flow-matching steps of a teacher (or a causal baseline) on a video source."""

    kind = "teacher"

    job: TeacherJobConfig

    def start(self, ctx: LoopContext, net: TrainedNetwork, ema: EMA, state: TrainState) -> None:
        self.source = denoising_source(self.job)
        self.start_steps(ctx, net, ema, state)

    def model_kwargs(self) -> dict:
        """Bidirectional for the teacher; block-causal (the generator's chunking and window) otherwise."""
        if self.job.training.loss == "flow_matching":
            return {}
        p = self.job.platform
        return {"frames_per_chunk": p.video.frames_per_chunk, "window_frames": p.generation.window_frames,
                "sink_frames": p.generation.sink_frames}

    def loss(self, step: int, sample_ids: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.job.training
        batch = self.source.batch(step, sample_ids)
        p = next(self.net.model.parameters())
        x0 = batch.real_latents.to(p.device, p.dtype)
        text = batch.text.to(p.device, p.dtype)
        gens = sample_generators(t.seed, step, sample_ids, NOISE_STREAM)  # dropout first, then the draws
        if t.caption_dropout > 0:
            drop = torch.tensor([float(torch.rand((), generator=g)) < t.caption_dropout for g in gens])
            text = torch.where(drop.to(p.device)[:, None, None], batch.negative_text.to(p.device, p.dtype), text)
        ts, noise, mask = denoising_draws(t.loss, x0, gens, self.schedule, self.job.platform.video.frames_per_chunk)
        loss = flow_matching_loss(self.net.runner, x0, text, ts, noise, self.schedule, frame_mask=mask,
                                  **self.model_kwargs())
        return loss, {METRIC[t.loss]: float(loss.detach())}

    def sample_video(self, model: nn.Module, platform: PlatformConfig, path: Path) -> Path | None:
        batch = self.source.batch(0, [0])
        if self.job.training.loss == "flow_matching":
            return write_teacher_video(model, platform, batch.text, batch.negative_text, path)
        return write_sample_video(model, platform, batch.text, path)
