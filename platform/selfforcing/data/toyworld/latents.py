"""The toy world's codec: an exact, invertible pixel-unshuffle in place of a VAE.

encode: uint8 [N, T, H, W, 3] (or float in [-1, 1]) -> float32 [N, T, 3 f^2, H/f, W/f], pixels scaled to
[-1, 1] (times ``scale``) then space-to-depth by f. There is no temporal compression: latent frame i is
video frame i. With the grey background most raw values are ~0 and the object's are +-1, so the raw
latents of a one-object world have std ~0.2; diffusion models want unit-variance latents (a std of 0.2
against unit noise is like a 25x lower SNR at every noise level), which is what ``scale`` is for. decode inverts encode exactly in float; ``decode_uint8`` rounds back
to the original bytes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class PixelUnshuffleLatents:
    """A lossless "VAE" for the toy world: ``latent_channels = 3 * factor**2``, spatial compression
    ``factor``, temporal compression 1."""

    temporal_compression = 1

    def __init__(self, factor: int = 2, scale: float = 1.0) -> None:
        if factor <= 0:
            raise ValueError(f"factor={factor} must be a positive integer")
        if scale <= 0:
            raise ValueError(f"scale={scale} must be > 0")
        self.factor = factor
        self.scale = float(scale)

    @property
    def latent_channels(self) -> int:
        return 3 * self.factor**2

    @property
    def spatial_compression(self) -> int:
        return self.factor

    def encode(self, videos: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[N, T, H, W, 3] uint8 (0..255) or float (-1..1) -> float32 [N, T, C, H/f, W/f]."""
        x = torch.as_tensor(videos)
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"videos must have shape [N, T, H, W, 3]; got {tuple(x.shape)}")
        n, t, h, w, _ = x.shape
        if h % self.factor or w % self.factor:
            raise ValueError(f"frame size {h}x{w} must be divisible by factor={self.factor}")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 127.5 - 1.0
        else:
            x = x.to(torch.float32)
        x = x.reshape(n * t, h, w, 3).permute(0, 3, 1, 2)
        z = F.pixel_unshuffle(x, self.factor) * self.scale
        return z.reshape(n, t, *z.shape[1:]).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """float [N, T, C, h, w] -> float32 [N, T, h f, w f, 3] in [-1, 1] (not clamped)."""
        z = torch.as_tensor(latents)
        if z.ndim != 5 or z.shape[2] != self.latent_channels:
            raise ValueError(
                f"latents must have shape [N, T, {self.latent_channels}, h, w]; got {tuple(z.shape)}"
            )
        n, t = z.shape[:2]
        x = F.pixel_shuffle(z.reshape(n * t, *z.shape[2:]).to(torch.float32) / self.scale, self.factor)
        return x.permute(0, 2, 3, 1).reshape(n, t, *x.shape[2:], 3).contiguous()

    def decode_uint8(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 [N, T, H, W, 3]: ``decode`` rounded and clamped to bytes."""
        return to_uint8(self.decode(latents))


def to_uint8(videos: torch.Tensor | np.ndarray) -> np.ndarray:
    """float videos in [-1, 1] -> uint8 numpy (rounded, clamped); uint8 input passes through."""
    x = torch.as_tensor(videos)
    if x.dtype == torch.uint8:
        return x.numpy()
    return ((x.to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
