"""Typed configs, presets, YAML + dotted overrides, derived geometry."""

from .errors import ConfigError
from .geometry import VideoGeometry, latent_frames_for, pixel_frames_for, video_geometry
from .loader import apply_overrides, build_config, dump_config, load_config, preset_dict
from .presets import PRESETS, preset_names
from .schema import (
    GenerationConfig,
    ModelConfig,
    PlatformConfig,
    RuntimeConfig,
    ScheduleConfig,
    TextEncoderConfig,
    VAEConfig,
    VideoConfig,
)

__all__ = [
    "PRESETS",
    "ConfigError",
    "GenerationConfig",
    "ModelConfig",
    "PlatformConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "TextEncoderConfig",
    "VAEConfig",
    "VideoConfig",
    "VideoGeometry",
    "apply_overrides",
    "build_config",
    "dump_config",
    "latent_frames_for",
    "load_config",
    "pixel_frames_for",
    "preset_dict",
    "preset_names",
    "video_geometry",
]
