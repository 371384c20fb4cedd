"""Checkpoint formats <-> our ``WanDiT``: Wan2.1 original directories and Self Forcing releases.

Our parameter names *are* Wan2.1's original names, so the Wan adapter is the identity on keys; the work
here is finding the files, reading the config, and unwrapping training checkpoints (``generator`` /
``generator_ema`` with a ``model.`` prefix).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from ..config.schema import ModelConfig

WAN_CONFIG_FIELDS = (
    "dim", "ffn_dim", "freq_dim", "in_dim", "out_dim", "num_heads", "num_layers", "patch_size",
    "text_len", "text_dim", "eps", "qk_norm", "cross_attn_norm",
)
TRAINING_CHECKPOINT_KEYS = ("generator", "generator_ema")
# Prefixes training wrappers add in front of the model's own keys.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def model_config_from_wan(wan_config: Mapping) -> ModelConfig:
    """ModelConfig from Wan2.1's ``config.json``; rejects model types this DiT does not implement."""
    model_type = wan_config.get("model_type", "t2v")
    if model_type != "t2v":
        raise ValueError(f"model_type={model_type!r} is not supported; only Wan2.1 't2v' models are")
    window = wan_config.get("window_size", (-1, -1))
    if tuple(window) != (-1, -1):
        raise ValueError(f"window_size={window} is not supported; Wan2.1 t2v uses (-1, -1)")
    fields = {k: wan_config[k] for k in WAN_CONFIG_FIELDS if k in wan_config}
    if "patch_size" in fields:
        fields["patch_size"] = tuple(fields["patch_size"])
    return ModelConfig(**fields)


def wan_config_from_model(cfg: ModelConfig) -> dict:
    """The ``config.json`` Wan2.1 would write for this architecture."""
    out = {"_class_name": "WanModel", "model_type": "t2v"}
    out.update(cfg.model_dump(include=set(WAN_CONFIG_FIELDS)))
    out["patch_size"] = list(cfg.patch_size)
    return out


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefix: str = "model.") -> dict:
    """Remove a training prefix (``model.``) and wrapper prefixes from every key that has them."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in (prefix, *_WRAPPER_PREFIXES):
                if p and key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def read_training_checkpoint(path: str | Path, which: str = "generator_ema") -> dict:
    """State dict of ``which`` (``generator`` or ``generator_ema``) from a Self Forcing ``.pt`` file."""
    if which not in TRAINING_CHECKPOINT_KEYS:
        raise ValueError(f"which={which!r}; valid: {list(TRAINING_CHECKPOINT_KEYS)}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if which not in data:
        present = [k for k in TRAINING_CHECKPOINT_KEYS if k in data]
        raise KeyError(f"{path} has no {which!r} entry; it has {present or sorted(data)[:10]}")
    return strip_prefixes(data[which])


def read_safetensors_dir(path: str | Path) -> dict:
    """Merge every ``*.safetensors`` shard of a directory (sharded or single-file)."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {path}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return strip_prefixes(state)


def load_wan_dit(
    path: str | Path,
    which: str = "generator_ema",
    config: ModelConfig | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    attention_backend: str = "auto",
):
    """Build a ``WanDiT`` from a Wan2.1 directory, a ``.safetensors`` file or a Self Forcing ``.pt``.

    The architecture comes from ``config`` or, when omitted, from ``config.json`` in the directory (or
    beside the file). Keys must match exactly (strict loading): a wrong architecture fails here.
    """
    from .wan_dit import WanDiT

    path = Path(path)
    config_dir = path if path.is_dir() else path.parent
    if config is None:
        cfg_file = config_dir / "config.json"
        if not cfg_file.exists():
            raise FileNotFoundError(
                f"no config.json in {config_dir}; pass config=ModelConfig(...) for a bare checkpoint"
            )
        config = model_config_from_wan(json.loads(cfg_file.read_text()))
    if path.is_dir():
        state = read_safetensors_dir(path)
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = strip_prefixes(load_file(str(path)))
    else:
        state = read_training_checkpoint(path, which)
    with torch.device("meta"):
        model = WanDiT(config, attention_backend=attention_backend)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype)


def save_wan_dir(model, path: str | Path, max_shard_bytes: int | None = None) -> Path:
    """Write ``config.json`` + safetensors shards in Wan2.1's layout (loadable by Wan and by us)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(wan_config_from_model(model.config), indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    shards: list[dict] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if max_shard_bytes and size + nbytes > max_shard_bytes and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(path / "diffusion_pytorch_model.safetensors"))
    else:
        for i, shard in enumerate(shards):
            name = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / name))
    return path
