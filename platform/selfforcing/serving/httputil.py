"""HTTP helpers without FastAPI state: request bodies (JSON or multipart form) and bearer auth."""

from __future__ import annotations

import hmac
import json
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .errors import invalid, unauthorized


def parse_body(content_type: str | None, raw: bytes) -> dict[str, Any]:
    """A create request's fields: JSON object, multipart form (what the ``openai`` SDK sends) or
    urlencoded form. Form values are strings; pydantic's lax mode turns ``"21"`` into 21 later. A JSON
    object sent as urlencoded (``curl -d '{...}'`` without a Content-Type) is read as JSON."""
    ctype = (content_type or "application/json").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return parse_multipart(content_type or "", raw)
    if ctype == "application/x-www-form-urlencoded" and not raw.lstrip().startswith(b"{"):
        from urllib.parse import parse_qsl

        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if ctype not in ("application/json", "text/plain", "application/x-www-form-urlencoded", ""):
        raise invalid(f"Unsupported Content-Type {ctype!r}; send application/json or multipart/form-data.",
                      None, "unsupported_content_type")
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}.", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_body")
    return body


def parse_multipart(content_type: str, raw: bytes) -> dict[str, str]:
    """``multipart/form-data`` text fields -> dict, with the standard library's MIME parser.

    File parts (``input_reference``) are refused: this server generates from text only.
    """
    if "boundary=" not in content_type:
        raise invalid("multipart/form-data without a boundary.", None, "invalid_body")
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + raw
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        if part.get_filename() is not None:
            raise invalid(f"File uploads are not supported ({name!r}): this model generates from text only.",
                          name, "unsupported_parameter")
        payload = part.get_payload(decode=True) or b""
        fields[name] = payload.decode(part.get_content_charset() or "utf-8", "replace")
    return fields


def check_bearer(authorization: str | None, api_key: str | None) -> None:
    """401 unless ``Authorization: Bearer <api_key>`` (no check when no key is configured)."""
    if not api_key:
        return
    if not authorization or not authorization.lower().startswith("bearer "):
        raise unauthorized("Missing bearer token: send 'Authorization: Bearer <API key>'.")
    token = authorization[len("bearer "):].strip()
    if not hmac.compare_digest(token.encode(), api_key.encode()):
        raise unauthorized("Incorrect API key provided.")
