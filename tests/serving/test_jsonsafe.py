"""Bounded JSON: equal to ``json.loads`` on everything acceptable; a ``JSONInputError`` (never another
exception) on everything else, including what makes ``json.loads`` itself fail with a non-JSON error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfforcing.serving.jsonsafe import MAX_DEPTH, JSONInputError, OversizedNumber, loads

# JSON values json.loads gives back unchanged: ints that fit any field, finite floats, valid text.
scalars = st.none() | st.booleans() | st.integers(-(10**18), 10**18) | st.floats(allow_nan=False,
                                                                                    allow_infinity=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                               max_size=4),
                      max_leaves=20)


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(values)
def test_equals_json_loads_on_acceptable_input(value):
    raw = json.dumps(value, ensure_ascii=False).encode()
    if _depth(value) <= MAX_DEPTH:
        assert loads(raw) == json.loads(raw)
    else:
        with pytest.raises(JSONInputError):
            loads(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode) | values.map(
    lambda v: json.dumps(v).encode()).flatmap(lambda raw: st.integers(0, len(raw)).map(lambda i: raw[:i])))
def test_any_bytes_parse_or_raise_a_client_error(raw):
    try:
        loads(raw)
    except JSONInputError as err:
        assert err.code in {"invalid_encoding", "invalid_json", "nesting_too_deep", "invalid_unicode"}
        assert err.message


@pytest.mark.parametrize(("raw", "code", "param"), [
    (b'{"prompt": "\xff"}', "invalid_encoding", None),
    (b"[" * 100_000, "nesting_too_deep", None),  # json.loads: RecursionError
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nesting_too_deep", None),
    (b'{"prompt": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "nesting_too_deep", "prompt"),
    (b'{"prompt": "a \\ud800 b"}', "invalid_unicode", "prompt"),  # a lone surrogate
    (b'{"a": {"\\udfff": 1}}', "invalid_unicode", "a"),
    (b'{"seconds": NaN}', "invalid_json", None),
    (b'{"seconds": -Infinity}', "invalid_json", None),
    (b"{nope", "invalid_json", None),
])
def test_hostile_input_is_named(raw, code, param):
    with pytest.raises(JSONInputError) as err:
        loads(raw)
    assert (err.value.code, err.value.param) == (code, param)


def test_long_numbers_are_never_converted():
    # json.loads: ValueError beyond 4300 digits, and quadratic time before that.
    value = loads(b'{"seed": ' + b"9" * 100_000 + b', "n": 1e999, "ok": 123456789012345678}')
    assert value["seed"] == OversizedNumber(100_000) and isinstance(value["n"], OversizedNumber)
    assert value["ok"] == 123456789012345678
    assert "100000 characters" in repr(value["seed"])


def test_depth_limit_is_exact():
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
