"""Request bodies as the openai SDK, curl and browsers send them, and as hostile clients do: every way
a body can be wrong is an ``APIError`` 4xx naming it; bearer auth."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from selfforcing.serving.errors import APIError
from selfforcing.serving.httputil import check_bearer, parse_body, read_body


def rejected(content_type: str | None, raw: bytes) -> APIError:
    with pytest.raises(APIError) as err:
        parse_body(content_type, raw)
    assert 400 <= err.value.status < 500
    return err.value


def test_multipart_like_the_openai_sdk():
    request = httpx.Request("POST", "http://x/v1/videos", data={"prompt": "héllo", "num_frames": "21"},
                            files={"": (None, b"")})
    fields = parse_body(request.headers["content-type"], request.read())
    assert fields["prompt"] == "héllo" and fields["num_frames"] == "21"


def test_multipart_file_upload_is_refused():
    request = httpx.Request("POST", "http://x/", data={"prompt": "x"},
                            files={"input_reference": ("a.png", b"\x89PNG", "image/png")})
    assert rejected(request.headers["content-type"], request.read()).param == "input_reference"


def test_json_and_curl_default():
    assert parse_body("application/json", b'{"prompt": "x"}') == {"prompt": "x"}
    assert parse_body("application/json; charset=UTF-8", b'{"prompt": "x"}') == {"prompt": "x"}
    assert parse_body("application/x-www-form-urlencoded", b'{"prompt": "x"}') == {"prompt": "x"}
    assert parse_body("application/x-www-form-urlencoded", b"prompt=a+b") == {"prompt": "a b"}
    for raw in (b"{nope", b"[1]"):
        rejected("application/json", raw)


MULTIPART = "multipart/form-data; boundary=XyZ"


def _part(name: str, value: bytes, headers: str = "") -> bytes:
    return (f'--XyZ\r\nContent-Disposition: form-data; name="{name}"\r\n{headers}\r\n').encode() + value + b"\r\n"


@pytest.mark.parametrize(("content_type", "raw", "status", "code"), [
    ("application/json", b'{"prompt": "\xff\xfe"}', 400, "invalid_encoding"),
    ("application/json; charset=latin-1", b'{"prompt": "x"}', 415, "unsupported_charset"),
    ("application/json; charset=klingon", b'{"prompt": "x"}', 415, "unsupported_charset"),
    ("application/xml", b"<prompt/>", 415, "unsupported_content_type"),
    ("application/json", b"[" * 50_000, 400, "nesting_too_deep"),
    ("application/json", b'{"prompt": "\\ud800"}', 400, "invalid_unicode"),
    ("application/x-www-form-urlencoded", b"prompt=%ff%fe", 400, "invalid_encoding"),
    ("application/x-www-form-urlencoded", b"&".join(b"a%d=1" % i for i in range(100)), 400, "invalid_body"),
    (MULTIPART, _part("prompt", b"\xff") + b"--XyZ--\r\n", 400, "invalid_encoding"),
    (MULTIPART, _part("prompt", b"x", "Content-Type: text/plain; charset=koi8-r\r\n") + b"--XyZ--\r\n", 415,
     "unsupported_charset"),
    (MULTIPART, b"".join(_part(f"f{i}", b"1") for i in range(40)) + b"--XyZ--\r\n", 400, "invalid_body"),
    ("multipart/form-data", b"--x--", 400, "invalid_body"),
])
def test_bad_bodies_are_4xx_with_a_code(content_type, raw, status, code):
    err = rejected(content_type, raw)
    assert (err.status, err.code) == (status, code) and err.body()["error"]["message"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["application/json", MULTIPART, "application/x-www-form-urlencoded", "text/plain", None,
                        "multipart/form-data; boundary=", "application/json; charset=utf-16"]),
       st.binary(max_size=300) | st.builds(lambda parts: b"".join(parts) + b"--XyZ--\r\n",
                                           st.lists(st.builds(_part, st.text(max_size=8), st.binary(max_size=20)),
                                                    max_size=4)))
def test_any_body_is_fields_or_a_client_error(content_type, raw):
    try:
        fields = parse_body(content_type, raw)
    except APIError as err:
        assert 400 <= err.status < 500
        err.body()["error"]["message"].encode("utf-8")  # the error itself is valid text
    else:
        assert isinstance(fields, dict)
        for key, value in fields.items():
            if isinstance(key, str):
                key.encode("utf-8")
            if isinstance(value, str):
                value.encode("utf-8")  # no lone surrogates reach validation


def _request(body: bytes, declared: str | None) -> Request:
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)] or [b""]

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [] if declared is None else [(b"content-length", declared.encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


@pytest.mark.parametrize(("size", "declared", "status"), [
    (5000, None, 413), (5000, "5000", 413), (10, "9" * 5000, 413), (10, "ten", 400), (4096, None, None),
])
def test_read_body_stops_at_the_limit(size, declared, status):
    async def main():
        return await read_body(_request(b"x" * size, declared), limit=4096)

    if status is None:
        assert len(asyncio.run(main())) == size
        return
    with pytest.raises(APIError) as err:
        asyncio.run(main())
    assert err.value.status == status


def test_bearer():
    check_bearer(None, None)
    check_bearer("Bearer k", "k")
    for header in (None, "Bearer wrong", "Basic k", "Bearer \udcff"):
        with pytest.raises(APIError) as err:
            check_bearer(header, "k")
        assert err.value.status == 401
