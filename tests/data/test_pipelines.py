"""The data jobs' library, in one process (no Ray): prompt sources, the encoder and teacher workers the
actor pools run, the plans the drivers make, and the clear errors of bad inputs."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from selfforcing.config.job import load_job_config
from selfforcing.data import parquet
from selfforcing.data.batches import ode_batch
from selfforcing.data.embeddings import read_embeddings, write_embeddings
from selfforcing.data.pipelines import (
    EncodePromptsJobConfig,
    ODEPairsJobConfig,
    pair_seed,
    read_prompt_source,
)
from selfforcing.data.pipelines.encode_prompts import PromptEncoder, plan_encode
from selfforcing.data.pipelines.ode_pairs import (
    ODEShardActor,
    TeacherSampling,
    generator_timesteps,
    plan_ode_pairs,
)
from selfforcing.data.trajectories import ode_table
from selfforcing.diffusion import FlowMatchSchedule
from selfforcing.forcing import generate_ode_pairs
from selfforcing.forcing.ode_init import ODEPairs
from selfforcing.models.factory import build_dit, save_generator
from selfforcing.models.text_encoder import TextEncoder
from selfforcing.tracking import register_generator

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"
PROMPTS = ["a red car", "a cat sitting on a chair", "two dogs", "snow falling on a quiet forest", "a bird"]


def test_pair_seeds_are_pure_distinct_and_fit_int64():
    seeds = {(s, i): pair_seed(s, i) for s in range(3) for i in range(3000)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2**63 for v in seeds.values())
    assert pair_seed(1, 17) == seeds[(1, 17)]


def test_prompt_sources_text_file_and_parquet_splits(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("  a red car \n\n a cat\r\n\ttwo dogs\n\n", encoding="utf-8")
    got = read_prompt_source(text)
    assert got.prompts == ["a red car", "a cat", "two dogs"] and got.ids == ["00000000", "00000001", "00000002"]
    with pytest.raises(ValueError, match="split='val' given but .* has no split column"):
        read_prompt_source(text, "val")
    pq_path = parquet.write_prompts(tmp_path / "p.parquet", ["x", "y", "z"], splits=["train", "val", "val"])
    assert read_prompt_source(pq_path, "val").prompts == ["y", "z"]
    with pytest.raises(FileNotFoundError, match="no such prompt file"):
        read_prompt_source(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompt_source(tmp_path / "empty.txt")


def encode_config(tmp_path, *overrides: str) -> EncodePromptsJobConfig:
    return load_job_config(EncodePromptsJobConfig, CONFIGS / "tiny_encode_prompts.yaml",
                           [f"output={tmp_path / 'emb'}", *overrides])


def test_prompt_encoder_rows_equal_the_text_encoder_and_negatives_are_per_row(tmp_path, cfg):
    source = parquet.write_prompts(tmp_path / "p.parquet", PROMPTS[:3], negative_prompts=[None, "blurry", None])
    config = encode_config(tmp_path, f"input={source}", "negative_prompt=ugly", "pool.batch_size=2")
    plan = plan_encode(config)
    assert plan.negative_prompts == ["ugly", "blurry", "ugly"] and [list(r) for r in plan.shards] == [[0, 1, 2]]
    task = plan.task(0)
    table = PromptEncoder.from_job(config).table(task["ids"], task["prompts"], task["negative_prompts"],
                                                 task["splits"])
    reference = TextEncoder.from_config(cfg.text_encoder)  # what every other part of the platform builds
    got = read_embeddings(write_embeddings_table(tmp_path / "e.parquet", table))
    assert torch.equal(got.text, reference.encode(PROMPTS[:3]))
    assert torch.equal(got.negative_text, reference.encode(["ugly", "blurry", "ugly"]))
    # The fingerprint follows the content, not the pool.
    assert plan_encode(encode_config(tmp_path, f"input={source}", "negative_prompt=ugly", "pool.size=4")
                       ).fingerprint == plan.fingerprint
    assert plan_encode(encode_config(tmp_path, f"input={source}")).fingerprint != plan.fingerprint


def write_embeddings_table(path: Path, table) -> Path:
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def embeddings_dir(tmp_path_factory, cfg) -> Path:
    """Five prompts with negative embeddings, in two files (3 + 2 rows) of a plain directory."""
    root = tmp_path_factory.mktemp("embeddings")
    encoder = TextEncoder.from_config(cfg.text_encoder)
    text, negative = encoder.encode(PROMPTS), encoder.encode([""])[0]
    for name, rows in (("a.parquet", slice(0, 3)), ("b.parquet", slice(3, 5))):
        ids = [f"p{i}" for i in range(5)][rows]
        write_embeddings(root / name, PROMPTS[rows], text[rows], ids=ids, negative_prompts=[""] * len(ids),
                         negative_embeddings=[negative] * len(ids))
    return root


def ode_config(tmp_path, embeddings: Path, *overrides: str) -> ODEPairsJobConfig:
    return load_job_config(ODEPairsJobConfig, CONFIGS / "tiny_ode_pairs.yaml",
                           [f"embeddings={embeddings}", f"output={tmp_path / 'ode'}", *overrides])


def test_ode_plan_covers_every_pair_once_with_pure_seeds_and_wrapping_prompts(tmp_path, embeddings_dir):
    plan = plan_ode_pairs(ode_config(tmp_path, embeddings_dir, "num_pairs=12", "shard_size=5", "seed=3"))
    pairs = [p for s in range(len(plan.shards)) for p in plan.task(s)["pairs"]]
    assert [p["pair"] for p in pairs] == list(range(12)) and len(plan.shards) == 3
    assert [p["seed"] for p in pairs] == [pair_seed(3, i) for i in range(12)]
    assert [p["prompt_id"] for p in pairs] == [f"p{i % 5}" for i in range(12)]
    assert {Path(p["file"]).name for p in pairs} == {"a.parquet", "b.parquet"}
    same = plan_ode_pairs(ode_config(tmp_path, embeddings_dir, "num_pairs=12", "shard_size=5", "seed=3",
                                     "pool.size=7", "pool.batch_size=1"))
    assert same.fingerprint == plan.fingerprint  # the pool does not decide the data
    other = plan_ode_pairs(ode_config(tmp_path, embeddings_dir, "num_pairs=12", "shard_size=5", "seed=4"))
    assert other.fingerprint != plan.fingerprint


def test_ode_plan_fails_clearly_before_any_actor(tmp_path, embeddings_dir, cfg):
    with pytest.raises(ValueError, match="not on the 50-step Euler grid"):
        plan_ode_pairs(ode_config(tmp_path, embeddings_dir, "num_steps=50", "shift=8.0"))
    bare = tmp_path / "bare"
    encoder = TextEncoder.from_config(cfg.text_encoder)
    write_embeddings(bare / "x.parquet", PROMPTS[:2], encoder.encode(PROMPTS[:2]))
    with pytest.raises(ValueError, match=r"guidance_scale=3.0 needs a negative embedding .*\(ids \['00000000', "
                                         r"'00000001'\]"):
        plan_ode_pairs(ode_config(tmp_path, bare))
    plan_ode_pairs(ode_config(tmp_path, bare, "guidance_scale=1.0"))  # no guidance: no negatives needed
    wide = tmp_path / "wide"
    write_embeddings(wide / "x.parquet", ["a"], torch.randn(1, 4, 48))
    with pytest.raises(ValueError, match=r"widths \[48\] .* model.text_dim=32"):
        plan_ode_pairs(ode_config(tmp_path, wide, "guidance_scale=1.0"))


def reference_pairs(config: ODEPairsJobConfig, embeddings: Path, pair_indices: list[int], teacher,
                    batch: int) -> tuple[ODEPairs, torch.Tensor]:
    """The in-process loop: ``generate_ode_pairs`` over the same seeds and prompts, ``batch`` at a time."""
    emb = read_embeddings(embeddings)
    platform = config.platform
    gen = platform.generation
    sampling = TeacherSampling.from_job(config, platform.model.in_dim)
    parts = []
    for a in range(0, len(pair_indices), batch):
        pairs = pair_indices[a : a + batch]
        rows = [i % len(emb) for i in pairs]
        parts.append(generate_ode_pairs(
            teacher, emb.text[rows], sampling.latent_shape, [pair_seed(config.seed, i) for i in pairs],
            FlowMatchSchedule(1000, platform.schedule.shift), generator_timesteps(platform),
            num_steps=gen.teacher_steps, shift=gen.teacher_shift, negative_text=emb.negative_text[rows],
            guidance_scale=gen.guidance_scale,
        ))
    rows = [i % len(emb) for i in pair_indices]
    return ODEPairs(torch.cat([p.states for p in parts]), parts[0].timesteps,
                    torch.cat([p.target for p in parts])), emb.text[rows]


def test_teacher_worker_equals_generate_ode_pairs_from_random_directory_and_registry(
        tmp_path, embeddings_dir, monkeypatch):
    monkeypatch.setenv("SELFFORCING_MODEL_CACHE", str(tmp_path / "cache"))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ode_config(tmp_path, embeddings_dir, "num_pairs=7", "shard_size=7", "pool.batch_size=3")
    teacher = build_dit(base.platform, seed=0)
    expected, text = reference_pairs(base, embeddings_dir, list(range(7)), teacher, batch=3)
    one_batch, _ = reference_pairs(base, embeddings_dir, list(range(7)), teacher, batch=7)
    folder = save_generator(base.platform, teacher, tmp_path / "teacher")
    register_generator(folder, "tiny-teacher", "candidate", tracking)
    for source in ("teacher.uri=null", f"teacher.uri={folder}", "teacher.uri=models:/tiny-teacher@candidate"):
        config = ode_config(tmp_path, embeddings_dir, "num_pairs=7", "shard_size=7", "pool.batch_size=3",
                            f"tracking.tracking_uri={tracking}", source)
        plan = plan_ode_pairs(config)
        actor = ODEShardActor(str(plan.output), config, plan.teacher_path, plan.teacher_platform)
        got = ode_batch(actor.compute(plan.task(0)))
        assert torch.equal(got.states, expected.states) and torch.equal(got.target, expected.target)
        assert torch.equal(got.timesteps, expected.timesteps) and torch.equal(got.text, text)
        # Another batch size changes only float rounding (matmuls of other shapes).
        torch.testing.assert_close(got.target, one_batch.target, rtol=1e-5, atol=1e-6)
        assert got.seeds.tolist() == [pair_seed(0, i) for i in range(7)]
    assert plan.fingerprint["teacher"]["version"] == "1"


def test_ode_table_rejects_mismatched_lengths():
    pairs = ODEPairs(torch.zeros(2, 4, 1, 1, 1, 1), torch.zeros(4), torch.zeros(2, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="seeds has 1 entries for 2 pairs"):
        ode_table(pairs, pair_indices=[0, 1], seeds=[0], prompt_ids=["a", "b"], prompts=["a", "b"],
                  text=torch.zeros(2, 3, 4))
