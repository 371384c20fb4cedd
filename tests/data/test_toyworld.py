"""The toy world: determinism, whole-cell wrapping motion, captions, and the lossless latent map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from selfforcing.data.toyworld import (
    PixelUnshuffleLatents,
    Scene,
    Scenes,
    ToyWorldConfig,
    caption,
    caption_combinations,
    parse_caption,
    render,
    sample_scenes,
    trajectories,
    vocabulary,
)


def test_default_world_numbers():
    c = ToyWorldConfig()
    assert (c.height, c.width) == (10, 10)
    assert c.grid == (5, 5)
    assert c.latent_frame_shape == (12, 5, 5)
    assert c.patch_size == (1, 1, 1)
    assert c.latent_scale == 5.0
    assert c.tokens_per_frame == 25
    assert (c.num_frames, c.frames_per_chunk, c.eval_num_frames) == (12, 3, 36)


def test_rendering_is_deterministic_for_a_seed():
    a = render(sample_scenes(16, np.random.default_rng(7)), 12)
    b = render(sample_scenes(16, np.random.default_rng(7)), 12)
    c = render(sample_scenes(16, np.random.default_rng(8)), 12)
    assert a.shape == (16, 12, 10, 10, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "config",
    [ToyWorldConfig(), ToyWorldConfig(height=32, width=48, object_cells=2, shapes=["square", "cross", "ring"])],
    ids=["default", "wide-big-shapes"],
)
def test_each_frame_is_the_previous_one_shifted_by_whole_cells_on_a_torus(config):
    scenes = sample_scenes(32, 0, config)
    videos = render(scenes, 6)
    shift = scenes.velocity() * config.cell_size  # pixels per frame, (rows, cols)
    for i in range(len(scenes)):
        for t in range(5):
            rolled = np.roll(videos[i, t], shift=tuple(shift[i]), axis=(0, 1))
            assert np.array_equal(videos[i, t + 1], rolled)
    # the object has the shape's pixel count in every frame, also while wrapping over an edge
    area = (videos != np.array(config.background, dtype=np.uint8)).any(-1).sum(axis=(2, 3))
    assert len(np.unique(area[scenes.shape == 0])) == 1


def test_trajectories_wrap_and_start_at_the_start_cell():
    scenes = sample_scenes(64, 3)
    pos = trajectories(scenes, 40)
    assert np.array_equal(pos[:, 0], scenes.start)
    assert pos.min() >= 0 and pos.max() < 5
    assert np.array_equal(pos[:, 7], (scenes.start + 7 * scenes.velocity()) % 5)


def test_captions_name_the_scene_and_parse_back():
    s = Scene(colour="red", shape="square", direction="left", speed="slowly", start=(0, 0))
    assert caption(s) == "a red square moving left slowly"
    config = ToyWorldConfig(shapes=["square", "cross"])
    everything = caption_combinations(config)
    assert len(everything) == 6 * 2 * 4 * 2 == len(set(everything))
    words = set(vocabulary(config))
    for text in everything:
        assert set(text.split()) <= words
        assert caption(parse_caption(text, config)) == text
    scenes = sample_scenes(10, 1, config)
    assert Scenes.from_list([parse_caption(t, config) for t in scenes.captions()], config).captions() == (
        scenes.captions()
    )


def test_bad_captions_say_what_is_wrong():
    with pytest.raises(ValueError, match="does not have the form"):
        parse_caption("red square going left")
    with pytest.raises(ValueError, match="unknown colour 'purple'"):
        parse_caption("a purple square moving left slowly")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(height=16, width=16, speeds={"slowly": 1, "quickly": 4}), "opposite directions identical"),
        (dict(speeds={"slowly": 1, "quickly": 4}), "look the same"),
        (dict(height=31), "multiple of cell_size"),
        (dict(shapes=["blob"]), "valid shapes are"),
        (dict(colours={"red": (255, 0, 0), "left": (0, 255, 0)}), "appear in two categories"),
        (dict(background=(255, 0, 0)), "equals an object colour"),
    ],
)
def test_invalid_worlds_are_rejected_with_the_reason(overrides, message):
    with pytest.raises((ValidationError, ValueError), match=message):
        ToyWorldConfig(**overrides)


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_latent_map_round_trips_exactly(scale):
    codec = PixelUnshuffleLatents(factor=2, scale=scale)
    videos = render(sample_scenes(8, 0), 12)
    z = codec.encode(videos)
    assert z.shape == (8, 12, 12, 5, 5) and z.dtype == torch.float32
    assert codec.latent_channels == 12
    assert np.array_equal(codec.decode_uint8(z), videos)
    x = torch.from_numpy(videos).float() / 127.5 - 1
    assert torch.allclose(codec.decode(codec.encode(x)), x, atol=1e-5)
    # roughly zero-mean; the object's values are +-scale
    assert abs(z.mean().item()) < 0.1 * scale
    assert 0.5 * scale < z.abs().max().item() <= scale


def test_default_latent_scale_gives_unit_variance_latents():
    config = ToyWorldConfig()
    z = PixelUnshuffleLatents(config.latent_factor, config.latent_scale).encode(render(sample_scenes(256, 1), 12))
    assert 0.8 < z.std().item() < 1.2


def test_one_latent_token_is_one_cell():
    """With the world's patch on the latent, the tokens the object touches are exactly its cells."""
    config = ToyWorldConfig()
    scenes = sample_scenes(16, 5, config)
    videos = render(scenes, 4)
    z = PixelUnshuffleLatents(config.latent_factor).encode(videos)  # [N, T, C, 5, 5]
    bg = PixelUnshuffleLatents(config.latent_factor).encode(
        np.full((1, 1, config.height, config.width, 3), config.background, dtype=np.uint8)
    )
    _, p, q = config.patch_size
    n, t, c, h, w = z.shape
    tokens = (z - bg).abs().reshape(n, t, c, h // p, p, w // q, q).amax(dim=(2, 4, 6)) > 0  # [N, T, 5, 5]
    pos = trajectories(scenes, 4)
    expected = np.zeros((n, t, *config.grid), dtype=bool)
    expected[np.arange(n)[:, None], np.arange(t)[None, :], pos[..., 0], pos[..., 1]] = True
    assert np.array_equal(tokens.numpy(), expected)
