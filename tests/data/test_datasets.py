"""Versioned dataset kinds: exact round trips of embeddings and ODE trajectories, the batch decoders a
training worker uses, sharded directories (atomic shards, marks, manifest) and the schema errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from selfforcing.data import parquet, shards
from selfforcing.data.batches import embedding_batch, ode_batch, to_tensors
from selfforcing.data.embeddings import embeddings_table, read_embeddings, write_embeddings
from selfforcing.data.schemas import KIND_KEY, VERSION_KEY, DatasetSchemaError
from selfforcing.data.streaming import checked_files, read_dataset
from selfforcing.data.tensor_bytes import pad_rows, trim_zero_rows
from selfforcing.data.trajectories import ode_table, read_ode_trajectories
from selfforcing.forcing import generate_ode_pairs
from selfforcing.models import WanDiT
from selfforcing.models.text_encoder import TextEncoder


@pytest.fixture(scope="module")
def encoder(cfg) -> TextEncoder:
    return TextEncoder.from_config(cfg.text_encoder)


PROMPTS = ["a red car on a street", "a cat", "two dogs running on the beach at sunset"]


def numpy_format(table: pa.Table) -> dict[str, np.ndarray]:
    """What Ray Data's default "numpy" batch format hands a worker: object arrays per column."""
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def test_trim_then_pad_is_lossless_and_keeps_interior_zero_rows():
    g = torch.Generator().manual_seed(0)
    for n in range(0, 9):
        x = torch.randn(8, 5, generator=g)
        x[n:] = 0
        if n > 2:
            x[1] = 0  # an interior zero row stays
        t = trim_zero_rows(x)
        assert t.shape[0] == max(n, 1)
        assert torch.equal(pad_rows(t, 8), x)


def test_embeddings_round_trip_exactly_stored_without_padding_rows(tmp_path, encoder):
    text = encoder.encode(PROMPTS)  # [3, L, D], zero past each prompt's tokens
    negative = encoder.encode([""])[0]
    path = write_embeddings(tmp_path / "e.parquet", PROMPTS, text, negative_prompts=["", None, ""],
                            negative_embeddings=[negative, None, negative], splits=["train", "train", "val"])
    stored = pq.read_table(path).column("embedding_shape").to_pylist()
    _, mask = encoder.tokenize(PROMPTS)
    assert [s[0] for s in stored] == mask.sum(1).tolist()  # tokens + EOS rows kept, the rest restored
    with pytest.raises(ValueError, match="have no negative embedding while others"):
        read_embeddings(path)
    rows = pq.read_table(path).take([0, 2])
    got = embedding_batch(rows)
    assert torch.equal(got.text, text[[0, 2]]) and torch.equal(got.negative_text, negative.expand(2, -1, -1))
    assert got.splits == ["train", "val"] and got.prompts == [PROMPTS[0], PROMPTS[2]]
    bf16 = embedding_batch(embeddings_table(PROMPTS, text.bfloat16()))
    assert bf16.text.dtype == torch.bfloat16
    # Equal values; padding rows come back as +0.0 where the encoder's masking left -0.0 (same in every op).
    assert torch.equal(bf16.text, text.bfloat16())
    assert bf16.negative_text is None


@pytest.fixture(scope="module")
def pairs_and_text(cfg, schedule, steps, encoder):
    torch.manual_seed(0)
    teacher = WanDiT(cfg.model).eval()
    text = encoder.encode(PROMPTS)
    pairs = generate_ode_pairs(teacher, text, (6, 4, 4, 4), [11, 12, 13], schedule, steps, num_steps=8,
                               negative_text=encoder.encode([""] * 3), guidance_scale=3.0)
    return pairs, text


def test_ode_trajectories_round_trip_exactly_across_shards(tmp_path, pairs_and_text):
    pairs, text = pairs_and_text
    kwargs = dict(pair_indices=[7, 3, 5], seeds=[11, 12, 13], prompt_ids=["a", "b", "c"], prompts=PROMPTS, text=text)
    table = ode_table(pairs, **kwargs)
    ds = shards.ShardedDataset(tmp_path / "ode", "ode_trajectories")
    ds.prepare(2, {"what": "test"})
    ds.write_shard(1, table.slice(0, 1))  # pair 7
    ds.write_shard(0, table.slice(1, 2))  # pairs 3, 5
    got = read_ode_trajectories(tmp_path / "ode")
    order = [1, 2, 0]  # sorted by pair index: 3, 5, 7
    assert got.pair_indices.tolist() == [3, 5, 7] and got.seeds.tolist() == [12, 13, 11]
    assert torch.equal(got.states, pairs.states[order]) and torch.equal(got.target, pairs.target[order])
    assert torch.equal(got.timesteps, pairs.timesteps) and torch.equal(got.text, text[order])
    assert got.states.shape == (3, 4, 6, 4, 4, 4)  # [B, K, F, C, h, w]
    assert got.ids == ["pair-000000003", "pair-000000005", "pair-000000007"]


def test_batch_decoders_agree_on_arrow_and_ray_numpy_batches(pairs_and_text):
    pairs, text = pairs_and_text
    table = ode_table(pairs, pair_indices=[0, 1, 2], seeds=[11, 12, 13], prompt_ids=["a", "b", "c"],
                      prompts=PROMPTS, text=text)
    a, b = ode_batch(table), to_tensors(numpy_format(table), "ode_trajectories")
    for name in ("states", "target", "text", "timesteps", "seeds", "pair_indices"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.prompts == b.prompts and a.ids == b.ids
    mixed = pa.concat_tables([table.slice(0, 1), ode_table(
        pairs, pair_indices=[5, 6, 7], seeds=[1, 2, 3], prompt_ids=["a", "b", "c"], prompts=PROMPTS, text=text,
    ).set_column(table.schema.get_field_index("timesteps"), "timesteps",
                 pa.array([[1.0, 2.0, 3.0, 4.0]] * 3, pa.list_(pa.float32())))])
    with pytest.raises(ValueError, match="different timestep grids"):
        ode_batch(mixed)
    with pytest.raises(ValueError, match="no tensor batch for dataset kind 'videos'"):
        to_tensors(table, "videos")


def _with_metadata(path, out, meta):
    pq.write_table(pq.read_table(path).replace_schema_metadata(meta), out)
    return out


def test_a_file_of_another_kind_or_version_fails_naming_file_kind_and_version(tmp_path, encoder):
    path = write_embeddings(tmp_path / "e.parquet", PROMPTS[:1], encoder.encode(PROMPTS[:1]))
    assert pq.read_schema(path).metadata[VERSION_KEY] == b"1"
    with pytest.raises(DatasetSchemaError, match=r"e\.parquet: holds a 'embeddings' dataset \(schema version 1\); "
                                                 r"expected 'ode_trajectories' version 1"):
        read_ode_trajectories(path)
    future = _with_metadata(path, tmp_path / "future.parquet", {KIND_KEY: b"embeddings", VERSION_KEY: b"2"})
    with pytest.raises(DatasetSchemaError, match=r"future\.parquet: holds a 'embeddings' dataset of schema "
                                                 r"version 2, which this code cannot read; expected 'embeddings' version 1"):
        read_embeddings(future)
    with pytest.raises(DatasetSchemaError, match="future.parquet"):  # checked before Ray reads anything
        read_dataset([path, future], "embeddings")
    with pytest.raises(DatasetSchemaError, match="expected 'latents' version 1"):
        checked_files(tmp_path / "e.parquet", "latents")
    # Written by the platform before versions existed: kind only, read as version 1.
    legacy = _with_metadata(path, tmp_path / "legacy.parquet", {KIND_KEY: b"embeddings"})
    assert torch.equal(read_embeddings(legacy).text, read_embeddings(path).text)


def test_prompt_sets_carry_an_optional_split(tmp_path):
    path = parquet.write_prompts(tmp_path / "p.parquet", ["a", "b", "c"], splits=["train", "val", "train"],
                                 negative_prompts=[None, "blurry", None])
    got = parquet.read_prompts(path)
    assert got.splits == ["train", "val", "train"]
    train = got.select("train")
    assert (train.prompts, train.ids, train.negative_prompts) == (["a", "c"], ["00000000", "00000002"], [None, None])
    with pytest.raises(ValueError, match=r"no prompts of split 'test'; splits present: \['train', 'val'\]"):
        got.select("test")
    # A prompt list from elsewhere: no metadata, no optional columns.
    pq.write_table(pa.table({"id": ["x"], "prompt": ["hello"]}), tmp_path / "bare.parquet")
    bare = parquet.read_prompts(tmp_path / "bare.parquet")
    assert bare.prompts == ["hello"] and bare.splits == [None] and bare.negative_prompts == [None]


def test_sharded_dataset_marks_manifest_and_resumption_state(tmp_path):
    root = tmp_path / "ds"
    ds = shards.ShardedDataset(root, "prompts")
    ds.prepare(3, {"seed": 1, "steps": (1, 2)})
    table = parquet.prompts_table(["a", "b"])
    assert ds.missing() == [0, 1, 2]
    ds.write_shard(2, table)
    (root / shards.shard_file(0)).write_bytes(b"renamed but never marked")  # killed before its mark
    (root / ".part-00001.parquet.tmp-dead").write_bytes(b"half written")  # killed mid-write
    assert ds.completed() == [2] and ds.missing() == [0, 1]
    assert json.loads((root / shards.mark_file(2)).read_text())["rows"] == 2
    with pytest.raises(shards.IncompleteDatasetError, match=r"1 of 3 shards are finished \(missing \[0, 1\]\)"):
        parquet.read_prompts(root)
    ds.prepare(3, {"steps": [1, 2], "seed": 1})  # same fingerprint (tuples as stored): accepted
    assert not (root / ".part-00001.parquet.tmp-dead").exists()  # leftovers of a killed run removed
    with pytest.raises(shards.DatasetMismatchError, match=r"seed: 1 there, 2 now"):
        ds.prepare(3, {"seed": 2, "steps": [1, 2]})
    with pytest.raises(shards.DatasetMismatchError, match=r"num_shards: 3 there, 4 now"):
        ds.prepare(4, {"seed": 1, "steps": [1, 2]})
    ds.write_shard(0, table)
    ds.write_shard(1, parquet.prompts_table(["c"], ids=["z"]))
    assert parquet.read_prompts(root).prompts == ["a", "b", "c", "a", "b"]
    with pytest.raises(IndexError, match="shard 3 outside 0..2"):
        ds.write_shard(3, table)
