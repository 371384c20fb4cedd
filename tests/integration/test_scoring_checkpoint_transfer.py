"""Scoring actors on a node without the run's folders (a cluster without shared disk): the actor that does
not see the checkpoint folder it should write into returns the files, and they equal what it writes when
it does see it; an actor resuming from a checkpoint its node lacks downloads it from the run's storage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from selfforcing.config.job import load_job_config
from selfforcing.training.checkpoint_store import CheckpointStore
from selfforcing.training.distributed.scoring_actor import ScoringGroup
from selfforcing.training.job_config import SelfForcingJobConfig
from selfforcing.training.run_storage import RunStorage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_scoring_state_reaches_a_folder_the_actor_cannot_see(ray_session, tmp_path):
    job = load_job_config(SelfForcingJobConfig, ROOT / "jobs" / "configs" / "tiny_dmd.yaml", [
        "run.name=transfer", f"run.storage_path=file://{tmp_path / 'bucket'}", f"run.local_dir={tmp_path / 'node'}",
    ])
    group = ScoringGroup(job)
    try:
        seen = tmp_path / "seen"
        seen.mkdir()
        group.save_state(str(seen))  # the actor's node sees it: it writes the files itself
        unseen = tmp_path / "unseen"  # the actor's node lacks it: the files come back through Ray
        group.save_state(str(unseen))
        assert _files(seen) and _files(unseen) == _files(seen)
        (tmp_path / "final").mkdir()
        group.export_network(str(tmp_path / "final" / "scoring.pt"))
        group.export_network(str(tmp_path / "elsewhere" / "scoring.pt"))
        assert (tmp_path / "elsewhere" / "scoring.pt").read_bytes() == (tmp_path / "final" / "scoring.pt").read_bytes()

        # a checkpoint of it on the run's storage, absent from the node: the next group downloads it
        storage = RunStorage.for_run(job.run, check=True)
        store = CheckpointStore(storage.local / "checkpoints")
        staging = store.stage(3)
        group.save_state(str(staging))
        moved = {k: v + 0.5 for k, v in load_file(str(staging / "scoring.safetensors")).items()}  # not the init
        save_file(moved, str(staging / "scoring.safetensors"))
        saved = storage.push_checkpoint(store.commit(staging, 3), num_to_keep=1)
    finally:
        group.shutdown()
    local = saved.path
    shutil.rmtree(tmp_path / "node")
    resumed = ScoringGroup(job, start_step=3, checkpoint=str(local), checkpoint_source=saved.source)
    try:
        assert (local / "COMPLETE").exists()
        again = tmp_path / "again"
        again.mkdir()
        resumed.save_state(str(again))
        restored = load_file(str(again / "scoring.safetensors"))
        assert restored.keys() == moved.keys()
        assert all(torch.equal(restored[k], moved[k]) for k in moved)  # the downloaded weights were loaded
    finally:
        resumed.shutdown()
