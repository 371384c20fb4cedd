"""RequestValidator: bodies -> GenerationSpec, and 400s that name the parameter and the fix; every
number bounded before any work proportional to it."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfforcing.serving.errors import APIError
from selfforcing.serving.jsonsafe import OversizedNumber
from selfforcing.serving.schemas import MAX_SEED
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
    assert spec.seconds == "2.625"  # no seconds asked: the length
    assert validator.validate({"prompt": "x"}).seed >= 0  # a random seed when none is given


def test_form_strings_are_coerced(validator):
    spec = validator.validate({"prompt": "x", "num_frames": "33", "seed": "3", "size": "48x32", "model": "m"})
    assert (spec.num_frames, spec.seed) == (33, 3)


@pytest.mark.parametrize(("seconds", "frames", "echo"), [
    ("4", 33, "4"), (4, 33, "4"), ("2.5", 21, "2.5"), (0.1, 9, "0.1"), ("10", 81, "10"), ("8", 69, "8"),
])
def test_seconds_round_to_the_nearest_valid_count_and_are_echoed(validator, seconds, frames, echo):
    spec = validator.validate({"prompt": "x", "seconds": seconds})
    assert (spec.num_frames, spec.seconds) == (frames, echo)  # OpenAI's "4" comes back as "4"


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
        # Booleans are not numbers; "seconds" is validated even when num_frames wins.
        ({"prompt": "x", "seconds": True}, "seconds", "invalid_value"),
        ({"prompt": "x", "num_frames": True}, "num_frames", "invalid_value"),
        ({"prompt": "x", "seed": False}, "seed", "invalid_value"),
        ({"prompt": "x", "num_frames": 21, "seconds": "abc"}, "seconds", "invalid_value"),
        ({"prompt": "x", "seconds": "1e400"}, "seconds", "invalid_value"),
        ({"prompt": "x", "seconds": "nan"}, "seconds", "invalid_value"),
        # Giant numbers: bounded before any work (10**30 frames used to build a list of every count).
        ({"prompt": "x", "num_frames": 10**30}, "num_frames", "video_too_long"),
        ({"prompt": "x", "num_frames": 2**63}, "num_frames", "video_too_long"),
        ({"prompt": "x", "num_frames": -(10**30)}, "num_frames", "invalid_num_frames"),
        ({"prompt": "x", "num_frames": "9" * 5000}, "num_frames", "invalid_value"),  # a form string
        ({"prompt": "x", "num_frames": OversizedNumber(5000)}, "num_frames", "invalid_value"),
        ({"prompt": "x", "seed": "9" * 5000}, "seed", "invalid_value"),
        ({"prompt": "x", "seed": 10**30}, "seed", "invalid_value"),
        ({"prompt": "x", "size": "9" * 5000 + "x32"}, "size", "invalid_value"),
        ({"prompt": "x", "size": "9999999x32"}, "size", "invalid_value"),
        ({"prompt": ["x"]}, "prompt", "invalid_value"),
        ({"prompt": "x", "model": "m" * 10_000}, "model", "invalid_value"),
    ],
)
def test_bad_requests_name_the_parameter(validator, body, param, code):
    err = rejected(validator, body)
    assert (err.param, err.code) == (param, code)
    assert 0 < len(err.body()["error"]["message"]) <= 1000  # a hostile value is never echoed whole


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


def test_a_giant_frame_count_costs_no_memory(validator):
    tracemalloc.start()
    try:
        for n in (10**30, 2**63, 10**4000, 10**7 + 2):
            with pytest.raises(APIError):
                validator.validate({"prompt": "x", "num_frames": n})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # the old path allocated ~n/4 list entries


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = ["prompt", "model", "seconds", "size", "num_frames", "seed", "negative_prompt", "format", "other"]
field_values = {
    "prompt": st.text(max_size=60), "seconds": st.sampled_from(["4", "8", "12", "0", "-1", "2.5", "x"]),
    "num_frames": st.integers(-100, 200) | st.sampled_from([9, 21, 33, 81]), "seed": st.integers(-5, 2**64),
    "size": st.sampled_from(["48x32", "32x48", "48 x 32", "big"]), "model": st.sampled_from(["m", "other"]),
    "format": st.sampled_from(["ndjson", "mjpeg", "mp4", "gif"]),
}
bodies = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(json_values, *field_values.values()),
    max_size=6,
) | st.fixed_dictionaries({k: v for k, v in field_values.items() if k != "format"})


@settings(max_examples=400, deadline=None)
@given(bodies, st.booleans())
def test_any_body_is_a_runnable_spec_or_a_400_naming_a_sent_field(body, stream):
    validator = RequestValidator(INFO, Limits(max_num_frames=81, max_prompt_chars=50))
    try:
        spec = validator.validate(body, stream=stream)
    except APIError as err:
        assert err.status == 400
        assert err.param is None or err.param in body or err.code == "missing_required_parameter"
        err.body()["error"]["message"].encode("utf-8")
        return
    assert spec.num_frames in INFO.valid_num_frames(81) and 0 <= spec.seed <= MAX_SEED
    assert 0 < len(spec.prompt) <= 50 and spec.size == "48x32" and spec.model == "m"
    assert isinstance(spec.seconds, str) and float(spec.seconds) > 0
