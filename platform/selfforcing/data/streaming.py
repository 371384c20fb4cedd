"""Datasets as Ray Data datasets, so training workers stream their shard instead of loading everything.

``read_dataset`` checks every file's kind and schema version on the driver (footers only: cheap) and
returns a lazy ``ray.data.Dataset``; pass it to a ``TorchTrainer(datasets={"train": ds})`` and each
worker reads its part with ``ray.train.get_dataset_shard("train").iter_batches(...)`` and decodes each
batch with ``batches.to_tensors`` (or ``ode_batch`` / ``embedding_batch`` / ``latent_batch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from .schemas import check_schema, dataset_schema
from .shards import dataset_files


def checked_files(paths: str | Path | Sequence[str | Path], kind: str, allow_partial: bool = False) -> list[Path]:
    """The Parquet files of one or more datasets (files or directories), each checked to hold ``kind``."""
    dataset_schema(kind)  # unknown kinds fail before any file is opened
    sources = [paths] if isinstance(paths, str | Path) else list(paths)
    files = [f for src in sources for f in dataset_files(src, allow_partial=allow_partial)]
    for f in files:
        check_schema(f, pq.read_schema(f), kind)
    return files


def read_dataset(
    paths: str | Path | Sequence[str | Path],
    kind: str,
    *,
    columns: Sequence[str] | None = None,
    allow_partial: bool = False,
    shuffle_files: bool = False,
):
    """A ``ray.data.Dataset`` over the rows of ``kind`` in ``paths`` (files, sharded directories, or
    plain directories of Parquet files). A sharded directory with unfinished shards is an error unless
    ``allow_partial``. ``shuffle_files`` randomises the file order per epoch (rows keep their file order).

    Every file must hold the kind's full column set (optional columns may not be left out here: Ray Data
    needs one schema); files of the same platform version always do.
    """
    import ray.data

    files = checked_files(paths, kind, allow_partial)
    return ray.data.read_parquet(
        [str(f) for f in files], columns=list(columns) if columns is not None else None,
        shuffle="files" if shuffle_files else None, file_extensions=["parquet"],
    )
