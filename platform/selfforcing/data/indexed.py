"""Rows of a Parquet dataset by global index, for training data that is a pure function of the step.

A training step's sample ``i`` must be the same example whichever worker, micro-batch or restart asks for
it: that is what makes 1 worker, 2 workers, gradient accumulation and a resumed (or elastically resumed)
run compute the same numbers (``training.batches``). So training jobs read rows by index, here, rather than
consuming ``ray.train.get_dataset_shard(...).iter_batches()``: ``streaming_split`` hands blocks to
workers in an order that depends on the number of workers and on execution timing, so the example a rank
sees at step k changes with the layout, and a restarted run cannot position a stream at step k without
replaying every earlier step. Indexed reads cost nothing of that: a worker reads only its own rows.

Row ``i`` is the i-th row of the dataset in file order (a sharded directory's shards in index order). A
small dataset (``preload_bytes``, by the footers' uncompressed sizes) is read whole once; a big one is read
a row group at a time on demand, with the last ``cache_row_groups`` row groups kept decoded.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .schemas import dataset_schema
from .streaming import checked_files

PRELOAD_BYTES = 256 << 20


class IndexedRows:
    """Random access to the rows of one dataset of ``kind`` (files, sharded or plain directories)."""

    def __init__(
        self, paths: str | Path | Sequence[str | Path], kind: str, columns: Sequence[str] | None = None,
        preload_bytes: int = PRELOAD_BYTES, cache_row_groups: int = 8,
    ) -> None:
        self.kind = kind
        self.files = checked_files(paths, kind)
        self.columns = list(columns) if columns is not None else None
        self._groups: list[tuple[Path, int]] = []  # (file, row group) in row order
        self._starts: list[int] = []  # first global row of each row group
        total_rows = total_bytes = 0
        for f in self.files:
            meta = pq.ParquetFile(f).metadata
            for g in range(meta.num_row_groups):
                self._groups.append((f, g))
                self._starts.append(total_rows)
                total_rows += meta.row_group(g).num_rows
                total_bytes += meta.row_group(g).total_byte_size
        self.num_rows, self.total_bytes = total_rows, total_bytes
        self.preloaded = total_bytes <= preload_bytes
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._cache_size = max(1, cache_row_groups)
        self._table = self._read_all() if self.preloaded else None

    def __len__(self) -> int:
        return self.num_rows

    def _wanted(self, schema: pa.Schema) -> list[str] | None:
        if self.columns is None:
            return None
        return [c for c in self.columns if c in schema.names]

    def _complete(self, table: pa.Table) -> pa.Table:
        """The kind's columns a file lacks (optional ones) as nulls, so every part has one schema."""
        for f in dataset_schema(self.kind).fields:
            if f.name not in table.column_names and (self.columns is None or f.name in self.columns):
                table = table.append_column(f.name, pa.nulls(table.num_rows, type=f.type))
        return table.replace_schema_metadata(None)

    def _read_all(self) -> pa.Table:
        parts = []
        for f in self.files:
            pf = pq.ParquetFile(f)
            parts.append(self._complete(pf.read(columns=self._wanted(pf.schema_arrow))))
        return pa.concat_tables(parts, promote_options="default")

    def _row_group(self, index: int) -> pa.Table:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        f, g = self._groups[index]
        pf = pq.ParquetFile(f)
        table = self._complete(pf.read_row_group(g, columns=self._wanted(pf.schema_arrow)))
        self._cache[index] = table
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return table

    def take(self, indices: Sequence[int]) -> pa.Table:
        """The rows at ``indices`` (global row numbers), in that order (repeats allowed)."""
        rows = [int(i) for i in indices]
        bad = [i for i in rows if not 0 <= i < self.num_rows]
        if bad:
            raise IndexError(f"rows {bad[:5]} outside 0..{self.num_rows - 1} of {self.kind} dataset {self.files[0]}")
        if self._table is not None:
            return self._table.take(rows)
        parts = []
        for i in rows:  # one row per part: row groups are cached, so repeated groups are decoded once
            g = bisect.bisect_right(self._starts, i) - 1
            parts.append(self._row_group(g).slice(i - self._starts[g], 1))
        if not parts:
            return self._row_group(0).slice(0, 0)
        return pa.concat_tables(parts, promote_options="default")

    def column(self, name: str) -> list:
        """One column over every row (cheap for small columns: Parquet is columnar)."""
        values: list = []
        for f in self.files:
            pf = pq.ParquetFile(f)
            if name in pf.schema_arrow.names:
                values.extend(pf.read(columns=[name]).column(name).to_pylist())
            else:
                values.extend([None] * pf.metadata.num_rows)
        return values
