"""Build a ``PlatformConfig`` from a preset, a YAML file and dotted CLI overrides, in that order."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError, config_error_from
from .presets import PRESETS
from .schema import PlatformConfig


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins, nested mappings merge key by key."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.num_layers=4"`` -> (["model", "num_layers"], 4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like 'section.field=value'")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {text!r} has an empty field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return out


def preset_dict(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
    return {"preset": name, **copy.deepcopy(PRESETS[name])}


def build_config(data: Mapping[str, Any]) -> PlatformConfig:
    try:
        return PlatformConfig.model_validate(dict(data))
    except ValidationError as err:
        raise config_error_from(err) from None


def load_config(
    preset: str | None = None,
    yaml_path: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> PlatformConfig:
    """Preset, then YAML (which may name its own ``preset:``), then ``overrides``, then validation."""
    data: dict[str, Any] = {}
    file_data: dict[str, Any] = {}
    if yaml_path is not None:
        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: top level must be a mapping, got {type(loaded).__name__}")
        file_data = loaded
    name = preset or file_data.get("preset")
    if name is not None:
        data = preset_dict(name)
    data = _merge(data, file_data)
    if name is not None:
        data["preset"] = name
    data = apply_overrides(data, overrides)
    if "model" not in data:
        raise ConfigError("no model section: pass a preset (e.g. 'tiny') or a YAML with 'model:'")
    return build_config(data)


def dump_config(config: PlatformConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
