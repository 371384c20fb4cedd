"""Derived sizes: pixel frames <-> latent frames <-> chunks <-> tokens. Nothing here is a constant."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import PlatformConfig


@dataclass(frozen=True)
class VideoGeometry:
    """Sizes of one video in pixels, latents and tokens, computed from a config."""

    pixel_frames: int
    latent_frames: int
    latent_height: int
    latent_width: int
    frames_per_chunk: int
    tokens_per_frame: int

    @property
    def num_chunks(self) -> int:
        return self.latent_frames // self.frames_per_chunk


def latent_frames_for(pixel_frames: int, temporal_compression: int) -> int | None:
    """Latent frames of a causal video VAE (first frame alone, then groups), or None if not exact."""
    if pixel_frames < 1 or (pixel_frames - 1) % temporal_compression:
        return None
    return 1 + (pixel_frames - 1) // temporal_compression


def pixel_frames_for(latent_frames: int, temporal_compression: int) -> int:
    return 1 + (latent_frames - 1) * temporal_compression


def valid_pixel_frame_counts_near(
    pixel_frames: int, temporal_compression: int, frames_per_chunk: int, count: int = 2
) -> list[int]:
    """The valid pixel-frame counts closest to ``pixel_frames`` (for error messages)."""
    step_latent = frames_per_chunk
    valid = [
        pixel_frames_for(k * step_latent, temporal_compression)
        for k in range(1, max(2, 2 * pixel_frames // max(1, temporal_compression * step_latent) + 3))
    ]
    return sorted(sorted(valid, key=lambda v: (abs(v - pixel_frames), v))[:count])


def video_geometry(config: PlatformConfig, pixel_frames: int | None = None) -> VideoGeometry:
    """Sizes of a video of ``pixel_frames`` frames (default: the config's); clear error if invalid."""
    pixel_frames = config.video.num_frames if pixel_frames is None else pixel_frames
    tc = config.vae.temporal_compression
    fpc = config.video.frames_per_chunk
    latent = latent_frames_for(pixel_frames, tc)
    if latent is None or latent % fpc:
        near = valid_pixel_frame_counts_near(pixel_frames, tc, fpc)
        raise ValueError(
            f"num_frames={pixel_frames} does not fit the chunking: it must be 1 + {tc}*k with k+1 "
            f"latent frames a multiple of frames_per_chunk={fpc}; nearest valid counts: {near}"
        )
    sc = config.vae.spatial_compression
    _, ph, pw = config.model.patch_size
    lh, lw = config.video.height // sc, config.video.width // sc
    return VideoGeometry(
        pixel_frames=pixel_frames,
        latent_frames=latent,
        latent_height=lh,
        latent_width=lw,
        frames_per_chunk=fpc,
        tokens_per_frame=(lh // ph) * (lw // pw),
    )
