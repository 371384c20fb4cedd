"""Any dataset kind as an Arrow table: build one with the kind's metadata, read one back checked.

A dataset is one Parquet file or a directory of shards (``shards.ShardedDataset``); readers accept both.
Each kind has a fixed set of columns (``schemas``) plus any number of extra columns (toy-world scene
parameters, source ids, ...), which round-trip untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .schemas import check_schema, dataset_schema
from .shards import dataset_files


def unique_ids(n: int, ids: Sequence[str] | None) -> list[str]:
    """``ids`` as strings (checked unique), or the row numbers ``00000000``, ``00000001``, ..."""
    ids = [f"{i:08d}" for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    return ids


def build_table(kind: str, columns: Mapping[str, Sequence], extra: Mapping[str, Sequence] | None = None) -> pa.Table:
    """A table of ``kind``: its columns in schema order (optional ones may be omitted: written as nulls),
    then the ``extra`` columns; the kind and version go into the schema metadata."""
    schema = dataset_schema(kind)
    n = len(columns["id"])
    for name, values in {**columns, **(extra or {})}.items():
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} values; expected {n} (one per row)")
    unknown = sorted(set(columns) - set(schema.names))
    if unknown:
        raise ValueError(f"columns {unknown} are not {kind} columns {schema.names}; pass them as extra")
    clash = sorted(set(extra or {}) & set(schema.names))
    if clash:
        raise ValueError(f"extra columns {clash} clash with the required {kind} columns {schema.names}")
    arrays = {}
    for f in schema.fields:
        values = columns.get(f.name)
        if values is None:
            if f.name not in schema.optional and not f.nullable:
                raise ValueError(f"{kind} column {f.name!r} is required")
            values = [None] * n
        arrays[f.name] = pa.array(list(values), type=f.type)
    table = pa.table(arrays)
    for name, values in (extra or {}).items():
        table = table.append_column(name, pa.array(list(values)))
    return table.replace_schema_metadata(schema.metadata())


def write_table(path: str | Path, table: pa.Table) -> Path:
    """Write one Parquet file (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_table(path: str | Path, kind: str, columns: Sequence[str] | None = None, allow_partial: bool = False
               ) -> pa.Table:
    """The rows of a file or a sharded directory of ``kind``, every file's schema checked first.

    Optional columns a file lacks come back as nulls, so callers always see the kind's full column set
    (plus the file's extra columns). ``columns`` reads only those (cheap: Parquet is columnar).
    """
    schema = dataset_schema(kind)
    tables = []
    for file in dataset_files(path, allow_partial=allow_partial):
        file_schema = pq.read_schema(file)
        check_schema(file, file_schema, kind)
        present = file_schema.names
        wanted = None if columns is None else [c for c in columns if c in present]
        table = pq.read_table(file, columns=wanted)
        for f in schema.fields:
            if f.name not in table.column_names and (columns is None or f.name in columns):
                table = table.append_column(f.name, pa.nulls(table.num_rows, type=f.type))
        tables.append(table.replace_schema_metadata(None))
    if not tables:
        return pa.table({f.name: pa.array([], type=f.type) for f in schema.fields
                         if columns is None or f.name in columns})
    return pa.concat_tables(tables, promote_options="default")


def split_columns(table: pa.Table, kind: str) -> tuple[dict[str, list], dict[str, list]]:
    """(the kind's columns, the extra columns) as Python lists."""
    names = set(dataset_schema(kind).names)
    cols = {c: table.column(c).to_pylist() for c in table.column_names if c in names}
    extra = {c: table.column(c).to_pylist() for c in table.column_names if c not in names}
    return cols, extra
