"""HTTP helpers without FastAPI state: bounded request bodies (JSON, multipart or urlencoded form) and
bearer auth. Every way a body can be wrong ends as an ``APIError`` (4xx) naming what was wrong."""

from __future__ import annotations

import hmac
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from . import jsonsafe
from .errors import APIError, echo, invalid, too_large, unauthorized, unsupported_media

MAX_BODY_BYTES = 64 * 1024  # a prompt of 2000 characters is at most ~24 KB as escaped JSON
MAX_FORM_FIELDS = 32
UTF8 = ("utf-8", "utf8", "us-ascii", "ascii")  # ASCII is a subset: accepted as is
JSON_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded", "")


async def read_body(request: Any, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limit`` bytes: never read whole first."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or len(declared) > 12 or int(declared) > limit):
        if declared.isdigit():
            raise too_large(limit)
        raise invalid(f"Invalid Content-Length header: {echo(declared)}.", None, "invalid_header")
    parts, size = [], 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise too_large(limit)
        parts.append(piece)
    return b"".join(parts)


def split_content_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``'application/json; charset=UTF-8'`` -> ``('application/json', {'charset': 'UTF-8'})``."""
    ctype, _, rest = (content_type or "").partition(";")
    params = {}
    for item in rest.split(";"):
        key, eq, value = item.partition("=")
        if eq:
            params[key.strip().lower()] = value.strip().strip('"')
    return ctype.strip().lower(), params


def parse_body(content_type: str | None, raw: bytes) -> dict[str, Any]:
    """A create request's fields: JSON object, multipart form (what the ``openai`` SDK sends) or
    urlencoded form. Form values are strings; pydantic's lax mode turns ``"21"`` into 21 later. A JSON
    object sent as urlencoded (``curl -d '{...}'`` without a Content-Type) is read as JSON. Text must be
    UTF-8 (415 for another charset, 400 for bytes that are not UTF-8)."""
    ctype, params = split_content_type(content_type)
    charset = params.get("charset")
    if charset is not None and charset.lower() not in UTF8:
        raise unsupported_media(f"Unsupported charset {echo(charset)}; send UTF-8.", "unsupported_charset")
    if ctype == "multipart/form-data":
        return parse_multipart(content_type or "", raw)
    if ctype == "application/x-www-form-urlencoded" and not raw.lstrip().startswith(b"{"):
        return parse_urlencoded(raw)
    if ctype not in JSON_TYPES:
        raise unsupported_media(f"Unsupported Content-Type {echo(ctype)}; send application/json or "
                                "multipart/form-data.", "unsupported_content_type")
    try:
        body = jsonsafe.loads(raw or b"{}")
    except jsonsafe.JSONInputError as exc:
        raise invalid(exc.message, exc.param, exc.code) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_body")
    return body


def parse_urlencoded(raw: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS,
                          encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise invalid("The form body is not valid UTF-8 (after percent-decoding).", None,
                      "invalid_encoding") from None
    except ValueError:  # parse_qsl: more than max_num_fields
        raise invalid(f"The form has more than {MAX_FORM_FIELDS} fields.", None, "invalid_body") from None
    return dict(pairs)


def parse_multipart(content_type: str, raw: bytes) -> dict[str, str]:
    """``multipart/form-data`` text fields -> dict, with the standard library's MIME parser.

    File parts (``input_reference``) are refused: this server generates from text only. Each field's
    charset must be UTF-8 and its bytes valid UTF-8.
    """
    if "boundary=" not in content_type:
        raise invalid("multipart/form-data without a boundary.", None, "invalid_body")
    try:
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("utf-8", "replace") + raw
        )
        parts = [(part.get_param("name", header="content-disposition"), part) for part in message.iter_parts()]
    except APIError:
        raise
    except Exception:  # noqa: BLE001 - the stdlib MIME parser may raise anything on hostile input
        raise invalid("Malformed multipart/form-data body.", None, "invalid_body") from None
    fields: dict[str, str] = {}
    for name, part in parts:
        if not name:
            continue
        if not isinstance(name, str) or not _is_text(name):
            raise invalid("A multipart field name is not valid UTF-8 text.", None, "invalid_encoding")
        if len(fields) >= MAX_FORM_FIELDS:
            raise invalid(f"The form has more than {MAX_FORM_FIELDS} fields.", None, "invalid_body")
        fields[name] = _field_text(name, part)
    return fields


def _field_text(name: str, part: Any) -> str:
    try:
        filename = part.get_filename()
        charset = part.get_content_charset()
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - malformed part headers
        raise invalid(f"Malformed multipart part {echo(name)}.", name, "invalid_body") from None
    if filename is not None:
        raise invalid(f"File uploads are not supported ({echo(name)}): this model generates from text only.",
                      name, "unsupported_parameter")
    if charset is not None and charset.lower() not in UTF8:
        raise unsupported_media(f"Unsupported charset {echo(charset)} for field {echo(name)}; send UTF-8.",
                                "unsupported_charset")
    if not isinstance(payload, bytes):  # a nested multipart part has no payload of its own
        raise invalid(f"Field {echo(name)} is not a text value.", name, "invalid_body")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"Field {echo(name)} is not valid UTF-8.", name, "invalid_encoding") from None


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")  # header parsing keeps undecodable bytes as lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def check_bearer(authorization: str | None, api_key: str | None) -> None:
    """401 unless ``Authorization: Bearer <api_key>`` (no check when no key is configured)."""
    if not api_key:
        return
    if not authorization or not authorization.lower().startswith("bearer "):
        raise unauthorized("Missing bearer token: send 'Authorization: Bearer <API key>'.")
    token = authorization[len("bearer "):].strip()
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), api_key.encode()):
        raise unauthorized("Incorrect API key provided.")
