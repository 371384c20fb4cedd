"""Parquet schemas, writers and readers for the platform's datasets.

Three kinds, each a fixed set of required columns plus any number of extra columns (toy-world scene
parameters, source ids, ...), so one schema serves real prompt sets, real latent datasets and the toy world:

- prompts: ``id`` string, ``prompt`` string, ``negative_prompt`` string (nullable).
- latents: ``id``, ``prompt``, ``latent`` raw tensor bytes (C order), ``latent_shape`` list<int64>,
  ``latent_dtype`` string (``float32``, ``bfloat16``, ...). Shapes may differ between rows (videos of any
  length); ``LatentSet.stack`` batches equal shapes.
- videos: ``id``, ``prompt``, ``frames`` raw uint8 bytes of [T, H, W, 3], ``frames_shape`` list<int64>,
  ``fps`` float64 (nullable).

The kind is recorded in the file's schema metadata (``selfforcing.kind``) and checked on read. Tensors are
stored as bytes, not nested lists, so a write-read round trip is bit-exact for every dtype, bfloat16 too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

KIND_KEY = b"selfforcing.kind"

PROMPTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("negative_prompt", pa.string()),
    ],
    metadata={KIND_KEY: b"prompts"},
)
LATENTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("latent", pa.large_binary(), nullable=False),
        pa.field("latent_shape", pa.list_(pa.int64()), nullable=False),
        pa.field("latent_dtype", pa.string(), nullable=False),
    ],
    metadata={KIND_KEY: b"latents"},
)
VIDEOS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("frames", pa.large_binary(), nullable=False),
        pa.field("frames_shape", pa.list_(pa.int64()), nullable=False),
        pa.field("fps", pa.float64()),
    ],
    metadata={KIND_KEY: b"videos"},
)
SCHEMAS: dict[str, pa.Schema] = {"prompts": PROMPTS_SCHEMA, "latents": LATENTS_SCHEMA, "videos": VIDEOS_SCHEMA}

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
    "bool": torch.bool,
}


# -- tensors as bytes ------------------------------------------------------------------------------
def tensor_to_bytes(x: torch.Tensor | np.ndarray) -> tuple[bytes, list[int], str]:
    """(raw C-order bytes, shape, dtype name) of a tensor or array; bfloat16 is stored as its bits."""
    t = torch.as_tensor(x).detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"cannot store dtype {name}; storable dtypes are {sorted(_DTYPES)}")
    raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
    return raw.numpy().tobytes(), list(t.shape), name


def tensor_from_bytes(data: bytes, shape: Sequence[int], dtype: str) -> torch.Tensor:
    """Inverse of ``tensor_to_bytes``: a torch tensor of that shape and dtype (a copy, writable)."""
    if dtype not in _DTYPES:
        raise ValueError(f"unknown stored dtype {dtype!r}; known dtypes are {sorted(_DTYPES)}")
    if dtype == "bfloat16":
        return torch.from_numpy(np.frombuffer(data, dtype=np.int16).copy()).view(torch.bfloat16).reshape(*shape)
    np_dtype = torch.empty(0, dtype=_DTYPES[dtype]).numpy().dtype
    return torch.from_numpy(np.frombuffer(data, dtype=np_dtype).copy()).reshape(*shape)


# -- records ---------------------------------------------------------------------------------------
@dataclass
class PromptSet:
    """N prompts; ``extra`` maps column name -> N values."""

    ids: list[str]
    prompts: list[str]
    negative_prompts: list[str | None]
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class LatentSet:
    """N latents (each any shape, e.g. [F, C, h, w]) with their prompts."""

    ids: list[str]
    prompts: list[str]
    latents: list[torch.Tensor]
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def stack(self) -> torch.Tensor:
        """[N, *shape] batch; fails naming the shapes when rows differ."""
        shapes = sorted({tuple(x.shape) for x in self.latents})
        if len(shapes) > 1:
            raise ValueError(f"cannot stack latents of different shapes {shapes}")
        return torch.stack(self.latents)


@dataclass
class VideoSet:
    """N uint8 videos [T, H, W, 3] with their prompts; ``fps`` per video or None."""

    ids: list[str]
    prompts: list[str]
    videos: list[np.ndarray]
    fps: list[float | None]
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def stack(self) -> np.ndarray:
        """uint8 [N, T, H, W, 3]; fails naming the shapes when videos differ."""
        shapes = sorted({v.shape for v in self.videos})
        if len(shapes) > 1:
            raise ValueError(f"cannot stack videos of different shapes {shapes}")
        return np.stack(self.videos)


# -- writing ---------------------------------------------------------------------------------------
def _default_ids(n: int, ids: Sequence[str] | None) -> list[str]:
    ids = [f"{i:08d}" for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    return ids


def _write(path: str | Path, kind: str, columns: dict[str, list], extra: dict[str, Sequence] | None) -> Path:
    schema = SCHEMAS[kind]
    n = len(columns["prompt"])
    for name, values in {**columns, **(extra or {})}.items():
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} values; expected {n} (one per prompt)")
    clash = sorted(set(extra or {}) & set(schema.names))
    if clash:
        raise ValueError(f"extra columns {clash} clash with the required {kind} columns {schema.names}")
    table = pa.table({name: pa.array(columns[name], type=schema.field(name).type) for name in schema.names})
    for name, values in (extra or {}).items():
        table = table.append_column(name, pa.array(list(values)))
    table = table.replace_schema_metadata({KIND_KEY: kind.encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_prompts(
    path: str | Path,
    prompts: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    negative_prompts: Sequence[str | None] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> Path:
    """Write a prompt set; ids default to the row number."""
    negative = list(negative_prompts) if negative_prompts is not None else [None] * len(prompts)
    cols = {"id": _default_ids(len(prompts), ids), "prompt": list(prompts), "negative_prompt": negative}
    return _write(path, "prompts", cols, extra)


def write_latents(
    path: str | Path,
    prompts: Sequence[str],
    latents: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
    *,
    ids: Sequence[str] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> Path:
    """Write latents (a list of tensors, or a batch [N, ...]) with their prompts, bit-exactly."""
    encoded = [tensor_to_bytes(x) for x in latents]
    cols = {
        "id": _default_ids(len(prompts), ids), "prompt": list(prompts),
        "latent": [e[0] for e in encoded], "latent_shape": [e[1] for e in encoded],
        "latent_dtype": [e[2] for e in encoded],
    }
    return _write(path, "latents", cols, extra)


def write_videos(
    path: str | Path,
    prompts: Sequence[str],
    videos: Sequence[np.ndarray] | np.ndarray,
    *,
    ids: Sequence[str] | None = None,
    fps: float | Sequence[float | None] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> Path:
    """Write uint8 videos [T, H, W, 3] (a list, or a batch [N, T, H, W, 3]) with their prompts."""
    frames, shapes = [], []
    for i, v in enumerate(videos):
        v = np.asarray(v)
        if v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3:
            raise ValueError(f"video {i} must be uint8 [T, H, W, 3]; got {v.dtype} {v.shape}")
        frames.append(np.ascontiguousarray(v).tobytes())
        shapes.append(list(v.shape))
    fps_list = list(fps) if isinstance(fps, Sequence) else [fps] * len(frames)
    cols = {
        "id": _default_ids(len(prompts), ids), "prompt": list(prompts), "frames": frames,
        "frames_shape": shapes, "fps": [None if f is None else float(f) for f in fps_list],
    }
    return _write(path, "videos", cols, extra)


# -- reading ---------------------------------------------------------------------------------------
def read_kind(path: str | Path) -> str | None:
    """The dataset kind recorded in a file's metadata, or None for a file written elsewhere."""
    meta = pq.read_schema(path).metadata or {}
    kind = meta.get(KIND_KEY)
    return kind.decode() if kind else None


def _read(path: str | Path, kind: str) -> tuple[dict[str, list], dict[str, list]]:
    table = pq.read_table(path)
    recorded = (table.schema.metadata or {}).get(KIND_KEY)
    if recorded is not None and recorded.decode() != kind:
        raise ValueError(f"{path} holds a {recorded.decode()} dataset, not {kind}")
    required = SCHEMAS[kind].names
    missing = [c for c in required if c not in table.column_names and c not in ("negative_prompt", "fps")]
    if missing:
        raise ValueError(f"{path} lacks the {kind} columns {missing}; required are {required}")
    n = table.num_rows
    cols = {c: table.column(c).to_pylist() if c in table.column_names else [None] * n for c in required}
    extra = {c: table.column(c).to_pylist() for c in table.column_names if c not in required}
    return cols, extra


def read_prompts(path: str | Path) -> PromptSet:
    cols, extra = _read(path, "prompts")
    return PromptSet(cols["id"], cols["prompt"], cols["negative_prompt"], extra)


def read_latents(path: str | Path) -> LatentSet:
    cols, extra = _read(path, "latents")
    latents = [
        tensor_from_bytes(b, s, d)
        for b, s, d in zip(cols["latent"], cols["latent_shape"], cols["latent_dtype"], strict=True)
    ]
    return LatentSet(cols["id"], cols["prompt"], latents, extra)


def read_videos(path: str | Path) -> VideoSet:
    cols, extra = _read(path, "videos")
    videos = [
        np.frombuffer(b, dtype=np.uint8).reshape(s).copy()
        for b, s in zip(cols["frames"], cols["frames_shape"], strict=True)
    ]
    return VideoSet(cols["id"], cols["prompt"], videos, cols["fps"], extra)
