"""The toy world's base model: a trained teacher shipped in the package, the way a user starts from Wan2.1.

A release folder holds ``generator/`` (``save_generator``: Wan config.json, safetensors weights, the full
platform config) and ``release.json`` (``TeacherRelease``: the exact training config and budget, the
command that trained it, its metrics, the environment, and the sha256 of the weights). Loading checks
both: the weights' digest against ``release.json`` and the release's training config against the
caller's, so a teacher is never used with a model, codec or schedule it was not trained for, nor after
its files changed. ``selfforcing toyworld run --retrain-teacher`` trains one instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from selfforcing.config import PlatformConfig
from selfforcing.config.schema import StrictModel
from selfforcing.models.factory import load_dit, save_generator
from selfforcing.models.wan_dit import WanDiT

from .config import TeacherBudget, identity, training_identity
from .digest import weights_sha256

RELEASE_DIR = Path(__file__).with_name("released_teacher")
RELEASE_FILE = "release.json"
GENERATOR_DIR = "generator"
FORMAT_VERSION = 1


class ReleaseError(ValueError):
    """A shipped teacher is missing, was changed, or does not fit the config it is loaded for."""


class TeacherRelease(StrictModel):
    """What ``release.json`` records about a shipped teacher."""

    format_version: int = Field(FORMAT_VERSION, description="layout of this file")
    preset: str = Field(description="platform preset the teacher was trained from")
    overrides: list[str] = Field(default_factory=list, description="preset overrides of the training run")
    training: dict[str, Any] = Field(description="config.training_identity of the training run")
    budget: TeacherBudget = Field(description="the teacher budget it was trained with")
    code_version: int = Field(description="teacher.CODE_VERSION of the code that trained it")
    command: str = Field(description="the command line that trained it")
    weights_sha256: str = Field(description="digest.weights_sha256 of generator/")
    metrics: dict[str, Any] = Field(default_factory=dict, description="evaluate_teacher's metrics")
    train_stats: dict[str, Any] = Field(default_factory=dict, description="steps, final loss, seconds")
    environment: dict[str, str] = Field(default_factory=dict, description="device, torch version, ...")


def has_release(folder: str | Path = RELEASE_DIR) -> bool:
    """Whether ``folder`` holds a release (its ``release.json``)."""
    return (Path(folder) / RELEASE_FILE).is_file()


def write_release(
    folder: str | Path, config: PlatformConfig, model: WanDiT, *, preset: str, overrides: list[str],
    budget: TeacherBudget, code_version: int, command: str, metrics: dict[str, Any] | None = None,
    train_stats: dict[str, Any] | None = None, environment: dict[str, str] | None = None,
) -> TeacherRelease:
    """Save ``model`` and its ``release.json`` into ``folder``; returns the release record."""
    folder = Path(folder)
    save_generator(config, model, folder / GENERATOR_DIR)
    release = TeacherRelease(
        preset=preset, overrides=list(overrides), training=training_identity(config), budget=budget,
        code_version=code_version, command=command, weights_sha256=weights_sha256(folder / GENERATOR_DIR),
        metrics=metrics or {}, train_stats=train_stats or {}, environment=environment or {},
    )
    (folder / RELEASE_FILE).write_text(release.model_dump_json(indent=1) + "\n")
    return release


def read_release(folder: str | Path = RELEASE_DIR) -> TeacherRelease:
    """The release record of ``folder``; a missing or unreadable one is a ``ReleaseError``."""
    path = Path(folder) / RELEASE_FILE
    if not path.is_file():
        raise ReleaseError(
            f"no shipped teacher at {path}; train one with `selfforcing toyworld run --retrain-teacher` "
            "(or `python -m selfforcing.recipes.toyworld.teacher_gpu` on a GPU)"
        )
    try:
        return TeacherRelease.model_validate_json(path.read_text())
    except ValueError as err:
        raise ReleaseError(f"{path} is not a valid teacher release: {err}") from err


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where nested dicts a and b differ, as 'key: a != b'."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: released {a!r} != wanted {b!r}"]


def check_release(
    release: TeacherRelease, folder: str | Path, config: PlatformConfig, budget: TeacherBudget | None = None
) -> None:
    """Raise ``ReleaseError`` naming every mismatch: the weights' digest, the training config, and (when
    given) the teacher budget that the caller would retrain with."""
    folder = Path(folder)
    actual = weights_sha256(folder / GENERATOR_DIR)
    if actual != release.weights_sha256:
        raise ReleaseError(
            f"the teacher weights in {folder / GENERATOR_DIR} have sha256 {actual}, but {RELEASE_FILE} "
            f"records {release.weights_sha256}: the files changed after release; restore them or retrain "
            "(--retrain-teacher)"
        )
    diffs = _differences(release.training, training_identity(config))
    if budget is not None:
        diffs += _differences(identity(release.budget), identity(budget), "teacher.")
    if diffs:
        raise ReleaseError(
            f"the shipped teacher in {folder} was trained for another config: " + "; ".join(diffs)
            + ". Use the config it was trained for, or train a teacher for this one (--retrain-teacher)"
        )


def load_release(
    config: PlatformConfig, folder: str | Path = RELEASE_DIR, budget: TeacherBudget | None = None,
    device: torch.device | str = "cpu",
) -> tuple[WanDiT, TeacherRelease]:
    """The shipped teacher (eval mode, frozen) and its record, after ``check_release``."""
    release = read_release(folder)
    check_release(release, folder, config, budget)
    model = load_dit(config, Path(folder) / GENERATOR_DIR, device=device)
    return model.eval().requires_grad_(False), release
