"""A run on a pyarrow.fs URI: the remote folder is the truth. Records and checkpoints round-trip through it,
a checkpoint's mark is uploaded last, an unmarked / corrupted / truncated remote checkpoint is skipped
for the previous one with a warning naming it, remote checkpoints are pruned, a process on a node without
the checkpoint downloads it, and a bad URI fails naming ``run.storage_path``. ``file://`` URIs go through
pyarrow's LocalFileSystem, the same code path as s3:// or gs://."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from selfforcing.config import ConfigError
from selfforcing.config.job import RunConfig
from selfforcing.training.checkpoint_store import (
    CHECKPOINT_DIR,
    COMPLETE,
    MANIFEST,
    Checkpoint,
    CheckpointError,
    CheckpointStore,
)
from selfforcing.training.run_storage import RunStorage, ensure_local
from selfforcing.training.storage_uri import child_uri, local_mirror, redact


def _storage(tmp: Path, local: str = "local", name: str = "run") -> RunStorage:
    run = RunConfig(name=name, storage_path=f"file://{tmp / 'remote'}", local_dir=str(tmp / local))
    return RunStorage.for_run(run, check=True)


def _store(storage: RunStorage, num_to_keep: int = 3) -> CheckpointStore:
    return CheckpointStore(storage.local / CHECKPOINT_DIR, num_to_keep)


def _commit(storage: RunStorage, step: int, num_to_keep: int = 3) -> Checkpoint:
    """A checkpoint committed locally, then pushed (as rank 0 does)."""
    store = _store(storage, num_to_keep)
    staging = store.stage(step)
    (staging / "generator.safetensors").write_bytes(bytes(range(256)) * (40 + step))
    (staging / "nested").mkdir()
    (staging / "nested" / "state.json").write_text(f'{{"step": {step}}}')
    return storage.push_checkpoint(store.commit(staging, step), num_to_keep)


def _remote(tmp: Path, name: str = "run") -> Path:
    return tmp / "remote" / name


def test_uris_keep_their_options_and_never_put_a_password_on_disk(tmp_path):
    uri = "s3://key:secret@bucket/runs?region=eu-west-1&endpoint_override=minio:9000"
    assert child_uri(uri, "run", "checkpoints") == (
        "s3://key:secret@bucket/runs/run/checkpoints?region=eu-west-1&endpoint_override=minio:9000")
    assert child_uri("file:///data/runs/", "run") == "file:///data/runs/run"
    assert local_mirror(tmp_path, uri) == tmp_path / "s3" / "bucket" / "runs"
    assert local_mirror(tmp_path, "abfs://box@acct.dfs.core.windows.net/runs") == (
        tmp_path / "abfs" / "box@acct.dfs.core.windows.net" / "runs")
    assert "secret" not in redact(uri) and redact("gs://bucket/runs") == "gs://bucket/runs"


def test_records_round_trip_and_mirror_removals(tmp_path):
    a = _storage(tmp_path, "node_a")
    assert a.is_remote and a.local == local_mirror(tmp_path / "node_a", f"file://{tmp_path / 'remote'}") / "run"
    a.local.mkdir(parents=True)
    (a.local / "summary.json").write_text('{"finished": true}')
    (a.local / "final" / "model").mkdir(parents=True)
    (a.local / "final" / "model" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    a.push("summary.json", "final", "metrics.jsonl")  # metrics.jsonl exists nowhere: nothing happens
    assert (_remote(tmp_path) / "final" / "model" / "weights.bin").read_bytes() == b"\x00\x01" * 1000

    b = _storage(tmp_path, "node_b")  # another node: an empty local folder
    b.pull("summary.json", "final", "metrics.jsonl")
    assert (b.local / "summary.json").read_text() == '{"finished": true}'
    assert (b.local / "final" / "model" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert not (b.local / "metrics.jsonl").exists()

    (a.local / "summary.json").unlink()  # a fresh attempt forgets the summary: so does the remote
    a.push("summary.json")
    assert not (_remote(tmp_path) / "summary.json").exists()
    b.pull("summary.json")
    assert not (b.local / "summary.json").exists()


def test_a_checkpoint_round_trips_and_its_mark_is_uploaded_last(tmp_path):
    a = _storage(tmp_path, "node_a")
    written: list[str] = []
    fs = a.fs

    class Recording:  # the real filesystem, with the order of its uploads noted
        def __getattr__(self, name):
            return getattr(fs, name)

        def open_output_stream(self, path, *args, **kwargs):
            written.append(path)
            return fs.open_output_stream(path, *args, **kwargs)

    a.fs = Recording()
    saved = _commit(a, 2)
    assert saved.source == child_uri(f"file://{tmp_path / 'remote'}", "run", CHECKPOINT_DIR, "step_00000002")
    assert [Path(p).name for p in written[-2:]] == [MANIFEST, COMPLETE] and len(written) == 4

    b = _storage(tmp_path, "node_b")
    got = b.fetch_latest(_store(b))
    assert got.step == 2 and got.path == b.local / CHECKPOINT_DIR / "step_00000002" and got.source == saved.source
    for f in saved.path.rglob("*"):
        if f.is_file():
            assert (got.path / f.relative_to(saved.path)).read_bytes() == f.read_bytes()
    assert not list(got.path.parent.glob(".staging-*"))


def test_an_upload_cut_short_is_skipped_for_the_previous_checkpoint(tmp_path, caplog):
    a = _storage(tmp_path, "node_a")
    _commit(a, 2)
    fs = a.fs

    class Crashing:  # the node dies when the manifest is about to be uploaded
        def __getattr__(self, name):
            return getattr(fs, name)

        def open_output_stream(self, path, *args, **kwargs):
            if path.endswith(MANIFEST):
                raise OSError("node lost")
            return fs.open_output_stream(path, *args, **kwargs)

    a.fs = Crashing()
    with pytest.raises(OSError, match="node lost"):
        _commit(a, 4)
    assert (_remote(tmp_path) / CHECKPOINT_DIR / "step_00000004" / "generator.safetensors").exists()
    b = _storage(tmp_path, "node_b")
    with caplog.at_level(logging.WARNING):
        assert b.fetch_latest(_store(b)).step == 2
    assert f"{b.checkpoint_uri('step_00000004')} has no {COMPLETE} mark" in caplog.text
    # the node that crashed restarts: its local step 4 never reached the remote, so it is dropped
    a.fs = fs
    assert a.fetch_latest(_store(a)).step == 2 and not (a.local / CHECKPOINT_DIR / "step_00000004").exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_corrupted_remote_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, damage):
    a = _storage(tmp_path, "node_a")
    _commit(a, 2)
    _commit(a, 4)
    f = _remote(tmp_path) / CHECKPOINT_DIR / "step_00000004" / "generator.safetensors"
    data = bytearray(f.read_bytes())
    if damage == "truncated":
        data = data[:100]
    else:
        data[10] ^= 0xFF
    f.write_bytes(bytes(data))
    b = _storage(tmp_path, "node_b")
    with caplog.at_level(logging.WARNING):
        got = b.fetch_latest(_store(b))
    assert got.step == 2
    assert b.checkpoint_uri("step_00000004") in caplog.text
    assert ("bytes" if damage == "truncated" else "sha256") in caplog.text
    assert not (b.local / CHECKPOINT_DIR / "step_00000004").exists()  # a bad download never lands
    # node a still holds an intact copy of step 4: it is used only while the remote folder is whole (the
    # other nodes download from there); a remote file of the wrong size sends node a back to step 2 too
    assert a.fetch_latest(_store(a)).step == (2 if damage == "truncated" else 4)


def test_remote_checkpoints_are_pruned(tmp_path):
    a = _storage(tmp_path, "node_a")
    for step in (2, 4):
        _commit(a, step, num_to_keep=2)
    orphan = _remote(tmp_path) / CHECKPOINT_DIR / "step_00000003"  # an unmarked folder older than the newest
    orphan.mkdir()
    (orphan / "generator.safetensors").write_bytes(b"half")
    _commit(a, 6, num_to_keep=2)
    assert [s for s, _, marked in a.remote_checkpoints() if marked] == [4, 6]
    assert sorted(p.name for p in (_remote(tmp_path) / CHECKPOINT_DIR).iterdir()) == ["step_00000004", "step_00000006"]
    assert a.latest_location(_store(a)) == (a.checkpoint_uri("step_00000006"), 6)


def test_a_process_without_the_checkpoint_downloads_it(tmp_path):
    a = _storage(tmp_path, "node_a")
    saved = _commit(a, 2)
    elsewhere = Checkpoint(tmp_path / "node_b" / "step_00000002", 2, saved.source)
    got = ensure_local(elsewhere)  # a scoring actor or generator rank on another node
    assert got.path == elsewhere.path and (got.path / COMPLETE).exists()
    assert (got.path / "nested" / "state.json").read_text() == '{"step": 2}'
    shutil.rmtree(_remote(tmp_path))  # a folder already here is used as it is: no remote access
    assert ensure_local(elsewhere).path == elsewhere.path
    with pytest.raises(CheckpointError, match="not on this node and has no remote copy"):
        ensure_local(Checkpoint(tmp_path / "nowhere", 2))


def test_a_local_storage_path_is_untouched(tmp_path):
    storage = RunStorage.for_run(RunConfig(name="run", storage_path=str(tmp_path / "runs")))
    assert not storage.is_remote and storage.local == (tmp_path / "runs" / "run").resolve()
    storage.push("summary.json")
    storage.pull("summary.json")
    assert not storage.local.exists()
    assert storage.ray_train_storage() == (str((tmp_path / "runs" / "ray_train").resolve()), None)


def test_bad_storage_uris_fail_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"run.storage_path = 'nosuchfs://bucket/x': pyarrow.fs cannot open it"):
        RunStorage.for_run(RunConfig(name="run", storage_path="nosuchfs://bucket/x"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="run.storage_path: .* is a file"):
        RunStorage.for_run(RunConfig(name="afile", storage_path=f"file://{tmp_path}"), check=True)
    # nothing listens on port 9: the one metadata request fails, naming the field (a few seconds of retries)
    unreachable = "s3://bucket/runs?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"
    with pytest.raises(ConfigError, match="run.storage_path: cannot reach"):
        RunStorage.for_run(RunConfig(name="run", storage_path=unreachable), check=True)


def test_mock_filesystem_paths_without_a_root(tmp_path):
    """A filesystem whose root is '' (pyarrow's in-memory mock): the same checkpoint round trip."""
    fs, root = pafs.FileSystem.from_uri("mock://")
    a = RunStorage(tmp_path / "a", fs, root, "run", "mock://")
    saved = _commit(a, 2)
    assert fs.get_file_info(f"run/{CHECKPOINT_DIR}/step_00000002/{COMPLETE}").type == pafs.FileType.File
    b = RunStorage(tmp_path / "b", fs, root, "run", "mock://")
    assert b.fetch_latest(_store(b)).step == 2
    assert (b.local / CHECKPOINT_DIR / "step_00000002" / MANIFEST).read_bytes() == (saved.path / MANIFEST).read_bytes()


# ---------------------------------------------------------------------- a whole run on a URI storage
CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"


def _dmd_job(tmp: Path, name: str, storage: str, *overrides: str):
    from selfforcing.config.job import load_job_config
    from selfforcing.training.job_config import SelfForcingJobConfig

    return load_job_config(SelfForcingJobConfig, CONFIGS / "tiny_dmd.yaml", [
        f"run.name={name}", f"run.storage_path={storage}", f"run.local_dir={tmp / 'node'}",
        f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", "logging.sample_video=false",
        "scaling.num_workers=1", "scaling.gradient_accumulation_steps=2", "training.max_steps=4",
        "training.generator_optim.lr=1e-3", *overrides,
    ])


def test_a_uri_run_resumed_on_a_new_node_equals_an_uninterrupted_run(tmp_path, capsys):
    """Self Forcing in one process on a file:// storage: stopped after 2 of 4 steps, its local folder
    deleted (the next attempt runs on a new node), run again: the remote checkpoint, records and MLflow run
    continue, and the weights equal a run on a local path that never stopped. Run once more on yet another
    empty node, the finished command only reports (with the exported model fetched)."""
    import json

    import torch

    from selfforcing.training.loop import ATTEMPTS_FILE, FINAL_DIR
    from selfforcing.training.single_process import run_single_process

    def final(outcome):
        return {n: torch.load(outcome.output_dir / FINAL_DIR / f"{n}.pt") for n in ("generator", "ema", "scoring")}

    reference = run_single_process(_dmd_job(tmp_path, "local", str(tmp_path / "runs")), quiet=True)
    uri = f"file://{tmp_path / 'bucket'}/runs"
    job = _dmd_job(tmp_path, "uri", uri)
    first = run_single_process(job, max_steps=2, track=True, quiet=True)
    assert first.steps == 2 and first.output_dir.is_relative_to(tmp_path / "node")
    remote = tmp_path / "bucket" / "runs" / "uri"
    assert (remote / CHECKPOINT_DIR / "step_00000002" / COMPLETE).exists()

    shutil.rmtree(tmp_path / "node")
    resumed = run_single_process(job, track=True, quiet=True)
    attempts = [json.loads(line) for line in (resumed.output_dir / ATTEMPTS_FILE).read_text().splitlines()]
    assert resumed.steps == 4 and [a["resumed_from"] for a in attempts] == [None, 2]
    assert resumed.run_id == first.run_id  # run.json came back from the remote folder
    a, b = final(reference), final(resumed)
    for name in a:
        assert max(float((a[name][k] - b[name][k]).abs().max()) for k in a[name]) < 1e-6, name
    assert json.loads((remote / "summary.json").read_text())["steps"] == 4
    assert (remote / CHECKPOINT_DIR / "step_00000004" / COMPLETE).exists()

    shutil.rmtree(tmp_path / "node")
    capsys.readouterr()
    again = run_single_process(job, track=True)
    assert again.already_finished and again.steps == 4 and again.run_id == first.run_id
    assert "already finished" in capsys.readouterr().out
    assert again.model_dir == again.output_dir / FINAL_DIR / "model" and (again.model_dir / "config.json").exists()
    assert not (again.output_dir / CHECKPOINT_DIR).exists()  # reporting downloads no checkpoint


def test_a_bad_storage_uri_fails_before_ray_starts(tmp_path):
    import ray

    from selfforcing.training.distributed.launch import run_training

    started = ray.is_initialized()
    with pytest.raises(ConfigError, match=r"run.storage_path = 'nosuchfs://bucket/runs'"):
        run_training(_dmd_job(tmp_path, "bad", "nosuchfs://bucket/runs"))
    assert ray.is_initialized() == started
