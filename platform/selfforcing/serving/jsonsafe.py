"""Bounded JSON for untrusted input (HTTP bodies and WebSocket messages).

Python's ``json.loads`` turns several hostile inputs into exceptions that are not ``JSONDecodeError``
(a 500 if nobody catches them) or into values that break later: invalid UTF-8 bytes
(``UnicodeDecodeError``), deep nesting (``RecursionError``), integer literals beyond Python's 4300-digit
conversion limit (``ValueError``), ``NaN`` / ``Infinity`` (not JSON), and ``"\\ud800"`` escapes that decode
to lone surrogates (valid JSON, but no UTF-8 encoder, tokenizer or JSON response can take them). ``loads``
rejects each of these with a ``JSONInputError`` that says what was wrong and where.

Work is proportional to the input's length only (the caller bounds that): a number literal longer than
``MAX_NUMBER_CHARS`` is never converted; it becomes an ``OversizedNumber`` that every typed field rejects
by name, so the client learns which field was wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 8  # request bodies and messages are flat objects; 8 leaves room and stops abuse early
MAX_NUMBER_CHARS = 32  # 2**63 has 19 digits: no field accepts a longer literal


class JSONInputError(ValueError):
    """Input that is not acceptable JSON; ``code`` and ``param`` go into the client's error."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


@dataclass(frozen=True)
class OversizedNumber:
    """A number literal too long to be any field's value (kept unconverted: converting costs time)."""

    length: int  # characters of the literal

    def __repr__(self) -> str:
        return f"<a number literal of {self.length} characters>"


def _number(convert):
    def parse(text: str):
        if len(text) > MAX_NUMBER_CHARS:
            return OversizedNumber(len(text))
        value = convert(text)
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            return OversizedNumber(len(text))  # 1e999 overflows to infinity
        return value

    return parse


def _constant(name: str):
    raise JSONInputError(f"{name} is not a JSON value (JSON numbers are finite).", "invalid_json")


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` (UTF-8 bytes or text). Raises ``JSONInputError`` (codes ``invalid_encoding``,
    ``invalid_json``, ``nesting_too_deep``, ``invalid_unicode``) for anything a client must fix."""
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONInputError(
                f"The body is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}).",
                "invalid_encoding",
            ) from None
    else:
        text = raw
    try:
        value = json.loads(text, parse_int=_number(int), parse_float=_number(float), parse_constant=_constant)
    except RecursionError:
        raise JSONInputError(f"JSON nested deeper than {max_depth} levels.", "nesting_too_deep") from None
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
                             "invalid_json") from None
    check_tree(value, max_depth)
    return value


def check_tree(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Depth at most ``max_depth`` and every string (keys too) valid Unicode; iterative, one pass."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            _check_text(node, path)
        elif isinstance(node, dict | list):
            if depth >= max_depth:  # named by its top-level field, if it has one
                top = path.split(".")[0] if isinstance(value, dict) and path else None
                raise JSONInputError(f"JSON nested deeper than {max_depth} levels.", "nesting_too_deep", top)
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str):
                    _check_text(key, path)
                stack.append((child, depth + 1, f"{path}.{key}" if path else str(key)))


def _check_text(text: str, path: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JSONInputError(
            f"{('Parameter ' + repr(path)) if path else 'The body'} contains an unpaired surrogate "
            f"(U+{ord(text[exc.start]):04X} at position {exc.start}): text must be valid Unicode.",
            "invalid_unicode", path or None,
        ) from None
