"""The platform's dataset kinds: one pyarrow schema and one version per kind, checked on every read.

Every Parquet file the platform writes records its kind and schema version in the file's key-value
metadata (``selfforcing.kind``, ``selfforcing.schema_version``). Readers check both before touching the
data, so a file of another kind, or written by a newer layout, fails at once with the file, what it holds
and what was expected, instead of somewhere deep in a training worker.

- prompts v1: ``id``, ``prompt``, ``negative_prompt`` (optional), ``split`` (optional).
- latents v1: ``id``, ``prompt``, ``latent`` bytes + ``latent_shape`` + ``latent_dtype`` (any shape per
  row; video latents are [F, C, h, w]).
- videos v1: ``id``, ``prompt``, ``frames`` uint8 bytes of [T, H, W, 3] + ``frames_shape``, ``fps``.
- embeddings v1: ``id``, ``prompt``, ``split``, the text embedding ``embedding`` [n, D] bytes + shape +
  dtype with ``max_length`` L: the stored n <= L rows are the embedding's first rows and rows n..L-1 are
  zero (Wan zero-pads past each prompt's tokens, so dropping them loses nothing and makes real-size
  files ~5x smaller); optional ``negative_prompt`` / ``negative_embedding`` (same layout) for guidance.
- ode_trajectories v1: ``id``, ``pair_index``, ``prompt_id``, ``prompt``, ``seed``, ``states`` [K, F, C, h, w]
  (the teacher's ODE state at each of the K generator timesteps), ``timesteps`` [K], ``target``
  [F, C, h, w] (the final sample), and the conditioning ``embedding`` (trimmed as above), so a training
  worker streams self-contained rows and never needs the text encoder.

Files without platform metadata (prompt lists exported elsewhere) are accepted when they hold the
required columns; a platform file that records a kind but no version predates versioning and is read as
version 1 (same columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

KIND_KEY = b"selfforcing.kind"
VERSION_KEY = b"selfforcing.schema_version"


class DatasetSchemaError(ValueError):
    """A file of another dataset kind or schema version than the reader expects, or missing columns."""


def _tensor_fields(name: str, nullable: bool = False) -> list[pa.Field]:
    """Three columns holding one tensor per row: raw C-order bytes, shape, dtype name."""
    return [
        pa.field(name, pa.large_binary(), nullable=nullable),
        pa.field(f"{name}_shape", pa.list_(pa.int64()), nullable=nullable),
        pa.field(f"{name}_dtype", pa.string(), nullable=nullable),
    ]


@dataclass(frozen=True)
class DatasetSchema:
    """One dataset kind: its columns, the version written, the versions readable, the optional columns."""

    kind: str
    version: int
    fields: tuple[pa.Field, ...]
    optional: frozenset[str] = frozenset()
    readable: frozenset[int] = frozenset({1})

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.fields if f.name not in self.optional]

    def metadata(self) -> dict[bytes, bytes]:
        return {KIND_KEY: self.kind.encode(), VERSION_KEY: str(self.version).encode()}

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(list(self.fields), metadata=self.metadata())


PROMPTS = DatasetSchema(
    "prompts", 1,
    (
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("negative_prompt", pa.string()),
        pa.field("split", pa.string()),
    ),
    optional=frozenset({"negative_prompt", "split"}),
)
LATENTS = DatasetSchema(
    "latents", 1,
    (pa.field("id", pa.string(), nullable=False), pa.field("prompt", pa.string(), nullable=False),
     *_tensor_fields("latent")),
)
VIDEOS = DatasetSchema(
    "videos", 1,
    (
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("frames", pa.large_binary(), nullable=False),
        pa.field("frames_shape", pa.list_(pa.int64()), nullable=False),
        pa.field("fps", pa.float64()),
    ),
    optional=frozenset({"fps"}),
)
EMBEDDINGS = DatasetSchema(
    "embeddings", 1,
    (
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        *_tensor_fields("embedding"),
        pa.field("max_length", pa.int64(), nullable=False),
        pa.field("negative_prompt", pa.string()),
        *_tensor_fields("negative_embedding", nullable=True),
    ),
)
ODE_TRAJECTORIES = DatasetSchema(
    "ode_trajectories", 1,
    (
        pa.field("id", pa.string(), nullable=False),
        pa.field("pair_index", pa.int64(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        *_tensor_fields("states"),
        pa.field("timesteps", pa.list_(pa.float32()), nullable=False),
        *_tensor_fields("target"),
        *_tensor_fields("embedding"),
        pa.field("max_length", pa.int64(), nullable=False),
    ),
)

SCHEMAS: dict[str, DatasetSchema] = {
    s.kind: s for s in (PROMPTS, LATENTS, VIDEOS, EMBEDDINGS, ODE_TRAJECTORIES)
}


def dataset_schema(kind: str) -> DatasetSchema:
    if kind not in SCHEMAS:
        raise ValueError(f"unknown dataset kind {kind!r}; valid kinds are {sorted(SCHEMAS)}")
    return SCHEMAS[kind]


def recorded_kind_version(metadata: Mapping[bytes, bytes] | None) -> tuple[str | None, int | None]:
    """(kind, version) recorded in a file's schema metadata; (None, None) for a file written elsewhere.

    A platform file with a kind but no version predates versioning; its columns are those of version 1.
    """
    meta = metadata or {}
    kind = meta.get(KIND_KEY)
    if kind is None:
        return None, None
    version = meta.get(VERSION_KEY)
    try:
        return kind.decode(), int(version) if version is not None else 1
    except ValueError:
        return kind.decode(), -1  # unparseable: reported as an unreadable version


def check_schema(path: str | Path, schema: pa.Schema, kind: str) -> tuple[str | None, int | None]:
    """Check that the file at ``path`` (whose Arrow ``schema`` was read from its footer) holds ``kind``.

    Raises ``DatasetSchemaError`` naming the file, the kind and version it records and the expected ones,
    or the missing columns. Returns the recorded (kind, version).
    """
    expected = dataset_schema(kind)
    found_kind, found_version = recorded_kind_version(schema.metadata)
    wanted = f"expected {kind!r} version {expected.version}"
    if len(expected.readable) > 1:
        wanted += f" (readable versions {sorted(expected.readable)})"
    if found_kind is not None and found_kind != kind:
        raise DatasetSchemaError(
            f"{path}: holds a {found_kind!r} dataset (schema version {found_version}); {wanted}"
        )
    if found_version is not None and found_version not in expected.readable:
        raise DatasetSchemaError(
            f"{path}: holds a {kind!r} dataset of schema version {found_version}, which this code cannot "
            f"read; {wanted}. Rewrite the file with this version of the platform"
        )
    missing = [c for c in expected.required if c not in schema.names]
    if missing:
        raise DatasetSchemaError(
            f"{path}: lacks the {kind} columns {missing}; a {kind!r} file needs {expected.required}"
        )
    return found_kind, found_version
