"""Build the models a config describes: the DiT (random or from a checkpoint), text encoder and VAE."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import PlatformConfig, dump_config, load_config
from .checkpoints import load_wan_dit, model_config_from_wan, save_wan_dir
from .wan_dit import WanDiT

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_dit(config: PlatformConfig, device: torch.device | str = "cpu", seed: int = 0) -> WanDiT:
    """A randomly initialised DiT, deterministic for ``seed`` (same weights in every process)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WanDiT(config.model, attention_backend=config.runtime.attention_backend)
    model.enable_gradient_checkpointing(config.runtime.gradient_checkpointing)
    return model.to(device=device, dtype=DTYPES[config.runtime.dtype])


PLATFORM_CONFIG_FILE = "selfforcing.yaml"


def save_generator(config: PlatformConfig, model: WanDiT, path: str | Path) -> Path:
    """A self-describing generator directory: Wan2.1 layout (config.json + safetensors) plus the full
    platform config (text encoder, VAE, schedule, video) so it can be served without other inputs."""
    path = save_wan_dir(model, path)
    (path / PLATFORM_CONFIG_FILE).write_text(dump_config(config))
    return path


def checkpoint_model_config(path: str | Path, config: PlatformConfig) -> PlatformConfig:
    """The config a checkpoint describes, keeping the caller's ``runtime`` (device, dtype).

    A directory written by ``save_generator`` carries its whole platform config; a plain Wan2.1
    directory only its ``config.json``, which replaces the ``model`` section.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / PLATFORM_CONFIG_FILE).exists():
        saved = load_config(yaml_path=folder / PLATFORM_CONFIG_FILE)
        return saved.model_copy(update={"runtime": config.runtime})
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        return config
    model = model_config_from_wan(json.loads(cfg_file.read_text()))
    return config.model_copy(update={"model": model})


def load_dit(
    config: PlatformConfig, path: str | Path, which: str = "generator_ema", device: torch.device | str = "cpu"
) -> WanDiT:
    model = load_wan_dit(
        path, which=which, config=config.model, dtype=DTYPES[config.runtime.dtype], device=device,
        attention_backend=config.runtime.attention_backend,
    )
    model.enable_gradient_checkpointing(config.runtime.gradient_checkpointing)
    return model


def build_components(
    config: PlatformConfig,
    device: torch.device,
    checkpoint: str | Path | None = None,
    which: str = "generator_ema",
    text_encoder: bool = True,
):
    """(config, dit, text_encoder, vae) for generation; the config's model follows the checkpoint's.

    ``text_encoder=False`` skips the encoder (None in its place): generator replicas receive prompt
    embeddings from a separate encoder service and should not hold a multi-GB UMT5 of their own.
    """
    from .text_encoder import TextEncoder
    from .vae import build_vae

    dtype = DTYPES[config.runtime.dtype]
    if checkpoint is not None:
        config = checkpoint_model_config(checkpoint, config)
        model = load_dit(config, checkpoint, which, device)
    else:
        model = build_dit(config, device)
    encoder = (
        TextEncoder.from_config(config.text_encoder, device=device, dtype=torch.float32) if text_encoder else None
    )
    vae = build_vae(config.vae, device=device, dtype=torch.float32 if device.type == "cpu" else dtype)
    return config, model, encoder, vae
