"""Request bodies as the openai SDK, curl and browsers send them; bearer auth."""

from __future__ import annotations

import httpx
import pytest

from selfforcing.serving.errors import APIError
from selfforcing.serving.httputil import check_bearer, parse_body


def test_multipart_like_the_openai_sdk():
    request = httpx.Request("POST", "http://x/v1/videos", data={"prompt": "héllo", "num_frames": "21"},
                            files={"": (None, b"")})
    fields = parse_body(request.headers["content-type"], request.read())
    assert fields["prompt"] == "héllo" and fields["num_frames"] == "21"


def test_multipart_file_upload_is_refused():
    request = httpx.Request("POST", "http://x/", data={"prompt": "x"},
                            files={"input_reference": ("a.png", b"\x89PNG", "image/png")})
    with pytest.raises(APIError) as err:
        parse_body(request.headers["content-type"], request.read())
    assert err.value.param == "input_reference"


def test_json_and_curl_default():
    assert parse_body("application/json", b'{"prompt": "x"}') == {"prompt": "x"}
    assert parse_body("application/x-www-form-urlencoded", b'{"prompt": "x"}') == {"prompt": "x"}
    assert parse_body("application/x-www-form-urlencoded", b"prompt=a+b") == {"prompt": "a b"}
    for raw in (b"{nope", b"[1]"):
        with pytest.raises(APIError):
            parse_body("application/json", raw)


def test_bearer():
    check_bearer(None, None)
    check_bearer("Bearer k", "k")
    for header in (None, "Bearer wrong", "Basic k"):
        with pytest.raises(APIError) as err:
            check_bearer(header, "k")
        assert err.value.status == 401
