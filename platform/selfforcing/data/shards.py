"""Sharded datasets on a (shared) filesystem: atomic shards with completion marks, and a manifest.

A dataset directory written by a job::

    _dataset.json          kind, schema version, number of shards, the fingerprint of what made them
    part-00000.parquet     shard 0 (renamed into place only once fully written)
    part-00000.done        its completion mark (JSON: rows, kind, version), written after the rename
    ...

A shard counts as finished only when its mark exists: a job killed at any moment leaves either a
finished shard, a renamed file without a mark (recomputed), or a hidden temporary file (removed by the
next run). The fingerprint (the config values that decide the content) makes a rerun with other settings
fail instead of mixing shards of two configurations. Paths are local or on a shared filesystem (NFS,
Lustre, a mounted bucket): every worker writes its shards directly, nothing funnels through the driver.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .schemas import dataset_schema

MANIFEST = "_dataset.json"


class DatasetMismatchError(ValueError):
    """An output directory that already holds shards of another dataset or configuration."""


class IncompleteDatasetError(ValueError):
    """A sharded dataset some of whose shards are not finished."""


def shard_file(index: int) -> str:
    return f"part-{index:05d}.parquet"


def mark_file(index: int) -> str:
    return f"part-{index:05d}.done"


@dataclass(frozen=True)
class ShardMark:
    """What a finished shard's completion mark records."""

    index: int
    rows: int
    kind: str
    version: int


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.write_text(text)
    os.replace(tmp, path)


def _normalise(data: Any) -> Any:
    """JSON round trip: tuples become lists, keys strings, so fingerprints compare as stored."""
    return json.loads(json.dumps(data, sort_keys=True))


class ShardedDataset:
    """One dataset directory of ``kind``: prepare it, find what is missing, write shards atomically."""

    def __init__(self, root: str | Path, kind: str) -> None:
        self.root = Path(root)
        self.kind = kind
        self.schema = dataset_schema(kind)

    def manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def num_shards(self) -> int:
        manifest = self.manifest()
        if manifest is None:
            raise FileNotFoundError(f"{self.root} has no {MANIFEST}: not a prepared sharded dataset")
        return int(manifest["num_shards"])

    def prepare(self, num_shards: int, fingerprint: dict[str, Any]) -> None:
        """Create the directory and its manifest, or check that an existing one was made the same way.

        Removes temporary files that a killed run left behind (no writer may be running concurrently).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = {"kind": self.kind, "version": self.schema.version, "num_shards": num_shards,
                  "fingerprint": _normalise(fingerprint)}
        existing = self.manifest()
        if existing is not None:
            found = {k: existing.get(k) for k in wanted}
            if found != wanted:
                raise DatasetMismatchError(self._mismatch(found, wanted))
        for tmp in self.root.glob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
        if existing is None:
            _atomic_write_text(self.root / MANIFEST, json.dumps(wanted, indent=1, sort_keys=True))

    def _mismatch(self, found: dict[str, Any], wanted: dict[str, Any]) -> str:
        diffs = [f"{k}: {found[k]!r} there, {wanted[k]!r} now" for k in ("kind", "version", "num_shards")
                 if found[k] != wanted[k]]
        old, new = found.get("fingerprint") or {}, wanted["fingerprint"]
        diffs += [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
                  if old.get(k) != new.get(k)]
        return (f"{self.root} already holds shards made differently ({'; '.join(diffs)}); "
                "write to another output, or delete it to start over")

    def completed(self) -> list[int]:
        """Indices of finished shards (mark and data file present), ascending."""
        return [i for i in range(self.num_shards)
                if (self.root / mark_file(i)).exists() and (self.root / shard_file(i)).exists()]

    def missing(self) -> list[int]:
        done = set(self.completed())
        return [i for i in range(self.num_shards) if i not in done]

    def write_shard(self, index: int, table: pa.Table) -> ShardMark:
        """Write shard ``index``: temporary file, atomic rename, then the completion mark."""
        if not 0 <= index < self.num_shards:
            raise IndexError(f"shard {index} outside 0..{self.num_shards - 1} of {self.root}")
        final = self.root / shard_file(index)
        tmp = self.root / f".{final.name}.tmp-{uuid.uuid4().hex}"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        mark = ShardMark(index, table.num_rows, self.kind, self.schema.version)
        _atomic_write_text(self.root / mark_file(index), json.dumps(asdict(mark)))
        return mark

    def files(self, allow_partial: bool = False) -> list[Path]:
        """Paths of the finished shards in index order; an error if some are missing (unless allowed)."""
        done = self.completed()
        if len(done) < self.num_shards and not allow_partial:
            missing = self.missing()
            shown = missing if len(missing) <= 10 else [*missing[:10], "..."]
            raise IncompleteDatasetError(
                f"{self.root}: {len(done)} of {self.num_shards} shards are finished (missing {shown}); "
                "rerun the job that writes it to finish them, or read with allow_partial=True"
            )
        return [self.root / shard_file(i) for i in done]


def dataset_files(path: str | Path, allow_partial: bool = False) -> list[Path]:
    """The Parquet files of a dataset: a file; a sharded directory (finished shards); or a plain
    directory of ``*.parquet`` files (sorted by name)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {str(path)!r} is neither a Parquet file nor a directory")
    manifest = path / MANIFEST
    if manifest.exists():
        kind = json.loads(manifest.read_text())["kind"]
        return ShardedDataset(path, kind).files(allow_partial)
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"dataset directory {str(path)!r} holds no .parquet files")
    return files
