"""Parquet datasets: exact round trips of every kind, clear errors, and the toy-world writer."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from selfforcing.data import parquet
from selfforcing.data.toyworld import (
    PixelUnshuffleLatents,
    ToyWorldConfig,
    read_toyworld_videos,
    render,
    sample_scenes,
    write_toyworld_dataset,
)


def test_prompts_round_trip_with_optional_negatives_and_extra_columns(tmp_path):
    path = parquet.write_prompts(
        tmp_path / "p.parquet", ["a cat", "ein Hund, 走る"], ids=["x", "y"],
        negative_prompts=[None, "blurry"], extra={"source": ["vidprom", "mine"], "weight": [0.5, 2.0]},
    )
    got = parquet.read_prompts(path)
    assert (got.ids, got.prompts, got.negative_prompts) == (["x", "y"], ["a cat", "ein Hund, 走る"], [None, "blurry"])
    assert got.extra == {"source": ["vidprom", "mine"], "weight": [0.5, 2.0]}
    assert parquet.read_kind(path) == "prompts"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_latents_round_trip_bit_exactly(tmp_path, dtype):
    g = torch.Generator().manual_seed(0)
    latents = [torch.randn(3, 4, 5, 6, generator=g).to(dtype), torch.randn(6, 4, 5, 6, generator=g).to(dtype)]
    path = parquet.write_latents(tmp_path / "l.parquet", ["one", "two"], latents)
    got = parquet.read_latents(path)
    assert got.prompts == ["one", "two"] and got.ids == ["00000000", "00000001"]
    for a, b in zip(latents, got.latents, strict=True):
        assert b.dtype == dtype and b.shape == a.shape
        assert torch.equal(a.view(torch.int16) if dtype == torch.bfloat16 else a,
                           b.view(torch.int16) if dtype == torch.bfloat16 else b)
    with pytest.raises(ValueError, match="different shapes"):
        got.stack()


def test_videos_round_trip_exactly(tmp_path):
    videos = np.random.default_rng(0).integers(0, 256, (3, 4, 8, 6, 3), dtype=np.uint8)
    path = parquet.write_videos(tmp_path / "v.parquet", ["a", "b", "c"], videos, fps=8)
    got = parquet.read_videos(path)
    assert np.array_equal(got.stack(), videos)
    assert got.fps == [8.0, 8.0, 8.0]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="column 'negative_prompt' has 1 values; expected 2"):
        parquet.write_prompts(tmp_path / "x.parquet", ["a", "b"], negative_prompts=["n"])
    with pytest.raises(ValueError, match="clash"):
        parquet.write_prompts(tmp_path / "x.parquet", ["a"], extra={"prompt": ["b"]})
    with pytest.raises(ValueError, match=r"must be uint8 \[T, H, W, 3\]"):
        parquet.write_videos(tmp_path / "x.parquet", ["a"], [np.zeros((2, 4, 4, 3), np.float32)])
    path = parquet.write_prompts(tmp_path / "p.parquet", ["a"])
    with pytest.raises(ValueError, match="holds a .prompts. dataset \\(schema version 1\\); expected .latents. version 1"):
        parquet.read_latents(path)
    pq.write_table(pq.read_table(path).drop_columns(["prompt"]).replace_schema_metadata(None),
                   tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match=r"lacks the prompts columns \['prompt'\]"):
        parquet.read_prompts(tmp_path / "bare.parquet")


def test_toyworld_videos_dataset_is_deterministic_and_carries_its_scenes(tmp_path):
    config = ToyWorldConfig()
    a = write_toyworld_dataset(tmp_path / "a.parquet", 12, config, seed=3)
    b = write_toyworld_dataset(tmp_path / "b.parquet", 12, config, seed=3)
    videos, scenes = read_toyworld_videos(a, config)
    expected = sample_scenes(12, np.random.default_rng(3), config)
    assert scenes.captions() == expected.captions()
    assert np.array_equal(scenes.start, expected.start)
    assert np.array_equal(videos, render(expected, config.num_frames))
    assert np.array_equal(read_toyworld_videos(b, config)[0], videos)
    assert parquet.read_videos(a).prompts == expected.captions()


def test_toyworld_latents_and_prompts_datasets(tmp_path):
    config = ToyWorldConfig()
    lat = parquet.read_latents(write_toyworld_dataset(tmp_path / "l.parquet", 5, config, 1, kind="latents"))
    videos, _ = read_toyworld_videos(write_toyworld_dataset(tmp_path / "v.parquet", 5, config, 1), config)
    z = lat.stack()
    assert z.shape == (5, 12, 12, 5, 5)
    assert np.array_equal(PixelUnshuffleLatents(2, config.latent_scale).decode_uint8(z), videos)
    assert 0.5 < float(z.std()) < 2.0  # the world's latent_scale makes them ~unit variance
    prompts = parquet.read_prompts(write_toyworld_dataset(tmp_path / "p.parquet", 5, config, 1, kind="prompts"))
    assert prompts.prompts == lat.prompts and set(prompts.extra) >= {"colour", "direction", "start_row"}
    with pytest.raises(ValueError, match="unknown dataset kind"):
        write_toyworld_dataset(tmp_path / "x.parquet", 1, config, kind="mp4")  # type: ignore[arg-type]
