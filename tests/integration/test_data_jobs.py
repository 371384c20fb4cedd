"""The data jobs on a real local Ray (2 CPUs), tiny preset: encode_prompts -> ode_pairs, each checked
against the in-process computation, resumed after a stop and after a killed driver, streamed back through
Ray Data the way a Ray Train worker reads its shard, and each leaving an MLflow run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from selfforcing.config.job import load_job_config
from selfforcing.data.batches import ode_batch
from selfforcing.data.embeddings import read_embeddings
from selfforcing.data.pipelines import (
    EncodePromptsJobConfig,
    ODEPairsJobConfig,
    encode_prompts,
    ode_pairs,
    pair_seed,
    read_prompt_source,
)
from selfforcing.data.pipelines.ode_pairs import TeacherSampling, generator_timesteps
from selfforcing.data.shards import ShardedDataset
from selfforcing.data.streaming import read_dataset
from selfforcing.data.trajectories import read_ode_trajectories
from selfforcing.diffusion import FlowMatchSchedule
from selfforcing.forcing import generate_ode_pairs
from selfforcing.models.factory import build_dit
from selfforcing.models.text_encoder import TextEncoder

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "jobs" / "configs"
PROMPT_FILE = REPO / "jobs" / "data" / "tiny_prompts.txt"
POOL = ["pool.size=2", "pool.num_cpus=0.25"]  # two actors beside the driver on the 2-CPU session cluster


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder for the datasets and an MLflow store named by MLFLOW_TRACKING_URI (as a job sees it)."""
    root = tmp_path_factory.mktemp("datajobs")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield root, uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def runs_of(uri: str, job: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("selfforcing-data")
    runs = client.search_runs([exp.experiment_id], f"tags.`selfforcing.job` = '{job}'", order_by=["start_time ASC"])
    return runs


@pytest.fixture(scope="module")
def embeddings(ray_session, store):
    """The encode_prompts job over the tiny prompt list: 8 prompts in shards of 3."""
    root, _ = store
    config = load_job_config(EncodePromptsJobConfig, CONFIGS / "tiny_encode_prompts.yaml",
                             [f"input={PROMPT_FILE}", f"output={root / 'embeddings'}", "shard_size=3", *POOL])
    return config, encode_prompts(config)


def test_encode_prompts_job_equals_the_text_encoder_in_process(embeddings, store):
    config, result = embeddings
    assert result.complete and result.computed == [0, 1, 2] and result.skipped == []
    prompts = read_prompt_source(PROMPT_FILE).prompts
    encoder = TextEncoder.from_config(config.platform.text_encoder)
    # Same batches as the job (shards of 3, encoder calls of <= 4 prompts): bit-exact.
    expected = torch.cat([encoder.encode(prompts[a : a + 3]) for a in range(0, len(prompts), 3)])
    got = read_embeddings(result.output)
    assert got.prompts == prompts and got.ids == [f"{i:08d}" for i in range(len(prompts))]
    assert torch.equal(got.text, expected)
    assert torch.equal(got.negative_text, encoder.encode([""]).expand(len(prompts), -1, -1))
    run = runs_of(store[1], "encode_prompts")[-1]
    assert run.info.status == "FINISHED" and run.info.run_name == config.run.name
    assert run.data.metrics["shards_computed"] == 3 and run.data.metrics["prompts_done"] == 8
    assert run.data.params["shard_size"] == "3" and run.data.tags["selfforcing.preset"] == "tiny"
    assert run.data.tags["selfforcing.output"] == str(result.output)


def reference_trajectories(config: ODEPairsJobConfig, embeddings_path: Path, chunks: list[list[int]]):
    """The in-process loop over ``generate_ode_pairs``: the same teacher (seed 0), seeds and prompts,
    called on the same chunks of pairs as the job's actors (bit-exact then)."""
    emb = read_embeddings(embeddings_path)
    platform, gen = config.platform, config.platform.generation
    teacher = build_dit(platform, seed=config.teacher.seed)
    shape = TeacherSampling.from_job(config, platform.model.in_dim).latent_shape
    states, targets = [], []
    for pairs in chunks:
        rows = [i % len(emb) for i in pairs]
        out = generate_ode_pairs(
            teacher, emb.text[rows], shape, [pair_seed(config.seed, i) for i in pairs],
            FlowMatchSchedule(1000, platform.schedule.shift), generator_timesteps(platform),
            num_steps=gen.teacher_steps, shift=gen.teacher_shift, negative_text=emb.negative_text[rows],
            guidance_scale=gen.guidance_scale,
        )
        states.append(out.states)
        targets.append(out.target)
    return torch.cat(states), torch.cat(targets)


def ode_config(store_root: Path, embeddings_path: Path, name: str, *overrides: str) -> ODEPairsJobConfig:
    return load_job_config(ODEPairsJobConfig, CONFIGS / "tiny_ode_pairs.yaml",
                           [f"embeddings={embeddings_path}", f"output={store_root / name}", *POOL, *overrides])


def test_ode_pairs_job_equals_the_in_process_loop_and_resumes_only_missing_shards(embeddings, store):
    root, uri = store
    emb_path = embeddings[1].output
    args = ("num_pairs=10", "shard_size=3", "pool.batch_size=2")
    first = ode_pairs(ode_config(root, emb_path, "ode", *args, "max_shards=2"))
    assert (first.computed, first.skipped, first.remaining) == ([0, 1], [], [2, 3])
    config = ode_config(root, emb_path, "ode", *args)
    second = ode_pairs(config)
    assert (second.computed, second.skipped, second.remaining) == ([2, 3], [0, 1], [])
    assert sorted(s.index for s in second.summaries) == [2, 3]

    got = read_ode_trajectories(second.output)
    chunks = [[0, 1], [2], [3, 4], [5], [6, 7], [8], [9]]  # shards of 3 pairs, teacher calls of <= 2
    states, target = reference_trajectories(config, emb_path, chunks)
    assert got.pair_indices.tolist() == list(range(10))
    assert torch.equal(got.states, states) and torch.equal(got.target, target)
    assert got.states.shape == (10, 4, 6, 4, 4, 6)  # [N, K, F, C, h, w]
    assert got.seeds.tolist() == [pair_seed(0, i) for i in range(10)]
    assert got.prompt_ids == [f"{i % 8:08d}" for i in range(10)]

    runs = runs_of(uri, "ode_pairs")[-2:]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert [r.data.metrics["shards_computed"] for r in runs] == [2, 2]
    assert [r.data.metrics["shards_skipped"] for r in runs] == [0, 2]


def test_training_workers_stream_disjoint_parts_of_the_trajectories(embeddings, store):
    """What ``ray.train.get_dataset_shard(...).iter_batches`` does: Ray Train hands each worker one part
    of ``streaming_split(world_size, equal=True)``; each part is decoded with ``ode_batch``, and together
    the parts are exactly the dataset."""
    output = store[0] / "ode"
    expected = read_ode_trajectories(output)
    parts = read_dataset(output, "ode_trajectories").streaming_split(2, equal=True)
    seen: list[list] = [[], []]

    def consume(rank: int) -> None:
        for batch in parts[rank].iter_batches(batch_size=3):
            seen[rank].append(ode_batch(batch))

    threads = [threading.Thread(target=consume, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    ranks = [[i for b in s for i in b.pair_indices.tolist()] for s in seen]
    assert all(ranks) and not set(ranks[0]) & set(ranks[1])
    batches = [b for s in seen for b in s]
    order = torch.cat([b.pair_indices for b in batches]).argsort()
    assert torch.equal(torch.cat([b.states for b in batches])[order], expected.states)
    assert torch.equal(torch.cat([b.text for b in batches])[order], expected.text)
    assert all(torch.equal(b.timesteps, expected.timesteps) for b in batches)


@pytest.mark.slow
def test_a_killed_driver_leaves_finished_shards_that_a_rerun_skips(embeddings, store):
    import ray

    root, uri = store
    emb_path = embeddings[1].output
    args = ("num_pairs=12", "shard_size=2", "pool.batch_size=2", "pool.size=1")
    out = root / "killed"
    cmd = [sys.executable, str(REPO / "jobs" / "ode_pairs.py"), "--config", str(CONFIGS / "tiny_ode_pairs.yaml"),
           f"embeddings={emb_path}", f"output={out}", *POOL, *args,
           f"ray.address={ray.get_runtime_context().gcs_address}"]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not list(out.glob("part-*.done")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the job ended (rc {proc.returncode}) before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup of any kind: the driver just disappears
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    dataset = ShardedDataset(out, "ode_trajectories")
    done_before = dataset.completed()
    assert 0 < len(done_before) < 6
    config = ode_config(root, emb_path, "killed", *args)
    rerun = ode_pairs(config)
    assert rerun.skipped == done_before
    assert rerun.computed == [i for i in range(6) if i not in done_before] and rerun.complete
    assert not list(out.glob(".*.tmp-*"))
    got = read_ode_trajectories(out)
    states, target = reference_trajectories(config, emb_path, [[a, a + 1] for a in range(0, 12, 2)])
    assert torch.equal(got.states, states) and torch.equal(got.target, target)
