"""RequestValidator: bodies -> GenerationSpec, and 400s that name the parameter and the fix."""

from __future__ import annotations

import pytest

from selfforcing.serving.errors import APIError
from selfforcing.serving.validation import Limits, ModelInfo, RequestValidator

INFO = ModelInfo(id="m", source="preset:tiny", created=0, width=48, height=32, fps=8, default_num_frames=21,
                 frames_per_chunk=3, temporal_compression=4)


@pytest.fixture
def validator() -> RequestValidator:
    return RequestValidator(INFO, Limits(max_num_frames=81, max_prompt_chars=50))


def rejected(validator: RequestValidator, body: dict, stream: bool = False) -> APIError:
    with pytest.raises(APIError) as err:
        validator.validate(body, stream=stream)
    assert err.value.status == 400
    return err.value


def test_defaults_and_extras(validator):
    spec = validator.validate({"prompt": "  a ball  ", "seed": 7})
    assert (spec.prompt, spec.num_frames, spec.seed, spec.size, spec.model) == ("a ball", 21, 7, "48x32", "m")
    assert spec.seconds == "2.625"
    assert validator.validate({"prompt": "x"}).seed >= 0  # a random seed when none is given


def test_form_strings_are_coerced(validator):
    spec = validator.validate({"prompt": "x", "num_frames": "33", "seed": "3", "size": "48x32", "model": "m"})
    assert (spec.num_frames, spec.seed) == (33, 3)


@pytest.mark.parametrize(("seconds", "frames"), [("4", 33), (4, 33), ("2.5", 21), (0.1, 9), ("10", 81)])
def test_seconds_round_to_the_nearest_valid_count(validator, seconds, frames):
    assert validator.validate({"prompt": "x", "seconds": seconds}).num_frames == frames


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"prompt": ""}, "prompt", "empty_prompt"),
        ({"prompt": "   "}, "prompt", "empty_prompt"),
        ({"prompt": "x" * 51}, "prompt", "prompt_too_long"),
        ({}, "prompt", "missing_required_parameter"),
        ({"prompt": "x", "num_frames": 22}, "num_frames", "invalid_num_frames"),
        ({"prompt": "x", "num_frames": 0}, "num_frames", "invalid_num_frames"),
        ({"prompt": "x", "num_frames": 93}, "num_frames", "video_too_long"),
        ({"prompt": "x", "seconds": "12"}, "seconds", "video_too_long"),
        ({"prompt": "x", "seconds": "-1"}, "seconds", "invalid_value"),
        ({"prompt": "x", "seconds": "four"}, "seconds", "invalid_value"),
        ({"prompt": "x", "seed": -1}, "seed", "invalid_value"),
        ({"prompt": "x", "seed": "abc"}, "seed", "invalid_value"),
        ({"prompt": "x", "size": "720x1280"}, "size", "unsupported_size"),
        ({"prompt": "x", "size": "big"}, "size", "invalid_value"),
        ({"prompt": "x", "model": "sora-2"}, "model", "model_not_found"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown_parameter"),
    ],
)
def test_bad_requests_name_the_parameter(validator, body, param, code):
    err = rejected(validator, body)
    assert (err.param, err.code) == (param, code)
    assert err.body()["error"]["message"]


def test_num_frames_error_names_nearest_valid_counts(validator):
    assert "[21, 33]" in rejected(validator, {"prompt": "x", "num_frames": 25}).message


def test_stream_format(validator):
    assert validator.validate({"prompt": "x", "format": "mjpeg"}, stream=True).format == "mjpeg"
    assert rejected(validator, {"prompt": "x", "format": "gif"}, stream=True).param == "format"
    assert rejected(validator, {"prompt": "x", "format": "mp4"}).code == "unknown_parameter"


def test_model_info_frame_counts():
    assert INFO.valid_num_frames(81) == [9, 21, 33, 45, 57, 69, 81]
    assert INFO.is_valid_num_frames(45) and not INFO.is_valid_num_frames(41)
    with pytest.raises(ValueError, match="shortest video"):
        RequestValidator(INFO, Limits(max_num_frames=5))
