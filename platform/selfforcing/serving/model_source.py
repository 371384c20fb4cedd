"""Where the served model comes from: an MLflow model URI, a checkpoint directory, or a preset.

Every replica resolves the source itself (``load_source``), so a ``models:/`` URI is downloaded on the
node that needs it; nothing but the small ``ModelSourceArgs`` travels through Serve.

A fresh sqlite MLflow store is created (tables, migrations) by the first process that opens it; two
replicas doing that at once fail (``duplicate column name``) and get restarted. ``prepare_tracking_store``
does it once: the application builder calls it before any replica starts, and every replica calls it
again under an exclusive file lock (in the temp folder, named after the database) before touching the
registry (a no-op then).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..config import PlatformConfig, load_config
from ..tracking import is_model_uri, resolve_model, tracking_uri_or_default

log = logging.getLogger(__name__)


class ModelSourceArgs(BaseModel):
    """Which generator to serve; the first of ``model_uri``, ``checkpoint``, default URI, ``preset``."""

    model_uri: str | None = Field(
        None, description="models:/<name>@<alias>, models:/<name>/<version> or runs:/<id>/<path>"
    )
    checkpoint: str | None = Field(None, description="a generator directory (save_generator layout)")
    preset: str = Field("tiny", description="config preset: the model when nothing else is given, and the "
                        "base of a plain Wan checkpoint's config")
    config_overrides: list[str] = Field(default_factory=list, description="dotted overrides, e.g. runtime.device=cpu")
    default_model_uri: str | None = Field(
        "models:/toy-world@production",
        description="served when no model_uri/checkpoint is given and it exists in the registry",
    )
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    which: str = Field("generator_ema", description="weights to load from a training checkpoint")
    model_id: str | None = Field(None, description="model id in the API (default: registry name or preset)")


@dataclass
class LoadedSource:
    """A resolved source: the config to build, the checkpoint directory (None = random weights)."""

    config: PlatformConfig
    checkpoint: Path | None
    model_id: str
    source: str
    registry: dict[str, Any] | None = None
    created: int = 0
    which: str = "generator_ema"


def _registry_reachable(tracking_uri: str | None) -> bool:
    """Avoid creating an empty sqlite store by merely looking for the default model."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return True
    return Path("mlflow.db").exists()


def uses_registry(args: ModelSourceArgs) -> bool:
    """Whether resolving ``args`` opens the MLflow store."""
    target = args.model_uri or args.checkpoint
    if target is not None:
        return is_model_uri(str(target))
    return args.default_model_uri is not None and _registry_reachable(args.tracking_uri)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock for a sqlite store (one lock file per database in the machine's temp folder, so
    nothing is written beside the user's database); nothing for a server URI."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):]).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(db).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"selfforcing-mlflow-{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_tracking_store(tracking_uri: str | None = None) -> str:
    """Create and migrate the MLflow tracking + registry store of ``tracking_uri`` (default: as
    ``tracking_uri_or_default``) once, under the store lock; returns the URI."""
    uri = tracking_uri_or_default(tracking_uri)
    from mlflow import MlflowClient

    with _store_lock(uri):
        client = MlflowClient(uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # opening the store creates / migrates its tables
        client.search_registered_models(max_results=1)
    return uri


def load_source(args: ModelSourceArgs) -> LoadedSource:
    """Resolve ``args`` to a config (+ checkpoint directory), downloading registry artifacts if needed."""
    from ..models.factory import checkpoint_model_config

    base = load_config(args.preset, overrides=args.config_overrides)
    if uses_registry(args):
        prepare_tracking_store(args.tracking_uri)
    uri = args.model_uri
    if uri is None and args.checkpoint is None and args.default_model_uri and _registry_reachable(args.tracking_uri):
        try:
            return load_source(args.model_copy(update={"model_uri": args.default_model_uri}))
        except LookupError as exc:
            log.info("default model %s not registered (%s); serving preset %s", args.default_model_uri,
                     exc, args.preset)
    if uri is not None or args.checkpoint is not None:
        target = uri or args.checkpoint
        resolved = resolve_model(target, tracking_uri=args.tracking_uri)
        config = checkpoint_model_config(resolved.path, base)
        config = _apply(config, args.config_overrides)
        registry = None
        if resolved.name is not None:
            registry = {"name": resolved.name, "version": resolved.version, "alias": resolved.alias,
                        "run_id": resolved.run_id, "tracking_uri": tracking_uri_or_default(args.tracking_uri)}
        model_id = args.model_id or resolved.name or Path(str(args.checkpoint)).name
        created = int(resolved.path.stat().st_mtime)
        source = target if is_model_uri(str(target)) else str(resolved.path)
        return LoadedSource(config, resolved.path, model_id, source, registry, created, args.which)
    return LoadedSource(base, None, args.model_id or f"selfforcing-{args.preset}", f"preset:{args.preset}",
                        None, int(time.time()))


def _apply(config: PlatformConfig, overrides: list[str]) -> PlatformConfig:
    """Re-apply the caller's overrides on top of a checkpoint's own config (e.g. runtime.device)."""
    if not overrides:
        return config
    from ..config import apply_overrides, build_config

    return build_config(apply_overrides(config.model_dump(mode="json"), overrides))
