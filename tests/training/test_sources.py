"""Training data as pure functions of (step, sample index): the order over a dataset, the embeddings and
latents datasets read by index, and the toy world's seeded scenes."""

from __future__ import annotations

import pytest
import torch

from selfforcing.data.embeddings import write_embeddings
from selfforcing.data.parquet import write_latents
from selfforcing.data.toyworld import ToyWorldConfig, scenes_from_seeds
from selfforcing.training.batches import EmbeddingsSource, LatentsSource, SampleOrder


def test_sample_order_visits_every_item_once_per_pass():
    order = SampleOrder(n=10, batch_size=4, seed=3)
    seen = [order.index(step, i) for step in range(5) for i in range(4)]  # 20 samples = 2 passes
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # a fresh permutation per pass
    again = SampleOrder(n=10, batch_size=4, seed=3)
    assert [again.index(3, 2), again.index(0, 1)] == [seen[14], seen[1]]  # a pure function of (step, index)
    other = SampleOrder(n=10, batch_size=4, seed=4)
    assert [other.index(step, i) for step in range(3) for i in range(4)][:10] != seen[:10]  # another seed


def test_toy_scenes_depend_on_their_own_seed_only():
    world = ToyWorldConfig()
    a = scenes_from_seeds([11, 22, 33], world)
    b = scenes_from_seeds([33, 22], world)
    assert a[2] == b[0] and a[1] == b[1]
    many = scenes_from_seeds(list(range(6000)), world)
    counts = torch.bincount(torch.from_numpy(many.direction), minlength=len(world.directions))
    assert counts.min() > 1300  # uniform over the 4 directions (1500 each)


@pytest.fixture
def embeddings(tmp_path, tiny_config):
    g = torch.Generator().manual_seed(0)
    m = tiny_config.model
    text = torch.randn(5, m.text_len, m.text_dim, generator=g)
    text[:, 9:] = 0  # zero padding, stored trimmed
    negative = torch.randn(5, m.text_len, m.text_dim, generator=g)
    prompts = [f"p{i}" for i in range(5)]
    write_embeddings(tmp_path / "emb.parquet", prompts, text, negative_prompts=[""] * 5,
                     negative_embeddings=negative)
    write_embeddings(tmp_path / "bare.parquet", prompts, text)
    return tmp_path, prompts, text, negative


def test_embeddings_source_reads_the_ordered_rows(embeddings, tiny_config):
    folder, _, text, negative = embeddings
    source = EmbeddingsSource(tiny_config, str(folder / "emb.parquet"), batch_size=4, seed=1)
    batch = source.batch(3, [1, 3])
    rows = [source.order.index(3, i) for i in (1, 3)]
    assert torch.equal(batch.text, text[rows]) and torch.equal(batch.negative_text, negative[rows])
    assert batch.sample_ids == (1, 3) and batch.real_latents is None
    with pytest.raises(ValueError, match="5 of 5 rows .* have no negative embedding"):
        EmbeddingsSource(tiny_config, str(folder / "bare.parquet"), 4, require_negative=True)


def test_latents_source_joins_each_video_with_its_prompts_embedding(embeddings, tiny_config):
    folder, prompts, text, negative = embeddings
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(3, 6, 4, 4, 6, generator=g)
    video_prompts = [prompts[4], prompts[0], prompts[4]]
    write_latents(folder / "lat.parquet", video_prompts, latents)
    source = LatentsSource(tiny_config, str(folder / "lat.parquet"), str(folder / "emb.parquet"), batch_size=3)
    batch = source.batch(0, [0, 1, 2])
    rows = [source.order.index(0, i) for i in range(3)]
    assert torch.equal(batch.real_latents, latents[rows])
    want = [prompts.index(video_prompts[r]) for r in rows]
    assert torch.equal(batch.text, text[want]) and torch.equal(batch.negative_text, negative[want])
    write_latents(folder / "other.parquet", ["unknown prompt"], latents[:1])
    with pytest.raises(ValueError, match="1 prompts of .* have no embedding"):
        LatentsSource(tiny_config, str(folder / "other.parquet"), str(folder / "emb.parquet"), batch_size=1)
