"""Toy-world metrics: exact fits on real videos, and every metric ranking real videos above corrupted ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selfforcing.data.toyworld import ToyWorldConfig, render, sample_scenes, trajectories
from selfforcing.evaluation import (
    analyse_videos,
    evaluate_videos,
    fit_frames,
    fit_trajectory,
    frechet_distance,
)

N, T, F = 96, 12, 3
CONFIG = ToyWorldConfig()


@pytest.fixture(scope="module")
def world():
    """Real videos, an independent real set (reference), and the four corruptions."""
    rng = np.random.default_rng(0)
    scenes, other = sample_scenes(N, 1, CONFIG), sample_scenes(N, 2, CONFIG)
    real, reference = render(scenes, T), render(other, T)
    unit = real.astype(np.float32) / 127.5 - 1
    return {
        "scenes": scenes,
        "other": other,
        "real": real,
        "reference": reference,
        "shuffled": np.stack([v[rng.permutation(T)] for v in real]),
        "frozen": np.repeat(real[:, :1], T, axis=1),
        # halfway along the flow-matching path to noise: x = 0.5 x0 + 0.5 eps
        "noised": 0.5 * unit + 0.5 * rng.standard_normal(unit.shape).astype(np.float32),
    }


@pytest.fixture(scope="module")
def results(world):
    """Metrics of each case against its captions, with the reference set (and its captions) for Fréchet."""
    cases = {
        "real": (world["real"], world["scenes"]),
        "shuffled": (world["shuffled"], world["scenes"]),
        "frozen": (world["frozen"], world["scenes"]),
        "noised": (world["noised"], world["scenes"]),
        "wrong_caption": (world["real"], world["other"].captions()),  # another scene's caption
    }
    return {
        name: evaluate_videos(v, s, F, reference_videos=world["reference"],
                              reference_scenes_or_captions=world["other"])
        for name, (v, s) in cases.items()
    }


def test_fit_recovers_every_parameter_of_real_frames():
    config = ToyWorldConfig(height=32, width=48, object_cells=2, shapes=["square", "cross", "ring"])
    scenes = sample_scenes(40, 4, config)
    fit = fit_frames(render(scenes, 5), config)
    assert np.array_equal(fit.colour, np.repeat(scenes.colour[:, None], 5, 1))
    assert np.array_equal(fit.shape, np.repeat(scenes.shape[:, None], 5, 1))
    assert np.array_equal(fit.position, trajectories(scenes, 5))
    assert np.allclose(fit.fidelity, 1.0) and np.allclose(fit.mse, 0.0, atol=1e-9)


def test_trajectory_fit_recovers_start_and_velocity(world):
    fit = fit_trajectory(trajectories(world["scenes"], T), CONFIG.grid)
    assert np.array_equal(fit.start, world["scenes"].start)
    assert np.array_equal(fit.velocity, world["scenes"].velocity())
    assert np.allclose(fit.distance, 0.0)


def test_real_videos_score_perfectly(results):
    r = results["real"]
    for key in ("fidelity", "colour_agreement", "shape_agreement", "direction_agreement",
                "speed_agreement", "motion_agreement"):
        assert r[key] == pytest.approx(1.0), key
    assert r["trajectory_error"] == pytest.approx(0.0)
    assert r["fit_mse"] == pytest.approx(0.0, abs=1e-9)


def test_fidelity_ranks_real_above_noised(results):
    assert results["real"]["fidelity"] > results["noised"]["fidelity"] + 0.5
    assert results["real"]["fit_mse"] < results["noised"]["fit_mse"]


@pytest.mark.parametrize("key", ["colour_agreement", "direction_agreement", "speed_agreement", "motion_agreement"])
def test_caption_agreement_ranks_real_above_wrong_caption(results, key):
    assert results["real"][key] > results["wrong_caption"][key] + 0.3


@pytest.mark.parametrize("case", ["frozen", "shuffled"])
@pytest.mark.parametrize("key", ["direction_agreement", "speed_agreement", "motion_agreement"])
def test_motion_agreement_ranks_real_above_frozen_and_shuffled(results, case, key):
    assert results["real"][key] > results[case][key] + 0.3


def test_moving_fraction_is_one_for_real_videos_and_zero_for_frozen_ones(results):
    assert results["real"]["moving_fraction"] == pytest.approx(1.0)
    assert results["frozen"]["moving_fraction"] == pytest.approx(0.0)
    assert results["frozen"]["moving_fraction_by_chunk"][1:] == pytest.approx([0.0] * (T // F - 1))


def test_trajectory_error_ranks_real_below_shuffled(results):
    assert results["real"]["trajectory_error"] < results["shuffled"]["trajectory_error"] - 0.5


@pytest.mark.parametrize("case", ["shuffled", "frozen", "noised", "wrong_caption"])
def test_frechet_ranks_a_second_real_set_closer_than_any_corruption(results, case):
    assert results["real"]["frechet_distance"] < 0.25 * results[case]["frechet_distance"]


def test_frechet_without_captions_still_separates_videos(world):
    ref = world["reference"]
    real = evaluate_videos(world["real"], world["scenes"], F, reference_videos=ref)["frechet_distance"]
    for case in ("shuffled", "frozen", "noised"):
        assert real < evaluate_videos(world[case], world["scenes"], F, reference_videos=ref)["frechet_distance"]


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 2))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = a * np.array([2.0, 1.0]) + np.array([3.0, 0.0])  # mean shift 3, one std 1 -> 2
    assert frechet_distance(a, b) == pytest.approx(9.0 + 1.0, rel=0.02)


def test_per_chunk_measures_show_where_a_rollout_goes_wrong(world):
    """Correct for two chunks, then noised: the chunk lists show the break; the means cannot."""
    video = world["real"].astype(np.float32) / 127.5 - 1
    video[:, 2 * F:] = world["noised"][:, 2 * F:]
    r = evaluate_videos(video, world["scenes"], F)
    fid = r["fidelity_by_chunk"]
    assert len(fid) == T // F
    assert min(fid[:2]) > 0.99 and max(fid[2:]) < 0.2


def test_extrapolated_videos_against_a_shorter_reference(world):
    scenes = sample_scenes(32, 9, CONFIG)
    r = evaluate_videos(render(scenes, 3 * T), scenes.captions(), F, reference_videos=world["reference"])
    assert len(r["fidelity_by_chunk"]) == len(r["frechet_by_chunk"]) == 3 * T // F
    assert len(r["motion_agreement_by_chunk"]) == 3 * T // F
    assert r["motion_agreement"] == 1.0
    json.dumps(r)  # plain floats, ints and lists


def test_uint8_and_float_inputs_agree(world):
    a = analyse_videos(world["real"][:8], world["scenes"].captions()[:8], F)
    b = analyse_videos(world["real"][:8].astype(np.float32) / 127.5 - 1, world["scenes"].captions()[:8], F)
    assert np.array_equal(a.fit.position, b.fit.position)
    assert np.allclose(a.features, b.features)


def test_bad_inputs_are_named(world):
    with pytest.raises(ValueError, match=r"must have shape \[N, T, 10, 10, 3\]"):
        evaluate_videos(world["real"][:, :, :8], world["scenes"], F)
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\]"):
        evaluate_videos(world["real"].astype(np.float32), world["scenes"], F)
    with pytest.raises(ValueError, match="got 3 scenes or captions for 96 videos"):
        evaluate_videos(world["real"], world["scenes"].captions()[:3], F)
    with pytest.raises(ValueError, match="at least 2 frames"):
        evaluate_videos(world["real"][:, :1], world["scenes"], F)


def test_frame_wise_chunks_mark_the_stepless_first_chunk(world):
    r = evaluate_videos(world["real"][:8, :4], world["scenes"].captions()[:8], 1)
    assert r["fidelity_by_chunk"] == pytest.approx([1.0, 1.0, 1.0, 1.0])  # float32 fit: 1 - O(1e-8)
    assert r["motion_agreement_by_chunk"] == [None, 1.0, 1.0, 1.0]
    json.dumps(r)
