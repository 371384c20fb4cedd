"""Checkpoints are atomic and verified: a truncated file or a missing completion mark falls back to the
previous complete checkpoint with a warning naming the bad one; old ones are pruned; leftovers cleaned."""

from __future__ import annotations

import logging

import pytest

from selfforcing.training.checkpoint_store import COMPLETE, CheckpointError, CheckpointStore


def _write(store: CheckpointStore, step: int, payload: bytes = b"weights"):
    staging = store.stage(step)
    (staging / "generator.safetensors").write_bytes(payload * 100)
    (staging / "state.json").write_text(f'{{"step": {step}}}')
    return store.commit(staging, step)


def test_commit_then_latest(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", num_to_keep=2)
    assert store.latest() is None
    _write(store, 2)
    latest = _write(store, 4)
    assert store.latest() == latest and latest.step == 4 and (latest.path / COMPLETE).exists()
    assert not list((tmp_path / "ckpt").glob(".staging-*"))


def test_truncated_file_falls_back_with_a_warning(tmp_path, caplog):
    store = CheckpointStore(tmp_path, num_to_keep=3)
    _write(store, 2)
    bad = _write(store, 4)
    f = bad.path / "generator.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert store.latest().step == 2
    assert str(bad.path) in caplog.text and "bytes" in caplog.text


def test_corrupt_bytes_of_the_same_size_are_caught(tmp_path, caplog):
    store = CheckpointStore(tmp_path, num_to_keep=3)
    _write(store, 2)
    bad = _write(store, 4)
    f = bad.path / "generator.safetensors"
    data = bytearray(f.read_bytes())
    data[10] ^= 0xFF
    f.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert store.latest().step == 2
    assert "sha256" in caplog.text


def test_missing_completion_mark_falls_back_with_a_warning(tmp_path, caplog):
    store = CheckpointStore(tmp_path, num_to_keep=3)
    _write(store, 2)
    bad = _write(store, 4)
    (bad.path / COMPLETE).unlink()
    with caplog.at_level(logging.WARNING):
        assert store.latest().step == 2
    assert str(bad.path) in caplog.text and COMPLETE in caplog.text
    with pytest.raises(CheckpointError, match="no COMPLETE mark"):
        store.verify(bad.path)


def test_prune_keeps_the_newest_and_cleans_leftovers(tmp_path):
    store = CheckpointStore(tmp_path, num_to_keep=2)
    for step in (2, 4, 6):
        _write(store, step)
    assert store.complete_steps() == [4, 6]
    orphan = store.stage(8)  # a writer that crashed before committing
    (orphan / "generator.safetensors").write_bytes(b"half")
    (tmp_path / "step_00000003").mkdir()  # an incomplete folder older than the newest complete one
    store.prune()
    assert not orphan.exists() and not (tmp_path / "step_00000003").exists()
    assert store.complete_steps() == [4, 6]


def test_recommit_of_a_stale_incomplete_step_replaces_it(tmp_path):
    store = CheckpointStore(tmp_path)
    stale = tmp_path / "step_00000004"
    stale.mkdir()
    (stale / "junk").write_text("x")
    ckpt = _write(store, 4)
    assert not (ckpt.path / "junk").exists() and store.latest().step == 4
