"""Video codecs between pixels and the DiT's latents, with a streaming (chunk-by-chunk) decoder.

Layouts (the same for every codec):
- pixels in:  float [B, T, 3, H, W] in [-1, 1] (``uint8_to_pixels`` converts uint8 [B, T, H, W, 3]);
- latents:    float [B, F, C, h, w], normalised (what the DiT sees);
- pixels out: float [B, T, 3, H, W] in [-1, 1] from ``decode`` / ``decode_chunk``, or uint8
  [B, T, H, W, 3] from ``decode_to_uint8`` (what the video writer wants).

``WanVAE`` wraps diffusers' ``AutoencoderKLWan`` (causal 3D VAE: the first latent frame is one pixel
frame, each later one ``temporal_compression`` frames). ``PixelUnshuffleVAE`` is the toy world's exact,
invertible space-to-depth codec. Both are frozen: nothing trains through them, so they run without grad.
"""

from __future__ import annotations

import copy
import inspect
import math
import types
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import VAEConfig


def pixels_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """float [B, T, 3, H, W] in [-1, 1] -> uint8 [B, T, H, W, 3] (clamped, rounded)."""
    x = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 1, 3, 4, 2).contiguous()


def uint8_to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float32 [B, T, 3, H, W] in [-1, 1]."""
    if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [B, T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    return (frames.float() / 127.5 - 1.0).permute(0, 1, 4, 2, 3).contiguous()


class StreamingDecoder(ABC):
    """Decodes a latent video chunk by chunk, carrying whatever causal state the codec needs, so that the
    concatenated chunks equal a whole-video ``decode``. One instance per video (and per batch)."""

    @abstractmethod
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, k, C, h, w] (the next k latent frames) -> pixels [B, t, 3, H, W] in [-1, 1]."""

    def decode_chunk_to_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        """``decode_chunk`` as uint8 [B, t, H, W, 3]."""
        return pixels_to_uint8(self.decode_chunk(latents))

    def reset(self) -> None:  # noqa: B027 - stateless decoders have nothing to reset
        """Forget the causal state: the next chunk is decoded as the start of a new video."""

    def batch_key(self) -> Hashable | None:
        """Decoders with equal keys may decode their rows in one ``decode_many`` call; None: alone."""
        return None

    @classmethod
    def decode_many(cls, decoders: Sequence[StreamingDecoder], latents: torch.Tensor) -> torch.Tensor:
        """Row i of ``latents`` [B, k, C, h, w] decoded by ``decoders[i]`` (all of one ``batch_key``) ->
        pixels [B, t, 3, H, W]; each decoder's state afterwards is what decoding its row alone leaves.
        Serving many streams is dominated by the VAE on small models, hence one call, not B."""
        return torch.cat([d.decode_chunk(latents[i : i + 1]) for i, d in enumerate(decoders)])


class VideoVAE(nn.Module, ABC):
    """Pixel video <-> normalised latents. Subclasses set the three compression/width attributes."""

    z_dim: int
    temporal_compression: int
    spatial_compression: int

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, T, 3, H, W] in [-1, 1] -> latents [B, F, z_dim, H/s, W/s]."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, F, z_dim, h, w] -> pixels [B, T, 3, h*s, w*s] in [-1, 1]."""

    @abstractmethod
    def streaming_decoder(self) -> StreamingDecoder:
        """A fresh decoder for one video, fed chunk by chunk."""

    def decode_to_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, F, C, h, w] -> uint8 frames [B, T, H, W, 3]."""
        return pixels_to_uint8(self.decode(latents))

    def num_pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from ``latent_frames`` (causal: 1 + (F - 1) * temporal_compression)."""
        return 1 + (latent_frames - 1) * self.temporal_compression

    def num_latent_frames(self, pixel_frames: int) -> int:
        """Latent frames for ``pixel_frames``; they must be 1 + k * temporal_compression."""
        tc = self.temporal_compression
        if pixel_frames < 1 or (pixel_frames - 1) % tc:
            raise ValueError(f"pixel frames={pixel_frames} must be 1 + k*{tc} (k >= 0) for this VAE")
        return 1 + (pixel_frames - 1) // tc

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        s = self.spatial_compression
        if pixels.ndim != 5 or pixels.shape[2] != 3 or pixels.shape[3] % s or pixels.shape[4] % s:
            raise ValueError(
                f"pixels must be float [B, T, 3, H, W] with H, W multiples of {s}, got {tuple(pixels.shape)}"
            )
        if not pixels.is_floating_point():
            raise ValueError(f"pixels must be float in [-1, 1], got {pixels.dtype}; see uint8_to_pixels")
        self.num_latent_frames(pixels.shape[1])

    def _check_latents(self, latents: torch.Tensor) -> None:
        if latents.ndim != 5 or latents.shape[2] != self.z_dim:
            raise ValueError(f"latents must be [B, F, {self.z_dim}, h, w], got {tuple(latents.shape)}")


# --------------------------------------------------------------------------------------------- Wan VAE
def _wan_vae_class():
    try:
        from diffusers import AutoencoderKLWan
    except ImportError as err:  # pragma: no cover - diffusers is a dependency
        raise ImportError("the 'wan' VAE needs diffusers >= 0.33 (AutoencoderKLWan)") from err
    return AutoencoderKLWan


def random_wan_vae(cfg: VAEConfig, seed: int = 0) -> nn.Module:
    """An ``AutoencoderKLWan`` of the config's sizes with seeded random weights.

    ``dim_mult`` has one entry per resolution level, so spatial compression is 2^(levels - 1); the
    temporal downsamplings are the last log2(temporal_compression) levels, as in Wan ([False, True, True]).
    The latent normalisation is the identity (mean 0, std 1): random weights have no statistics.
    """
    levels = len(cfg.dim_mult) - 1
    if cfg.spatial_compression != 2**levels:
        raise ValueError(
            f"vae.spatial_compression={cfg.spatial_compression} must be 2^(len(dim_mult)-1) = {2**levels} "
            f"for dim_mult={cfg.dim_mult}"
        )
    n_temporal = int(math.log2(cfg.temporal_compression))
    if 2**n_temporal != cfg.temporal_compression or n_temporal > levels:
        raise ValueError(
            f"vae.temporal_compression={cfg.temporal_compression} must be a power of two <= {2**levels}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _wan_vae_class()(
            base_dim=cfg.base_dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult),
            num_res_blocks=cfg.num_res_blocks, temperal_downsample=[False] * (levels - n_temporal)
            + [True] * n_temporal, latents_mean=[0.0] * cfg.z_dim, latents_std=[1.0] * cfg.z_dim,
            scale_factor_temporal=cfg.temporal_compression, scale_factor_spatial=cfg.spatial_compression,
        )


def _fast_rms_norm(self, x: torch.Tensor) -> torch.Tensor:
    """diffusers' ``WanRMS_norm.forward`` with the L2 norm written out: ``F.normalize`` over the channel
    dim of a [B, C, T, H, W] tensor takes a slow strided path on CPU (~20x slower, ~40% of a decode)."""
    y = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    dim = 1 if self.channel_first else -1
    normalized = (y / y.square().sum(dim, keepdim=True).sqrt().clamp_min(1e-12)).to(x.dtype)
    return normalized * self.scale * self.gamma + self.bias


def _write_out_rms_norms(model: nn.Module) -> int:
    """Use ``_fast_rms_norm`` in every Wan VAE RMS norm (same result up to float rounding, ~1e-7)."""
    count = 0
    for m in model.modules():
        if type(m).__name__ == "WanRMS_norm" and all(hasattr(m, a) for a in ("channel_first", "scale", "gamma")):
            m.forward = types.MethodType(_fast_rms_norm, m)
            count += 1
    return count


class WanVAE(VideoVAE):
    """Wan2.1's causal 3D VAE (diffusers ``AutoencoderKLWan``) with Wan's latent normalisation.

    encode: z = (mu - latents_mean) / latents_std, mu the posterior mean (Wan and Self Forcing use the
    mean, no sampling); decode inverts it. Mean and std are per channel, from the VAE's config.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        cfg = model.config
        self.z_dim = int(cfg.z_dim)
        self.temporal_compression = 2 ** sum(bool(t) for t in cfg.temperal_downsample)
        self.spatial_compression = 2 ** (len(cfg.dim_mult) - 1) * (cfg.get("patch_size") or 1)
        for name in ("latents_mean", "latents_std"):
            values = cfg.get(name)
            if values is None or len(values) != self.z_dim:
                raise ValueError(f"VAE config {name}={values} must list z_dim={self.z_dim} values")
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32), persistent=False)
        _write_out_rms_norms(self.model)

    @classmethod
    def from_config(
        cls, cfg: VAEConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
    ) -> WanVAE:
        """Load ``cfg.path`` (diffusers layout, local files only) or build a seeded random VAE."""
        if cfg.path is not None:
            if not Path(cfg.path).is_dir():
                raise FileNotFoundError(f"vae.path={cfg.path!r} is not a local directory")
            model = _wan_vae_class().from_pretrained(cfg.path, local_files_only=True)
        else:
            model = random_wan_vae(cfg, seed)
        vae = cls(model)
        for name in ("z_dim", "temporal_compression", "spatial_compression"):
            if getattr(vae, name) != getattr(cfg, name):
                raise ValueError(
                    f"vae.{name}={getattr(cfg, name)} but the VAE ({cfg.path or 'random'}) has {getattr(vae, name)}"
                )
        return vae.to(device=device, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, 1, self.z_dim, 1, 1)  # broadcast over [B, F, C, h, w]
        return self.latents_mean.view(shape).to(like), self.latents_std.view(shape).to(like)

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(mu)
        return (mu - mean) / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latents)
        return latents * std + mean

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, T, 3, H, W] in [-1, 1], T = 1 + 4k -> latents [B, 1 + k, z_dim, H/8, W/8] (float32)."""
        self._check_pixels(pixels)
        x = pixels.transpose(1, 2).to(self.dtype)  # diffusers wants [B, 3, T, H, W]
        mu = self.model.encode(x).latent_dist.mode()
        return self.normalize(mu.transpose(1, 2).float())

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, F, z_dim, h, w] -> pixels [B, 1 + 4(F - 1), 3, 8h, 8w] in [-1, 1] (float32)."""
        self._check_latents(latents)
        z = self.denormalize(latents.float()).transpose(1, 2).to(self.dtype)
        return self.model.decode(z).sample.transpose(1, 2).float()

    def streaming_decoder(self) -> StreamingDecoder:
        return WanStreamingDecoder(self)


class WanStreamingDecoder(StreamingDecoder):
    """Chunk-by-chunk decoding with diffusers' causal feature cache kept between chunks.

    ``AutoencoderKLWan._decode`` runs ``post_quant_conv`` (temporal kernel 1, so chunkable) and then the
    decoder one latent frame at a time, passing a list of cached activations (the last frames each causal
    conv saw) and ``first_chunk=True`` for frame 0. This class owns such a list, so successive
    ``decode_chunk`` calls continue the same video, and decoding in chunks equals decoding it whole. The
    cache lives here, not in the shared module, so several videos can stream from one VAE.
    """

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae
        model = vae.model
        decoder = getattr(model, "decoder", None)
        conv_cls = getattr(inspect.getmodule(type(model)), "WanCausalConv3d", None)
        params = inspect.signature(decoder.forward).parameters if decoder is not None else {}
        missing = [p for p in ("feat_cache", "feat_idx", "first_chunk") if p not in params]
        if decoder is None or conv_cls is None or missing or not hasattr(model, "post_quant_conv"):
            raise RuntimeError(
                "streaming decode relies on diffusers' AutoencoderKLWan internals (decoder.forward(x, "
                "feat_cache, feat_idx, first_chunk), post_quant_conv, WanCausalConv3d); this diffusers "
                f"version lacks {missing or 'one of them'}. Tested with diffusers 0.33-0.42."
            )
        if model.post_quant_conv.kernel_size[0] != 1:
            raise RuntimeError("post_quant_conv has a temporal kernel > 1; it cannot be applied per chunk")
        self._num_convs = sum(isinstance(m, conv_cls) for m in decoder.modules())
        self.reset()

    def reset(self) -> None:
        self._cache: list = [None] * self._num_convs
        self._first = True
        self._batch: int | None = None

    def batch_key(self) -> Hashable:
        """Same VAE, same phase (first chunk or not) and same cached activation shapes."""
        shapes = tuple(tuple(c.shape[1:]) if torch.is_tensor(c) else repr(c) for c in self._cache)
        return (id(self.vae), self._first, shapes)

    @classmethod
    def decode_many(cls, decoders: Sequence[StreamingDecoder], latents: torch.Tensor) -> torch.Tensor:
        """Concatenate the rows' causal caches, decode once, split the caches back (convolutions and
        norms act per sample, so each row gets exactly its solo result)."""
        if len(decoders) == 1:
            return decoders[0].decode_chunk(latents)
        merged = copy.copy(decoders[0])
        merged._cache = [
            torch.cat([d._cache[i] for d in decoders]) if torch.is_tensor(c) else c
            for i, c in enumerate(decoders[0]._cache)
        ]
        merged._batch = None
        out = merged.decode_chunk(latents)
        for j, d in enumerate(decoders):
            d._cache = [c[j : j + 1] if torch.is_tensor(c) else c for c in merged._cache]
            d._first, d._batch = merged._first, 1
        return out

    @torch.no_grad()
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, k, z_dim, h, w] -> pixels [B, t, 3, 8h, 8w] in [-1, 1] (float32), where
        t = 4k, or 1 + 4(k - 1) for the video's first chunk."""
        vae, model = self.vae, self.vae.model
        vae._check_latents(latents)
        if self._batch is not None and latents.shape[0] != self._batch:
            raise ValueError(f"batch changed mid-video: {self._batch} -> {latents.shape[0]}; call reset()")
        self._batch = latents.shape[0]
        z = vae.denormalize(latents.float()).transpose(1, 2).to(vae.dtype)
        x = model.post_quant_conv(z)
        frames = []
        for i in range(x.shape[2]):
            frames.append(
                model.decoder(x[:, :, i : i + 1], feat_cache=self._cache, feat_idx=[0], first_chunk=self._first)
            )
            self._first = False
        out = torch.cat(frames, dim=2)
        patch = model.config.get("patch_size")
        if patch is not None:
            out = inspect.getmodule(type(model)).unpatchify(out, patch_size=patch)
        return out.clamp(-1.0, 1.0).transpose(1, 2).float()


# ------------------------------------------------------------------------------------ pixel unshuffle
class PixelUnshuffleVAE(VideoVAE):
    """The toy world's codec: exact space-to-depth by ``spatial_compression`` f, no temporal compression.

    latents = scale * pixel_unshuffle(pixels) with ``z_dim = 3 f^2`` channels; decode is pixel_shuffle of
    latents / scale, so encode/decode round-trip exactly. Frame i of the latents is frame i of the video.
    """

    def __init__(self, factor: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale={scale} must be > 0")
        self.scale = float(scale)
        self.spatial_compression = factor
        self.temporal_compression = 1
        self.z_dim = 3 * factor**2
        self.register_buffer("_anchor", torch.zeros(0, dtype=dtype), persistent=False)  # device/dtype

    @classmethod
    def from_config(
        cls, cfg: VAEConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> PixelUnshuffleVAE:
        f = cfg.spatial_compression
        if cfg.z_dim != 3 * f * f:
            raise ValueError(
                f"vae.z_dim={cfg.z_dim} must be 3 * spatial_compression^2 = {3 * f * f} for pixel_unshuffle"
            )
        if cfg.temporal_compression != 1:
            raise ValueError(
                f"vae.temporal_compression={cfg.temporal_compression} must be 1 for pixel_unshuffle "
                "(one latent frame per pixel frame)"
            )
        return cls(f, dtype, cfg.latent_scale).to(device)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, T, 3, H, W] in [-1, 1] -> latents [B, T, 3 f^2, H/f, W/f]."""
        self._check_pixels(pixels)
        x = pixels.to(self._anchor.dtype)
        z = F.pixel_unshuffle(x.flatten(0, 1), self.spatial_compression).unflatten(0, x.shape[:2])
        return z * self.scale if self.scale != 1.0 else z

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, T, 3 f^2, h, w] -> pixels [B, T, 3, h f, w f] (exact inverse, not clamped)."""
        self._check_latents(latents)
        z = latents / self.scale if self.scale != 1.0 else latents
        return F.pixel_shuffle(z.flatten(0, 1), self.spatial_compression).unflatten(0, latents.shape[:2])

    def streaming_decoder(self) -> StreamingDecoder:
        return _StatelessDecoder(self)


class _StatelessDecoder(StreamingDecoder):
    """Frame-independent codecs stream trivially: each chunk decodes on its own."""

    def __init__(self, vae: VideoVAE) -> None:
        self.vae = vae

    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)

    def batch_key(self) -> Hashable:
        return ("stateless", id(self.vae))

    @classmethod
    def decode_many(cls, decoders: Sequence[StreamingDecoder], latents: torch.Tensor) -> torch.Tensor:
        return decoders[0].decode_chunk(latents)


# ------------------------------------------------------------------------------------------- registry
VAE_REGISTRY = {"wan": WanVAE, "pixel_unshuffle": PixelUnshuffleVAE}


def build_vae(cfg: VAEConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> VideoVAE:
    """The codec ``cfg.kind`` names, on ``device`` in ``dtype``."""
    kind = cfg.kind
    if kind not in VAE_REGISTRY:
        raise ValueError(f"vae.kind={kind!r} is not a known VAE; valid kinds: {sorted(VAE_REGISTRY)}")
    return VAE_REGISTRY[kind].from_config(cfg, device=device, dtype=dtype)
