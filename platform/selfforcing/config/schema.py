"""Typed, validated configuration for every part of the platform.

Configs are pydantic models with ``extra="forbid"`` so a misspelt YAML key fails loudly instead of being
ignored. Every size lives here or in ``presets.py``; model code only reads these objects.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator


class StrictModel(BaseModel):
    """Base for all configs: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelConfig(StrictModel):
    """Wan2.1 DiT architecture. Field names follow Wan's ``config.json`` so it loads unchanged."""

    dim: int = Field(gt=0, description="hidden size of the transformer")
    ffn_dim: int = Field(gt=0, description="inner size of each block's feed-forward network")
    freq_dim: int = Field(256, gt=0, description="features of the sinusoidal timestep embedding")
    in_dim: int = Field(16, gt=0, description="latent channels in (the VAE's z_dim)")
    out_dim: int = Field(16, gt=0, description="latent channels out")
    num_heads: int = Field(gt=0, description="attention heads; head_dim = dim / num_heads")
    num_layers: int = Field(gt=0, description="number of DiT blocks")
    patch_size: tuple[int, int, int] = Field((1, 2, 2), description="(frames, rows, cols) per token")
    text_len: int = Field(512, gt=0, description="text tokens; prompts are zero-padded to this length")
    text_dim: int = Field(4096, gt=0, description="width of the text encoder's output")
    eps: float = Field(1e-6, gt=0, description="epsilon of every LayerNorm / RMSNorm")
    qk_norm: bool = Field(True, description="RMSNorm on queries and keys")
    cross_attn_norm: bool = Field(True, description="affine LayerNorm before text cross-attention")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base frequency")
    rope_spatial_period: tuple[PositiveInt, PositiveInt] | None = Field(
        None,
        description="(rows, cols) in tokens: make the row / column RoPE frequencies periodic, for worlds that "
        "wrap around (the toy world's torus). Not part of Wan; None = Wan's RoPE",
    )
    rope_time_scale: float = Field(
        1.0, gt=0,
        description="multiplies the frame axis's RoPE angles (1.0 = Wan's, whose fastest pair turns 1 rad per "
        "frame): larger values let one head tell frame t-1 from t and t-2 sharply (the toy world). Not part "
        "of Wan",
    )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.dim % self.num_heads:
            raise ValueError(
                f"dim={self.dim} must be divisible by num_heads={self.num_heads}"
            )
        if self.head_dim % 2 or self.head_dim // 2 < 3:
            raise ValueError(
                f"head_dim={self.head_dim} (dim/num_heads) must be even and >= 6 for 3D RoPE"
            )
        if self.patch_size[0] != 1:
            raise ValueError(
                f"patch_size={self.patch_size}: temporal patch must be 1 for per-frame timesteps"
            )
        return self


class TextEncoderConfig(StrictModel):
    """UMT5 encoder: loaded from a local directory, or built with random weights for tests."""

    kind: Literal["umt5"] = Field("umt5", description="text encoder family")
    path: str | None = Field(None, description="local directory (transformers layout); None = random")
    max_length: int = Field(512, gt=0, description="tokens kept per prompt (Wan: 512)")
    # Sizes used only when ``path`` is None (random-weight encoders for tests and the toy world).
    d_model: int = Field(4096, gt=0, description="width of a randomly initialised encoder")
    num_layers: int = Field(24, gt=0, description="layers of a randomly initialised encoder")
    num_heads: int = Field(64, gt=0, description="heads of a randomly initialised encoder")
    d_ff: int = Field(10240, gt=0, description="feed-forward size of a randomly initialised encoder")
    vocab: list[str] | None = Field(None, description="word vocabulary for a locally built tokenizer")


class VAEConfig(StrictModel):
    """Latent codec. ``wan`` is diffusers' AutoencoderKLWan; ``pixel_unshuffle`` is the toy world's."""

    kind: Literal["wan", "pixel_unshuffle"] = Field("wan", description="codec family")
    path: str | None = Field(None, description="local directory (diffusers layout); None = random")
    z_dim: int = Field(16, gt=0, description="latent channels")
    temporal_compression: int = Field(4, gt=0, description="pixel frames per latent frame (after the first)")
    spatial_compression: int = Field(8, gt=0, description="pixels per latent pixel along each axis")
    latent_scale: float = Field(
        1.0, gt=0,
        description="pixel_unshuffle only: latents = latent_scale * pixel_unshuffle(pixels). Diffusion wants "
        "unit-variance latents (Wan's VAE normalises with its own per-channel mean/std); the toy world's "
        "raw latents have std ~0.2, so its preset sets 5",
    )
    # Sizes used only for a randomly initialised Wan VAE.
    base_dim: int = Field(96, gt=0, description="base width of a randomly initialised Wan VAE")
    dim_mult: list[int] = Field([1, 2, 4, 4], description="width multipliers per resolution level")
    num_res_blocks: int = Field(2, gt=0, description="residual blocks per level")

    @model_validator(mode="after")
    def _check_scale(self) -> VAEConfig:
        if self.kind != "pixel_unshuffle" and self.latent_scale != 1.0:
            raise ValueError(
                f"vae.latent_scale={self.latent_scale} applies only to kind='pixel_unshuffle'; "
                f"kind={self.kind!r} normalises its latents itself (leave latent_scale at 1.0)"
            )
        return self


class VideoConfig(StrictModel):
    """Geometry of generated videos, in pixels and frames."""

    height: int = Field(480, gt=0, description="pixel height")
    width: int = Field(832, gt=0, description="pixel width")
    num_frames: int = Field(81, gt=0, description="pixel frames of a default video")
    frames_per_chunk: int = Field(3, gt=0, description="latent frames generated per AR step (1 = frame-wise)")
    fps: int = Field(16, gt=0, description="frames per second of written videos")


class ScheduleConfig(StrictModel):
    """Flow-matching schedule and the few-step generator's denoising steps."""

    num_train_timesteps: int = Field(1000, gt=0, description="timesteps of the training grid")
    shift: float = Field(5.0, gt=0, description="schedule shift s: sigma' = s*sigma/(1+(s-1)*sigma)")
    denoising_steps: list[float] = Field(
        [1000.0, 750.0, 500.0, 250.0], description="few-step generator's timesteps, descending"
    )
    warp_denoising_steps: bool = Field(True, description="map the steps through the shifted grid")
    context_noise: float = Field(0.0, ge=0, description="timestep of the cache-writing pass (0 = clean)")

    @field_validator("denoising_steps")
    @classmethod
    def _descending(cls, steps: list[float]) -> list[float]:
        if not steps:
            raise ValueError("denoising_steps must hold at least one timestep")
        if any(b >= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"denoising_steps={steps} must be strictly descending")
        if steps[0] > 1000 or steps[-1] <= 0:
            raise ValueError(f"denoising_steps={steps} must lie in (0, 1000]")
        return steps


class GenerationConfig(StrictModel):
    """How inference runs the autoregressive rollout."""

    window_frames: int | None = Field(None, gt=0, description="rolling KV cache size in latent frames (None = full)")
    sink_frames: int = Field(0, ge=0, description="first latent frames kept in the cache forever")
    guidance_scale: float = Field(1.0, ge=0, description="CFG for N-step teacher sampling (1 = off)")
    teacher_steps: int = Field(50, gt=0, description="Euler steps for N-step (teacher) sampling")
    teacher_shift: float = Field(8.0, gt=0, description="schedule shift for N-step teacher sampling")
    negative_prompt: str = Field("", description="unconditional prompt for guidance")
    overlap_decode: bool | Literal["auto"] = Field(
        "auto",
        description="decode chunk i while the DiT denoises chunk i+1 (DiT in a worker thread, VAE on a side "
        "CUDA stream); auto = true on CUDA devices, false on the CPU (both compete for the same cores there)",
    )

    @model_validator(mode="after")
    def _sink_in_window(self) -> GenerationConfig:
        if self.window_frames is not None and self.sink_frames >= self.window_frames:
            raise ValueError(
                f"sink_frames={self.sink_frames} must be < window_frames={self.window_frames}"
            )
        return self


class RuntimeConfig(StrictModel):
    """Where and how tensors are computed."""

    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="parameter dtype")
    attention_backend: Literal["auto", "sdpa", "flash"] = Field(
        "auto", description="attention kernel; auto = flash-attn on CUDA when installed, else SDPA"
    )
    gradient_checkpointing: bool = Field(False, description="recompute block activations in backward")
    compile: Literal["none", "default", "max-autotune-no-cudagraphs"] = Field(
        "none",
        description="torch.compile mode for the DiT blocks at inference ('none' = eager); the KV-cache "
        "reads/writes stay eager, so one compiled graph serves every chunk position; eager if compiling fails",
    )
    precision: Literal["default", "bf16-residual", "fp8"] = Field(
        "default",
        description="inference numerics: default keeps the residual stream in float32; bf16-residual keeps "
        "it in the parameter dtype; fp8 adds float8 (e4m3, row/channel scaled) block matmuls (CUDA sm89+)",
    )
    cudnn_benchmark: bool = Field(
        False, description="let cuDNN autotune convolution kernels (the VAE) for the shapes it meets"
    )


class PlatformConfig(StrictModel):
    """Everything needed to build a generator pipeline: model, codecs, schedule, video, runtime."""

    preset: str | None = Field(None, description="name of the preset this config started from")
    model: ModelConfig
    text_encoder: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    vae: VAEConfig = Field(default_factory=VAEConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _consistent(self) -> PlatformConfig:
        if self.model.text_dim != self.text_encoder.d_model and self.text_encoder.path is None:
            raise ValueError(
                f"model.text_dim={self.model.text_dim} must equal text_encoder.d_model="
                f"{self.text_encoder.d_model} (the encoder's output feeds the model)"
            )
        if self.model.in_dim != self.vae.z_dim:
            raise ValueError(
                f"model.in_dim={self.model.in_dim} must equal vae.z_dim={self.vae.z_dim}"
            )
        if self.text_encoder.max_length > self.model.text_len:
            raise ValueError(
                f"text_encoder.max_length={self.text_encoder.max_length} must be <= "
                f"model.text_len={self.model.text_len}"
            )
        _, ph, pw = self.model.patch_size
        sc = self.vae.spatial_compression
        for axis, size, p in (("height", self.video.height, ph), ("width", self.video.width, pw)):
            if size % (sc * p):
                raise ValueError(
                    f"video.{axis}={size} must be a multiple of vae.spatial_compression*patch "
                    f"= {sc * p}"
                )
        return self
