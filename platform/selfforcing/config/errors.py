"""The one error type every config problem becomes, with the field, the value and what is allowed."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def config_error_from(err: ValidationError, prefix: str = "") -> ConfigError:
    """Turn pydantic's error list into one readable message, one line per bad field."""
    lines = []
    for item in err.errors():
        field = _location(item["loc"])
        field = f"{prefix}.{field}" if prefix and field != "<root>" else (prefix or field)
        value = item.get("input")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see the config schema for valid fields)"
        if item["type"] == "literal_error" and "expected" in item.get("ctx", {}):
            message = f"allowed values are {item['ctx']['expected']}"
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        lines.append(f"  {field} = {shown}: {message}")
    return ConfigError("invalid configuration:\n" + "\n".join(lines))
