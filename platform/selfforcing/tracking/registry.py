"""The MLflow model registry for generators: register a generator directory, resolve a model URI.

A registered generator is the directory ``models.factory.save_generator`` writes (Wan layout +
``selfforcing.yaml``), logged as plain artifacts of a run under ``generator/`` and registered as a
model version whose source is that artifact folder. Plain artifacts, not ``mlflow.pytorch``: MLflow 3
logs torch models with torch.export, which cannot hold a KV-cached generator.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENERATOR_ARTIFACT_PATH = "generator"
PLATFORM_CONFIG_FILE = "selfforcing.yaml"  # same name as models.factory.PLATFORM_CONFIG_FILE
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


def tracking_uri_or_default(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``.

    Always returned explicitly: MLflow's own default moved between versions and the plain file store
    refuses to work in MLflow 3.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def experiment_id(client, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created if missing. With a sqlite store its artifacts go next to
    the database file (MLflow's default, ``./mlruns``, would depend on the working directory)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlruns" / _safe(name)).as_uri()
    return client.create_experiment(name, artifact_location=location)


def is_model_uri(text: str) -> bool:
    """True for ``models:/...`` and ``runs:/...`` URIs (anything MLflow must resolve)."""
    return text.startswith(("models:/", "runs:/"))


@dataclass(frozen=True)
class RegisteredGenerator:
    """A registered model version: ``model_uri`` is ``models:/<name>@<alias>`` (or ``/<version>``)."""

    name: str
    version: str
    alias: str | None
    run_id: str
    source: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ResolvedModel:
    """A model source resolved to a local generator directory, with where it came from."""

    path: Path
    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None


def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def register_generator(
    source: str | Path | tuple[Any, Any],
    name: str,
    alias: str | None = "production",
    tracking_uri: str | None = None,
    *,
    run_id: str | None = None,
    experiment: str = "selfforcing",
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> RegisteredGenerator:
    """Log a generator as artifacts of a run, register a new version of ``name`` and point ``alias`` at it.

    ``source`` is a directory written by ``save_generator`` or a ``(PlatformConfig, WanDiT)`` pair (saved
    to a temporary directory first). ``run_id`` attaches the artifacts to an existing training run
    (``MlflowTracker.run_id``); otherwise a short "register" run is created in ``experiment``.
    """
    uri = tracking_uri_or_default(tracking_uri)
    client = _client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(source, tuple):
            from ..models.factory import save_generator

            config, model = source
            folder = save_generator(config, model, Path(tmp) / GENERATOR_ARTIFACT_PATH)
        else:
            folder = Path(source)
        if not (folder / PLATFORM_CONFIG_FILE).exists() and not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"{folder} is not a generator directory: expected {PLATFORM_CONFIG_FILE} or config.json "
                "(write one with selfforcing.models.factory.save_generator)"
            )
        own_run = run_id is None
        if own_run:
            exp_id = experiment_id(client, experiment, uri)
            run_id = client.create_run(exp_id, run_name=f"register-{name}", tags=tags or {}).info.run_id
        client.log_artifacts(run_id, str(folder), artifact_path=GENERATOR_ARTIFACT_PATH)
        if own_run:
            client.set_terminated(run_id)
    artifact_uri = client.get_run(run_id).info.artifact_uri.rstrip("/")
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - MlflowException(RESOURCE_DOES_NOT_EXIST); type differs by store
        client.create_registered_model(name, description=description)
    version = client.create_model_version(
        name, source=f"{artifact_uri}/{GENERATOR_ARTIFACT_PATH}", run_id=run_id, tags=tags or {},
    )
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return RegisteredGenerator(name, str(version.version), alias, run_id, version.source)


def _generator_root(path: Path) -> Path:
    """The folder holding ``selfforcing.yaml`` (or ``config.json``) at or below ``path``."""
    for marker in (PLATFORM_CONFIG_FILE, "config.json"):
        if (path / marker).exists():
            return path
        found = sorted(path.rglob(marker))
        if found:
            return found[0].parent
    raise FileNotFoundError(f"no generator ({PLATFORM_CONFIG_FILE} or config.json) under {path}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("SELFFORCING_MODEL_CACHE", Path(tempfile.gettempdir()) / "selfforcing-models"))


def resolve_model(
    uri: str | Path, tracking_uri: str | None = None, cache_dir: str | Path | None = None
) -> ResolvedModel:
    """A model source -> a local generator directory (downloaded once per version into ``cache_dir``).

    ``uri``: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run_id>/<path>`` or a
    local directory. Unknown names or aliases raise ``LookupError`` naming what exists.
    """
    text = str(uri)
    if not is_model_uri(text):
        path = Path(text).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model source {text!r} is neither a models:/ or runs:/ URI nor a directory")
        return ResolvedModel(_generator_root(path), text)
    import mlflow

    tracking = tracking_uri_or_default(tracking_uri)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = version = alias = run_id = None
    match = _MODEL_URI.match(text)
    if match:
        client = _client(tracking)
        name, alias = match["name"], match["alias"]
        try:
            mv = (client.get_model_version_by_alias(name, alias) if alias
                  else client.get_model_version(name, match["version"]))
        except Exception as exc:  # noqa: BLE001
            known = [m.name for m in client.search_registered_models()]
            raise LookupError(
                f"cannot resolve {text} in {tracking}: {exc}. Registered models: {known}"
            ) from exc
        version, run_id = str(mv.version), mv.run_id
        # The version's artifact location, so no global registry URI is involved in the download.
        download_uri = client.get_model_version_download_uri(name, version)
        # The run id makes the key unique across stores (same name and version in another registry).
        target = cache / _safe(name) / f"v{version}-{run_id or 'norun'}"
    elif text.startswith("runs:/"):
        download_uri = text
        target = cache / "runs" / _safe(text[len("runs:/"):])
    else:
        raise ValueError(f"model URI {text!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    done = target / ".complete"
    if not done.exists():
        partial = Path(tempfile.mkdtemp(prefix=".download-", dir=_mkdir(target.parent)))
        mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=str(partial), tracking_uri=tracking)
        try:
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)  # atomic: concurrent replicas never see half a download
            done.touch()
        except OSError:
            if not done.exists():  # not another replica winning the race: a real error
                raise
            shutil.rmtree(partial, ignore_errors=True)
    return ResolvedModel(_generator_root(target), text, name, version, alias, run_id)


def resolve_model_source(uri: str | Path, tracking_uri: str | None = None) -> Path:
    """Shortcut: the local generator directory of ``uri`` (see ``resolve_model``)."""
    return resolve_model(uri, tracking_uri).path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
