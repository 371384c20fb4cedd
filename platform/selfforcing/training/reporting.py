"""What a training run shows its user: a progress line, and at the end a sample video and a loss plot."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..config import PlatformConfig
from ..models.wan_dit import WanDiT

PROGRESS_KEYS = (
    "dmd_loss", "sid_loss", "gan_g_loss", "critic_loss", "gan_d_loss", "fm_loss", "tf_loss", "df_loss", "ode_loss",
    "generator_grad_norm", "lr",
)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressPrinter:
    """``[job] step 12/600 | dmd_loss 0.012 critic_loss 0.31 | 0.84 steps/s | ETA 0:11:40`` on stdout
    (which Ray forwards to the driver and to ``ray job logs``). Rates count steps done in this process,
    so a resumed run's ETA is right from its first step."""

    def __init__(self, job: str, total_steps: int, start_step: int = 0, stream=None) -> None:
        self.job, self.total, self.first = job, total_steps, start_step
        self.stream = stream or sys.stdout
        self.started = time.perf_counter()

    def line(self, step: int, metrics: Mapping[str, float]) -> str:
        done = step + 1 - self.first
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        shown = " ".join(f"{k} {metrics[k]:.4g}" for k in PROGRESS_KEYS if k in metrics)
        eta = (self.total - step - 1) / rate if rate > 0 else float("inf")
        return f"[{self.job}] step {step + 1}/{self.total} | {shown} | {rate:.3g} steps/s | ETA {_clock(eta)}"

    def show(self, step: int, metrics: Mapping[str, float]) -> None:
        print(self.line(step, metrics), file=self.stream, flush=True)

    def note(self, message: str) -> None:
        print(f"[{self.job}] {message}", file=self.stream, flush=True)


def write_sample_video(
    model: WanDiT, platform: PlatformConfig, text: torch.Tensor, path: str | Path, seed: int = 0,
    num_frames: int | None = None,
) -> Path:
    """Generate one video from prompt embeddings ``text`` [1, L, D] with the pipeline the server uses
    (chunk by chunk, KV cache, the platform's VAE) and write it as MP4."""
    from ..inference import VideoPipeline, write_mp4
    from ..models.vae import build_vae

    device = next(model.parameters()).device
    vae = build_vae(platform.vae, device=device)
    pipe = VideoPipeline(platform, model.eval(), None, vae, device)
    video = pipe.generate([""], num_frames=num_frames, seed=seed, text_embeddings=text)
    return write_mp4(video.frames[0], path, platform.video.fps)


@torch.no_grad()
def write_teacher_video(
    model: WanDiT, platform: PlatformConfig, text: torch.Tensor, negative: torch.Tensor | None, path: str | Path,
    seed: int = 0,
) -> Path:
    """One video of a bidirectional (teacher) model from prompt embeddings ``text`` [1, L, D]: the Euler
    sampler over the whole clip with the preset's teacher steps, shift and guidance, then the VAE."""
    from ..config import video_geometry
    from ..diffusion.samplers import euler_sample
    from ..diffusion.schedule import FlowMatchSchedule
    from ..inference import write_mp4
    from ..models.vae import build_vae

    p = next(model.parameters())
    geo, gen, sched = video_geometry(platform), platform.generation, platform.schedule
    shape = (1, geo.latent_frames, platform.model.in_dim, geo.latent_height, geo.latent_width)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(p.device, p.dtype)
    text = text.to(p.device, p.dtype)
    uncond = None
    if negative is not None and gen.guidance_scale != 1.0:
        neg = negative.to(p.device, p.dtype)
        uncond = lambda x, t: model(x, t, neg)  # noqa: E731
    result = euler_sample(
        lambda x, t: model(x, t, text), noise, gen.teacher_steps,
        FlowMatchSchedule(sched.num_train_timesteps, sched.shift), shift=gen.teacher_shift,
        uncond_denoise=uncond, guidance_scale=gen.guidance_scale if uncond is not None else 1.0,
    )
    vae = build_vae(platform.vae, device=p.device)
    frames = vae.decode_to_uint8(result.sample.float())
    return write_mp4(frames[0].cpu().numpy(), path, platform.video.fps)


def write_loss_plot(history: Sequence[Mapping[str, float]], path: str | Path) -> Path | None:
    """Losses against steps, one panel per loss (None when matplotlib is missing or nothing to plot)."""
    keys = [k for k in PROGRESS_KEYS if k.endswith("_loss") and any(k in h for h in history)]
    if not keys:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(h["step"], h[key]) for h in history if key in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
