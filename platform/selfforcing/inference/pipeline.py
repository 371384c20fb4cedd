"""Streaming text-to-video generation: prompt -> chunks of latents and decoded frames, as they are ready."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import PlatformConfig, video_geometry
from ..config.geometry import VideoGeometry
from ..diffusion.schedule import FlowMatchSchedule
from ..forcing.rollout import NoiseSource, RolloutConfig, rollout
from ..models.factory import build_components, resolve_device
from ..models.kv_cache import KVCachePool
from ..models.wan_dit import WanDiT
from .compiled import CompiledBlocks
from .overlap import BackgroundRollout, ChunkReady, decode_to_host
from .precision import PrecisionMode


@dataclass
class VideoChunk:
    """One streamed chunk: latents [B, k, C, h, w] and its decoded frames uint8 [B, n, H, W, 3]."""

    index: int
    latent_start: int
    latents: torch.Tensor
    frames: np.ndarray | None
    frame_start: int  # index of the chunk's first pixel frame in the video
    seconds: float  # time spent producing this chunk (denoise + cache write + decode)
    elapsed: float  # time since the stream started
    given: bool = False


@dataclass
class GeneratedVideo:
    latents: torch.Tensor  # [B, F, C, h, w]
    frames: np.ndarray | None  # uint8 [B, T, H, W, 3]
    chunk_seconds: list[float]


def frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Decoder output -> uint8 [B, T, H, W, 3]; accepts uint8 already, or float [-1, 1] [B, T, 3, H, W]."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        return frames
    if isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8:
        return frames.cpu().numpy()
    t = torch.as_tensor(frames).float()
    t = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return t.permute(0, 1, 3, 4, 2).cpu().numpy()


class VideoPipeline:
    """A few-step causal generator with its text encoder and VAE, generating chunk by chunk.

    ``stream`` is the primitive: it yields every chunk as soon as it is denoised and decoded, which is
    what makes the first frames reach a viewer long before the video is finished.

    ``config.runtime`` switches are applied to the model here (it belongs to the pipeline from now on):
    ``precision`` (``self.precision``), ``compile`` (``self.compiled``) and ``cudnn_benchmark``.
    """

    def __init__(self, config: PlatformConfig, model: WanDiT, text_encoder, vae, device: torch.device):
        self.config = config
        self.model = model.eval()
        self.text_encoder = text_encoder
        self.vae = vae
        self.device = torch.device(device)
        runtime = config.runtime
        self.precision = PrecisionMode(self.model, runtime.precision)
        self.compiled = CompiledBlocks(self.model, runtime.compile)
        if runtime.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True  # process-wide, as cuDNN's setting is
        self.kv_caches = KVCachePool(max_idle=1)
        self.schedule = FlowMatchSchedule(config.schedule.num_train_timesteps, config.schedule.shift)
        steps = config.schedule.denoising_steps
        if config.schedule.warp_denoising_steps:
            steps = self.schedule.warp_timesteps(steps)
        self.timesteps = steps

    @classmethod
    def from_config(
        cls,
        config: PlatformConfig,
        checkpoint: str | Path | None = None,
        which: str = "generator_ema",
        device: str | None = None,
        text_encoder: bool = True,
    ) -> VideoPipeline:
        """Build every component; ``checkpoint`` replaces the DiT's (random) weights.

        ``text_encoder=False`` builds a generator-only pipeline that takes ``text_embeddings``.
        """
        dev = resolve_device(device or config.runtime.device)
        config, model, encoder, vae = build_components(config, dev, checkpoint, which, text_encoder)
        return cls(config, model, encoder, vae, dev)

    def geometry(self, num_frames: int | None = None) -> VideoGeometry:
        return video_geometry(self.config, num_frames)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        if self.text_encoder is None:
            raise ValueError("this pipeline has no text encoder; pass text_embeddings= to stream()")
        text = self.text_encoder.encode(list(prompts))
        return text.to(device=self.device, dtype=next(self.model.parameters()).dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def overlaps_decode(self) -> bool:
        """Whether ``stream`` decodes chunk i while the DiT denoises chunk i+1 (``generation.overlap_decode``)."""
        mode = self.config.generation.overlap_decode
        return self.device.type == "cuda" if mode == "auto" else mode

    def stream(
        self,
        prompts: str | Sequence[str],
        num_frames: int | None = None,
        seed: int | Sequence[int] = 0,
        *,
        window_frames: int | None = None,
        sink_frames: int | None = None,
        initial_latents: torch.Tensor | None = None,
        decode: bool = True,
        text_embeddings: torch.Tensor | None = None,
    ) -> Iterator[VideoChunk]:
        """Yield ``VideoChunk``s of a video of ``num_frames`` pixel frames (default: the config's).

        ``seed`` is one int (sample i uses seed + i) or one seed per prompt; the same seeds give the same
        video, batched or not. Videos longer than ``window_frames`` latent frames use the rolling cache.
        ``initial_latents`` [B, F0, C, h, w] are written to the cache first (video extension / I2V).
        ``text_embeddings`` [B, L, text_dim] skips the text encoder (a separate encoder service).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        seeds = [seed + i for i in range(len(prompts))] if isinstance(seed, int) else list(seed)
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        geo = self.geometry(num_frames)
        gen = self.config.generation
        window = window_frames if window_frames is not None else gen.window_frames
        sink = sink_frames if sink_frames is not None else gen.sink_frames
        given = 0 if initial_latents is None else initial_latents.shape[1]
        start = time.perf_counter()
        if text_embeddings is None:
            text = self.encode_prompts(prompts)
        else:
            text = text_embeddings.to(device=self.device, dtype=next(self.model.parameters()).dtype)
        spec = dict(batch_size=len(prompts), window_frames=window, sink_frames=sink,
                    max_frames=None if window else given + geo.latent_frames)
        key = tuple(sorted(spec.items()))
        cache = self.kv_caches.lease(key, lambda: self.model.new_kv_cache(**spec))
        decoder = self.vae.streaming_decoder() if decode else None
        chunks = None
        try:
            chunks = rollout(
                self.model, text, geo.num_chunks,
                (self.config.model.in_dim, geo.latent_height, geo.latent_width),
                RolloutConfig(self.timesteps, geo.frames_per_chunk, self.config.schedule.context_noise),
                # Noise drawn on the model's device: no blocking host-to-device copy per denoising step.
                self.schedule, NoiseSource(seeds, device=self.device), cache, initial_latents=initial_latents,
            )
            if self.overlaps_decode():
                chunks = BackgroundRollout(chunks, self.device)
                # A high-priority stream: the decode of chunk i takes SMs first as they free up, so a
                # chunk's frames (the first one's above all) are not slowed by the DiT running ahead.
                side = torch.cuda.Stream(self.device, priority=-1) if self.device.type == "cuda" else None
            else:
                chunks = ((chunk, ChunkReady(None)) for chunk in chunks)
            frame_start = 0
            last = start
            for index, (chunk, ready) in enumerate(chunks):
                frames = None
                if decoder is None:
                    ready.synchronize()
                elif isinstance(chunks, BackgroundRollout):
                    frames = decode_to_host(decoder, chunk.latents.detach(), ready, side).numpy()
                else:
                    with torch.no_grad():
                        frames = frames_to_uint8(decoder.decode_chunk(chunk.latents))
                if not isinstance(chunks, BackgroundRollout):
                    self._sync()
                now = time.perf_counter()
                yield VideoChunk(
                    index=index, latent_start=chunk.start_frame, latents=chunk.latents.detach(),
                    frames=frames, frame_start=frame_start, seconds=now - last, elapsed=now - start,
                    given=chunk.given,
                )
                frame_start += 0 if frames is None else frames.shape[1]
                last = time.perf_counter()
        finally:
            if chunks is not None:
                chunks.close()  # stops and joins the DiT thread before the cache is reused
            self.kv_caches.give_back(key, cache)

    def generate(self, prompts: str | Sequence[str], num_frames: int | None = None, seed=0, **kwargs):
        """Run ``stream`` to the end and concatenate: latents [B, F, ...], frames uint8 [B, T, H, W, 3]."""
        chunks = list(self.stream(prompts, num_frames, seed, **kwargs))
        latents = torch.cat([c.latents for c in chunks], dim=1)
        frames = None
        if chunks and chunks[0].frames is not None:
            frames = np.concatenate([c.frames for c in chunks], axis=1)
        return GeneratedVideo(latents, frames, [c.seconds for c in chunks])
