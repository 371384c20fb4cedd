"""ToyData's batches (caption table on the device) and the caption-sensitivity diagnostic's swaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfforcing.config import load_config
from selfforcing.data.toyworld import DIRECTION_STEPS, parse_caption
from selfforcing.models.factory import build_dit
from selfforcing.recipes.toyworld.evaluate import SWAPS, caption_sensitivity, swapped_scenes
from selfforcing.recipes.toyworld.world import ToyData, world_for


@pytest.fixture(scope="module")
def toy():
    return load_config("toy", None, ["runtime.device=cpu"])


@pytest.fixture(scope="module")
def data(toy):
    return ToyData(toy)


def test_batch_text_is_each_captions_encoding_or_the_negative_prompt(data):
    b = data.batch(64, np.random.default_rng(3), caption_dropout=0.5)
    direct = data.encoder.encode(b.captions)
    negative = data.encoder.encode([data.negative_prompt])[0]
    dropped = [bool(torch.equal(t, negative)) for t in b.text]
    assert 10 < sum(dropped) < 54
    for t, d, kept in zip(b.text, direct, dropped, strict=True):
        assert torch.allclose(t, negative if kept else d, atol=1e-5)
    assert b.captions == b.scenes.captions()
    assert torch.equal(b.latents, data.codec.encode(data.decode(b.latents)))  # latents of rendered frames


def test_same_rng_state_same_batch(data):
    a, b = (data.batch(16, np.random.default_rng(9), 0.1) for _ in range(2))
    assert torch.equal(a.latents, b.latents) and torch.equal(a.text, b.text) and a.captions == b.captions


def test_a_smaller_world_of_the_same_geometry(toy):
    world = world_for(toy).model_copy(update={"directions": ["left", "right"]})
    small = ToyData(toy, world=world)
    assert len(small.captions) == 6 * 2 * 2
    assert {parse_caption(c, world).direction for c in small.batch(32, np.random.default_rng(0)).captions} <= {
        "left", "right"}
    with pytest.raises(ValueError, match="do not match"):
        ToyData(toy, world=world.model_copy(update={"height": 20, "width": 20}))


def test_swaps_change_one_part_of_the_caption(data):
    scenes = data.batch(32, np.random.default_rng(1)).scenes
    steps = {d: np.array(DIRECTION_STEPS[d]) for d in data.world.directions}
    opposite, axis = swapped_scenes(scenes, "opposite"), swapped_scenes(scenes, "axis")
    for i in range(len(scenes)):
        s, o, a = scenes[i], opposite[i], axis[i]
        assert (steps[o.direction] == -steps[s.direction]).all() and o.speed == s.speed
        assert (steps[a.direction] == steps[s.direction][::-1]).all() and a.colour == s.colour
    assert (swapped_scenes(scenes, "speed").speed != scenes.speed).all()
    assert (swapped_scenes(scenes, "colour").colour != scenes.colour).all()
    with pytest.raises(ValueError, match="unknown swap 'shape'"):
        swapped_scenes(scenes, "shape")


def test_caption_sensitivity_of_the_exact_denoiser_and_of_a_caption_blind_model(toy, data):
    """The exact denoiser depends on every part of the caption at t=950; an untrained model whose text
    projection is zeroed does not depend on the caption at all."""
    model = build_dit(toy, "cpu", seed=0).eval()
    with torch.no_grad():
        for p in model.text_embedding.parameters():
            p.zero_()
    m = caption_sensitivity(model, toy, data, timesteps=(950,), n=8)
    for kind in SWAPS:
        assert m[f"swap_{kind}_t950"] == 0.0
        assert m[f"swap_oracle_{kind}_t950"] > 0.05
