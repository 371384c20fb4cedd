"""Typed configs of the platform's jobs (``jobs/*.py``): the sections every job shares and one loader.

A job config is a pydantic model whose ``platform`` section is a full ``PlatformConfig`` written as a
preset name plus fields to change (``platform: {preset: tiny, video: {num_frames: 12}}``). The loader
reads YAML, applies dotted CLI overrides (``training.max_steps=3``) and validates everything before any
actor starts, so a bad value fails with the field, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field, ValidationError, field_validator

from .errors import ConfigError, config_error_from
from .loader import _merge, apply_overrides, preset_dict
from .schema import PlatformConfig, StrictModel


class RayConfig(StrictModel):
    """Where the job's Ray cluster is."""

    address: str | None = Field(
        None, description="cluster address; None = $RAY_ADDRESS (set by `ray job submit`), else an embedded local Ray"
    )
    num_cpus: int | None = Field(None, gt=0, description="CPUs of an embedded local Ray (None = all)")


class TrackingConfig(StrictModel):
    """MLflow: where runs go and under which name the result is registered."""

    tracking_uri: str | None = Field(
        None, description="MLflow URI; None = $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db"
    )
    experiment: str = Field("selfforcing", min_length=1, description="MLflow experiment of the run")
    register_as: str | None = Field(None, description="registered model name of the result (None = not registered)")
    alias: str = Field("candidate", min_length=1, description="alias the new model version gets")


class RunConfig(StrictModel):
    """The run's identity and storage: the same name and storage resume the same run."""

    name: str = Field(min_length=1, description="run name (checkpoint folder and MLflow run name)")
    storage_path: str = Field(
        "runs", description="local path, or a pyarrow.fs URI (s3://, gs://, abfs://, hdfs://, file://) that "
        "then holds the run's checkpoints and records (the source of truth; no shared disk needed)",
    )
    local_dir: str | None = Field(
        None, description="each process's working folder when storage_path is a URI (None = "
        "~/.cache/selfforcing/runs); unused for a local storage_path",
    )

    @field_validator("name")
    @classmethod
    def _plain(cls, name: str) -> str:
        if "/" in name or name.startswith("."):
            raise ValueError(f"run name {name!r} must be a plain folder name (no '/', not starting with '.')")
        return name


def expand_platform(data: Any) -> Any:
    """A ``platform`` mapping with ``preset:`` -> the preset's fields merged under the given ones."""
    if isinstance(data, Mapping) and data.get("preset") is not None:
        return {**_merge(preset_dict(str(data["preset"])), data)}
    return data


class PlatformSection(StrictModel):
    """Mixin for job configs with a ``platform`` section given as a preset plus changes."""

    platform: PlatformConfig = Field(description="model, codecs, schedule, video, runtime (preset + changes)")

    @field_validator("platform", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        try:
            return expand_platform(value)
        except ConfigError as err:
            raise ValueError(str(err)) from None


JobT = TypeVar("JobT", bound=StrictModel)


def load_job_config(
    cls: type[JobT], yaml_path: str | Path | None = None, overrides: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> JobT:
    """``defaults``, then the YAML file, then dotted ``overrides``, validated as ``cls``."""
    data: dict[str, Any] = dict(defaults or {})
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        data = _merge(data, loaded)
    data = apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise config_error_from(err) from None


def dump_job_config(config: StrictModel) -> str:
    """YAML of a validated job config (what the run actually used), for logs and checkpoints."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
