"""The generator and text-encoder runners: plain classes that Serve replicas wrap.

The text encoder lives in its own deployment (one large UMT5 shared by many generator replicas), so the
generator runner builds a ``VideoPipeline`` without one and takes precomputed embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..inference.pipeline import VideoPipeline
from .model_source import LoadedSource
from .validation import ModelInfo


def build_generator_pipeline(loaded: LoadedSource, device: str | None = None) -> VideoPipeline:
    """DiT + VAE from the source, no text encoder (``stream(text_embeddings=...)`` supplies the text)."""
    return VideoPipeline.from_config(
        loaded.config, checkpoint=loaded.checkpoint, which=loaded.which, device=device, text_encoder=False
    )


def model_info(loaded: LoadedSource) -> ModelInfo:
    cfg = loaded.config
    return ModelInfo(
        id=loaded.model_id, source=loaded.source, created=loaded.created, width=cfg.video.width,
        height=cfg.video.height, fps=cfg.video.fps, default_num_frames=cfg.video.num_frames,
        frames_per_chunk=cfg.video.frames_per_chunk, temporal_compression=cfg.vae.temporal_compression,
        preset=cfg.preset, registry=loaded.registry,
    )


class TextEncoderRunner:
    """Prompts -> embeddings float32 [B, text_len, text_dim] as numpy (cheap to ship between replicas)."""

    def __init__(self, loaded: LoadedSource, device: str | None = None) -> None:
        from ..models.factory import resolve_device
        from ..models.text_encoder import TextEncoder

        dev = resolve_device(device or loaded.config.runtime.device)
        self.encoder = TextEncoder.from_config(loaded.config.text_encoder, device=dev, dtype=torch.float32)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(prompts)).float().cpu().numpy()


