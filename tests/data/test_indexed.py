"""Rows by global index (what training jobs read instead of a stream whose order depends on the workers):
the same rows whether a dataset is read whole or a row group at a time, across files and row groups."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from selfforcing.data.embeddings import embeddings_table
from selfforcing.data.indexed import IndexedRows
from selfforcing.data.tables import read_table


@pytest.fixture
def embeddings_dir(tmp_path):
    """11 embeddings rows in two plain files with row groups of 3 rows (4 + 2 row groups)."""
    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "emb"
    folder.mkdir()
    start = 0
    for name, n in (("a.parquet", 7), ("b.parquet", 4)):
        prompts = [f"prompt {start + i}" for i in range(n)]
        table = embeddings_table(prompts, torch.randn(n, 5, 4, generator=g), ids=[f"{start + i:03d}" for i in range(n)])
        pq.write_table(table, folder / name, row_group_size=3)
        start += n
    return folder


@pytest.mark.parametrize("preload", [True, False], ids=["whole", "row-groups"])
def test_rows_by_index_equal_the_dataset_rows(embeddings_dir, preload):
    rows = IndexedRows(embeddings_dir, "embeddings", preload_bytes=1 << 30 if preload else 0, cache_row_groups=2)
    assert rows.preloaded is preload and len(rows) == 11
    everything = read_table(embeddings_dir, "embeddings")
    order = [10, 0, 6, 7, 3, 3, 9, 1, 10]  # across files and row groups, repeats, out of order
    got = rows.take(order)
    assert got.column("id").to_pylist() == [f"{i:03d}" for i in order]
    assert got.column("embedding").to_pylist() == everything.take(order).column("embedding").to_pylist()
    assert rows.column("prompt") == [f"prompt {i}" for i in range(11)]
    with pytest.raises(IndexError, match="rows \\[11\\] outside 0..10"):
        rows.take([11])


def test_only_requested_columns_are_read(embeddings_dir):
    rows = IndexedRows(embeddings_dir, "embeddings", columns=["id", "prompt"], preload_bytes=0)
    assert set(rows.take([4]).column_names) == {"id", "prompt"}
