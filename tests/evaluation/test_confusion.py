"""Step confusion: where each fitted step went relative to the caption's velocity, on real and transformed
videos whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from selfforcing.data.toyworld import ToyWorldConfig, render, sample_scenes
from selfforcing.evaluation import STEP_CLASSES, classify_steps, evaluate_videos, fit_frames
from selfforcing.evaluation.confusion import step_confusion, velocity_confusion

CONFIG = ToyWorldConfig()


@pytest.fixture(scope="module")
def real():
    scenes = sample_scenes(200, 5, CONFIG)
    return scenes, render(scenes, 12)


def only(confusion, cls: str) -> bool:
    return confusion.fractions[cls] == 1.0 and all(v == 1.0 for v in
                                                    (d[cls] for d in confusion.by_direction.values()))


def test_real_videos_of_every_direction_and_speed_step_exactly(real):
    scenes, videos = real
    c = step_confusion(fit_frames(videos, CONFIG), scenes)
    assert only(c, "exact") and c.counts.sum() == 200 * 11
    m = evaluate_videos(videos, scenes, 3)
    assert m["direction_agreement"] == m["motion_agreement"] == m["step_exact"] == 1.0
    velocities, steps, counts = velocity_confusion(fit_frames(videos, CONFIG), scenes)
    assert len(velocities) == 8 and len(steps) == 25
    assert all(counts[i, steps.index(v)] == counts[i].sum() > 0 for i, v in enumerate(velocities))


def test_time_reversed_videos_go_the_opposite_way(real):
    scenes, videos = real
    assert only(step_confusion(fit_frames(videos[:, ::-1], CONFIG), scenes), "opposite")


def test_transposed_videos_move_along_the_other_axis(real):
    scenes, videos = real
    assert only(step_confusion(fit_frames(videos.transpose(0, 1, 3, 2, 4), CONFIG), scenes), "other_axis")


def test_frozen_videos_stand_still_and_classes_cover_every_step(real):
    scenes, videos = real
    assert only(step_confusion(fit_frames(np.repeat(videos[:, :1], 12, 1), CONFIG), scenes), "still")
    # every wrapped step on the 5x5 torus against a 'right slowly' caption: each class is hit, once each
    steps = np.array([(r, c) for r in range(-2, 3) for c in range(-2, 3)])
    classes = classify_steps(steps, np.array([0, 1]), np.array([0, 1]))
    names = [STEP_CLASSES[i] for i in classes]
    assert names.count("exact") == 1 and names.count("wrong_speed") == 1 and names.count("opposite") == 2
    assert names.count("still") == 1 and names.count("other_axis") == 4 and names.count("diagonal") == 16


def test_wrong_number_of_scenes_is_named(real):
    scenes, videos = real
    with pytest.raises(ValueError, match="got 200 scenes or captions for 3 videos"):
        step_confusion(fit_frames(videos[:3], CONFIG), scenes)
