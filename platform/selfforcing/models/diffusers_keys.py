"""Wan2.1 original DiT keys <-> diffusers ``WanTransformer3DModel`` keys, and diffusers directories.

Our ``WanDiT`` uses Wan's original names; diffusers renames modules (its own conversion lives in
``diffusers.loaders.single_file_utils.convert_wan_transformer_to_diffusers``). The correspondence:

    patch_embedding              patch_embedding
    text_embedding.{0,2}         condition_embedder.text_embedder.linear_{1,2}
    time_embedding.{0,2}         condition_embedder.time_embedder.linear_{1,2}
    time_projection.1            condition_embedder.time_proj
    blocks.N.self_attn.{q,k,v}   blocks.N.attn1.to_{q,k,v}       (cross_attn -> attn2 likewise)
    blocks.N.self_attn.o         blocks.N.attn1.to_out.0
    blocks.N.self_attn.norm_q    blocks.N.attn1.norm_q           (norm_k likewise)
    blocks.N.norm3               blocks.N.norm2                  (the affine cross-attention LayerNorm)
    blocks.N.norm2               blocks.N.norm3                  (the FFN LayerNorm; no parameters)
    blocks.N.ffn.0 / ffn.2       blocks.N.ffn.net.0.proj / ffn.net.2
    blocks.N.modulation          blocks.N.scale_shift_table
    head.head / head.modulation  proj_out / scale_shift_table

Unlike diffusers' substring replacement, the mapping here is an explicit table matched on whole keys, so
it is a bijection and an unknown key fails with its name instead of passing through unrenamed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..config.schema import ModelConfig

# (Wan module path, diffusers module path); "{i}" is a block index.
_MODULE_PAIRS: tuple[tuple[str, str], ...] = (
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
    ("head.modulation", "scale_shift_table"),
    ("blocks.{i}.modulation", "blocks.{i}.scale_shift_table"),
    ("blocks.{i}.norm1", "blocks.{i}.norm1"),
    ("blocks.{i}.norm3", "blocks.{i}.norm2"),
    ("blocks.{i}.norm2", "blocks.{i}.norm3"),
    ("blocks.{i}.ffn.0", "blocks.{i}.ffn.net.0.proj"),
    ("blocks.{i}.ffn.2", "blocks.{i}.ffn.net.2"),
    *(
        (f"blocks.{{i}}.{wan_attn}.{wan}", f"blocks.{{i}}.{dif_attn}.{dif}")
        for wan_attn, dif_attn in (("self_attn", "attn1"), ("cross_attn", "attn2"))
        for wan, dif in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"),
                         ("norm_q", "norm_q"), ("norm_k", "norm_k"))
    ),
)
# Image-conditioning (i2v / flf2v) parameters: recognised so the error can say what they are.
_I2V_MARKERS = ("img_emb", "k_img", "v_img", "norm_k_img", "image_embedder", "add_k_proj", "add_v_proj",
                "norm_added_k")
_SUFFIX = r"((?:\.weight|\.bias)?)"


def _compile(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + _SUFFIX + "$")


_WAN_TO_DIFFUSERS = [(_compile(w), d) for w, d in _MODULE_PAIRS]
_DIFFUSERS_TO_WAN = [(_compile(d), w) for w, d in _MODULE_PAIRS]


def _rename(key: str, rules: list[tuple[re.Pattern, str]], source: str) -> str:
    for pattern, target in rules:
        match = pattern.match(key)
        if match is None:
            continue
        groups = match.groups()
        out = target.replace("{i}", groups[0]) if "{i}" in target else target
        return out + groups[-1]
    if any(marker in key for marker in _I2V_MARKERS):
        raise KeyError(f"{key!r} is an image-conditioning (i2v) parameter; only Wan2.1 t2v DiTs are supported")
    raise KeyError(f"{key!r} is not a known {source} Wan DiT key")


def _convert(state_dict: Mapping[str, torch.Tensor], rules, source: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _rename(key, rules, source)
        if new in out:
            raise KeyError(f"{key!r} maps to {new!r}, which another key already produced")
        out[new] = value
    return out


def wan_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan original / ``WanDiT`` state dict -> ``WanTransformer3DModel`` state dict (same tensors)."""
    return _convert(state_dict, _WAN_TO_DIFFUSERS, "Wan-original")


def diffusers_to_wan(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``WanTransformer3DModel`` state dict -> Wan original / ``WanDiT`` state dict (same tensors)."""
    return _convert(state_dict, _DIFFUSERS_TO_WAN, "diffusers")


# ------------------------------------------------------------------------------------------- configs
def model_config_from_diffusers(config: Mapping, text_len: int = 512) -> ModelConfig:
    """ModelConfig from a diffusers ``WanTransformer3DModel`` ``config.json``.

    diffusers has no ``text_len`` (it attends to whatever length it is given); Wan's is 512. Its
    ``WanAttention`` always applies RMSNorm across heads to q and k whatever ``qk_norm`` says, so any
    accepted value maps to ``qk_norm=True``.
    """
    cls = config.get("_class_name", "WanTransformer3DModel")
    if cls != "WanTransformer3DModel":
        raise ValueError(f"_class_name={cls!r}; expected 'WanTransformer3DModel' (a Wan2.1 DiT)")
    for field in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len"):
        if config.get(field) is not None:
            raise ValueError(f"{field}={config[field]} marks an image-conditioned (i2v) model; only t2v is supported")
    if config.get("qk_norm", "rms_norm_across_heads") not in ("rms_norm_across_heads", None):
        raise ValueError(f"qk_norm={config['qk_norm']!r}; diffusers' Wan only has 'rms_norm_across_heads'")
    heads, head_dim = config.get("num_attention_heads", 40), config.get("attention_head_dim", 128)
    in_dim = config.get("in_channels", 16)
    return ModelConfig(
        dim=heads * head_dim, ffn_dim=config.get("ffn_dim", 13824), freq_dim=config.get("freq_dim", 256),
        in_dim=in_dim, out_dim=config.get("out_channels") or in_dim, num_heads=heads,
        num_layers=config.get("num_layers", 40), patch_size=tuple(config.get("patch_size", (1, 2, 2))),
        text_len=text_len, text_dim=config.get("text_dim", 4096), eps=config.get("eps", 1e-6),
        qk_norm=True, cross_attn_norm=config.get("cross_attn_norm", True),
    )


def diffusers_config_from_model(cfg: ModelConfig) -> dict:
    """Constructor arguments of the ``WanTransformer3DModel`` that computes the same function."""
    if not cfg.qk_norm:
        raise ValueError("qk_norm=False has no diffusers equivalent (its WanAttention always normalises q, k)")
    if cfg.rope_spatial_period is not None:
        raise ValueError("rope_spatial_period is not part of diffusers' Wan; set it to None to export")
    if cfg.rope_time_scale != 1.0:
        raise ValueError(f"rope_time_scale={cfg.rope_time_scale} is not part of diffusers' Wan; set it to 1.0 to export")
    if cfg.rope_theta != 10000.0:
        raise ValueError(f"rope_theta={cfg.rope_theta}; diffusers' Wan RoPE is fixed at 10000")
    return dict(
        patch_size=tuple(cfg.patch_size), num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm,
        qk_norm="rms_norm_across_heads", eps=cfg.eps,
    )


# ----------------------------------------------------------------------------------------- directories
def load_diffusers_dit(
    path: str | Path,
    text_len: int = 512,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    attention_backend: str = "auto",
):
    """Our ``WanDiT`` from a diffusers transformer directory (``config.json`` + safetensors shards).

    Loads strictly: every diffusers key must map to one of ours and every one of ours must be present.
    """
    from .checkpoints import read_safetensors_dir
    from .wan_dit import WanDiT

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"no config.json in {path}; expected a diffusers WanTransformer3DModel directory")
    config = model_config_from_diffusers(json.loads(cfg_file.read_text()), text_len=text_len)
    state = diffusers_to_wan(read_safetensors_dir(path))
    with torch.device("meta"):
        model = WanDiT(config, attention_backend=attention_backend)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype)


def save_diffusers_dit(model, path: str | Path) -> Path:
    """Write our ``WanDiT`` as a diffusers ``WanTransformer3DModel`` directory (single safetensors file)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "WanTransformer3DModel", **diffusers_config_from_model(model.config)}
    config["patch_size"] = list(config["patch_size"])
    (path / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in wan_to_diffusers(model.state_dict()).items()}
    save_file(state, str(path / "diffusion_pytorch_model.safetensors"))
    return path
