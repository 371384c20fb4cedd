"""Wan DiT (bidirectional and block-causal), KV caches, attention, RoPE, checkpoints, encoders."""

from .attention import AttentionPattern, attention, chunked_attention, resolve_backend
from .checkpoints import load_wan_dit, model_config_from_wan, save_wan_dir, wan_config_from_model
from .kv_cache import CacheStep, KVCache
from .wan_dit import WanDiT

__all__ = [
    "AttentionPattern",
    "CacheStep",
    "KVCache",
    "WanDiT",
    "attention",
    "chunked_attention",
    "load_wan_dit",
    "model_config_from_wan",
    "resolve_backend",
    "save_wan_dir",
    "wan_config_from_model",
]
