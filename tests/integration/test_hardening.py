"""The Serve app as a hostile outside user meets it: a property-based fuzz run (hypothesis) generated from
the app's own ``/openapi.json`` and the live-session message catalogue, and the capacity the docs state.

One application for the module, built from serve/config.yaml (its args and deployment options, the
generator at one replica) with only the model (the tiny preset, no registry) and ``max_num_frames``
(long videos, so a burst of streams is still running when the next request comes) changed.

Done when (issue 14): >= 1000 generated requests (HTTP and WebSocket) give no 5xx and no dropped
connection, the app answers normally afterwards and the ingress's memory stays within 10% of its start;
a burst of ``max_streams + max_waiting`` streams on one idle replica is accepted whole 10 times in a row
and one more gets 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from selfforcing.serving.live_messages import MESSAGE_MODELS

ROOT = Path(__file__).resolve().parents[2]
APP = "hard"
LONG = 969  # frames: 81 chunks, many seconds on the tiny model
INTERNALS = ("Traceback", "RayTaskError", "pid=", "\x1b[", "ActorID", "site-packages")
HTTP_EXAMPLES, WS_EXAMPLES = 800, 80
FUZZ = settings(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hard(ray_session, tmp_path_factory):
    from ray import serve

    from selfforcing.serving.app import ServeArgs, build_app

    spec = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"][0]
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in spec["deployments"]}
    generator = {**options["Generator"], "ray_actor_options": {"num_cpus": 0.3}}
    generator["autoscaling_config"] = {**generator["autoscaling_config"], "max_replicas": 1}
    args = ServeArgs(**{**spec["args"], "default_model_uri": None, "config_overrides": ["runtime.device=cpu"],
                        "max_num_frames": LONG, "job_storage": str(tmp_path_factory.mktemp("jobs"))},
                     ingress_options=options["VideoAPI"], text_encoder_options=options["TextEncoder"],
                     generator_options=generator)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=APP, route_prefix="/")
    yield {"url": f"http://127.0.0.1:{port}", "ws": f"ws://127.0.0.1:{port}/v1/videos/live", "args": args,
           "generator": serve.get_deployment_handle("Generator", app_name=APP)}
    serve.shutdown()


def _ingress_rss() -> int:
    procs = [p for p in psutil.process_iter(["cmdline"])
             if any(f"ServeReplica:{APP}:VideoAPI" in part for part in p.info["cmdline"] or [])]
    assert len(procs) == 1, procs
    return procs[0].memory_info().rss


# ---------------------------------------------------------------------------------------- generation
NASTY = ["__RAW_BIGINT__", "__RAW_BIGFLOAT__", "__RAW_NAN__", "__RAW_DEEP__", 10**30, 2**63, -(2**63), -1, 0,
         True, False, None, "", " ", "\ud800", "a\udfffb", "x" * 25_000, "9" * 5000, "4", "1e400", "NaN",
         [], {}, [[[[[[[[[["deep"]]]]]]]]]], {"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}]
RAW = {'"__RAW_BIGINT__"': "9" * 5000, '"__RAW_BIGFLOAT__"': "1" * 400 + ".5e99999",
       '"__RAW_NAN__"': "NaN", '"__RAW_DEEP__"': "[" * 3000 + "]" * 3000}


def from_schema(schema: dict, root: dict) -> st.SearchStrategy:
    """A JSON schema (as FastAPI / pydantic write it) -> a strategy for valid values."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return from_schema(node, root)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([from_schema(s, root) for s in schema.get("anyOf", schema.get("oneOf"))])
    kind = schema.get("type")
    if kind == "string":
        return st.text(max_size=min(schema.get("maxLength", 40), 40))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum")) | st.sampled_from([9, 21, 33, 81])
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries({k: from_schema(v, root) for k, v in props.items() if k in required},
                                     optional={k: from_schema(v, root) for k, v in props.items()
                                               if k not in required})
    return st.none() | st.integers() | st.text(max_size=10)


def mutated(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Valid objects, then with fields replaced by hostile values, dropped, or unknown ones added."""
    def mutate(obj, draw_key, draw_value, drop, add):
        if not isinstance(obj, dict):
            return obj
        obj = dict(obj)
        if obj and draw_key is not None:
            obj[sorted(obj)[draw_key % len(obj)]] = draw_value
        if drop and obj:
            obj.pop(sorted(obj)[0])
        if add:
            obj["unknown_field"] = draw_value
        return obj

    return st.one_of(valid, st.builds(mutate, valid, st.none() | st.integers(0, 20), st.sampled_from(NASTY),
                                      st.booleans(), st.booleans()))


def encode_json(obj) -> bytes:
    text = json.dumps(obj)  # lone surrogates become \ud800 escapes: valid JSON, invalid text
    for placeholder, raw in RAW.items():
        text = text.replace(placeholder, raw)
    return text.encode()


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
                 "application/json; charset=no-such", "text/plain", "application/xml", None,
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=XyZ", "multipart/form-data"]


EXISTING = "__EXISTING_VIDEO__"  # replaced when sent by the id of a job the fuzz created (strategies stay pure)


@st.composite
def http_requests(draw, openapi: dict):
    """(method, path, query, headers, content) for one operation of the schema."""
    ops = [(path, method, op) for path, item in openapi["paths"].items() for method, op in item.items()]
    path, method, op = draw(st.sampled_from(ops))
    for param in op.get("parameters", []):
        if param["in"] == "path":
            value = draw(st.text(max_size=30) | st.sampled_from(
                [EXISTING, "stream", "\ud800", "%ff", "a" * 500, "..", "video_" + "0" * 24]))
            path = path.replace("{" + param["name"] + "}", urllib.parse.quote(value, safe="", errors="surrogatepass"))
    query = {}
    for param in op.get("parameters", []):
        if param["in"] == "query" and draw(st.booleans()):
            value = draw(from_schema(param["schema"], openapi) | st.sampled_from(NASTY[4:16]))
            query[param["name"]] = value if isinstance(value, str) else json.dumps(value)
    content, headers = None, {}
    if "requestBody" in op:
        body = draw(mutated(from_schema(op["requestBody"]["content"]["application/json"]["schema"], openapi)))
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        if ctype and ctype.startswith("multipart") and isinstance(body, dict):
            parts = b"".join(f'--XyZ\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode(
                "utf-8", "surrogatepass") for k, v in body.items())
            content = parts + b"--XyZ--\r\n"
        elif ctype == "application/x-www-form-urlencoded" and isinstance(body, dict):
            content = urllib.parse.urlencode({k: str(v) for k, v in body.items()}, errors="surrogatepass").encode()
        else:
            content = draw(st.just(encode_json(body)) | st.binary(max_size=64) | st.just(b'{"prompt": "\xff"}'))
        if ctype:
            headers["content-type"] = ctype
    return method.upper(), path, query, headers, content


def _check_answer(r: httpx.Response, body: bytes) -> None:
    assert r.status_code < 500, (r.status_code, body[:500])
    if r.status_code >= 400:
        error = json.loads(body)["error"]
        assert error["message"] and error["type"], error
    text = body.decode("utf-8", "replace")
    assert not any(marker in text for marker in INTERNALS), text[:500]


# ---------------------------------------------------------------------------------------- the fuzz run
@pytest.mark.slow
def test_fuzz_from_the_schema_and_the_message_catalogue(hard):
    url = hard["url"]
    client = httpx.Client(base_url=url, timeout=60)
    openapi = client.get("/openapi.json").json()
    video_ids: list[str] = []
    sent = {"http": 0, "ws": 0}

    def one_http(request) -> None:
        method, path, query, headers, content = request
        path = path.replace(EXISTING, video_ids[-1] if video_ids else "x")
        if query:  # encoded here: httpx refuses to send the lone surrogates the fuzz wants to send
            path += "?" + urllib.parse.urlencode(query, errors="surrogatepass")
        with client.stream(method, path, headers=headers, content=content) as r:
            body = b""
            for piece in r.iter_bytes():
                body += piece
                if r.status_code == 200 and path == "/v1/videos/stream":
                    break  # a viewer that leaves after the first bytes: the replica must let go
        sent["http"] += 1
        _check_answer(r, body if path != "/v1/videos/stream" or r.status_code != 200 else b"")
        if method == "POST" and path == "/v1/videos" and r.status_code == 200:
            video_id = json.loads(body)["id"]
            assert client.delete(f"/v1/videos/{video_id}").status_code == 200  # cancels the job
            video_ids.append(video_id)

    catalogue = st.one_of([mutated(from_schema(m.model_json_schema(), {})) for m in MESSAGE_MODELS.values()])
    frames = st.one_of(catalogue.map(lambda m: encode_json(m).decode("utf-8", "replace")),
                       st.text(max_size=50), st.binary(max_size=20), st.just("x" * 70_000),
                       st.just('{"type": "start", "prompt": "a ball", "max_chunks": 2}'))

    def one_session(messages) -> None:
        with connect(hard["ws"], open_timeout=30, max_size=None) as ws:
            try:
                for message in messages + ['{"type": "ping"}']:
                    ws.send(message)
                    sent["ws"] += 1
                while json.loads(_next_text(ws))["type"] != "pong":
                    pass
            except ConnectionClosed as closed:
                # An intended close has a close frame: 1009 for an oversized message. Never 1006 (drop).
                assert closed.rcvd is not None and closed.rcvd.code in (1000, 1009), closed

    run_http = settings(FUZZ, max_examples=HTTP_EXAMPLES)(given(http_requests(openapi))(one_http))
    run_ws = settings(FUZZ, max_examples=WS_EXAMPLES)(given(st.lists(frames, min_size=1, max_size=6))(one_session))
    warm = settings(FUZZ, max_examples=40)(given(http_requests(openapi))(one_http))
    warm()  # first requests build caches (validator, OpenAPI, routers): not a leak
    before = _ingress_rss()
    started = time.perf_counter()
    run_http()
    run_ws()
    elapsed = time.perf_counter() - started
    after = _ingress_rss()
    print(f"\nfuzz: {sent['http']} HTTP requests + {sent['ws']} WebSocket messages in {elapsed:.0f} s; "
          f"ingress RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB")
    assert sent["http"] + sent["ws"] >= 1000
    assert after <= 1.1 * before, (before, after)
    _assert_answers_normally(hard)


def _next_text(ws) -> str:
    while True:
        message = ws.recv(timeout=60)
        if isinstance(message, str):
            return message


def _assert_answers_normally(hard) -> None:
    lines = []
    with httpx.stream("POST", f"{hard['url']}/v1/videos/stream", timeout=60,
                      json={"prompt": "still here", "num_frames": 21, "seed": 1}) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines()]
    assert [x["object"] for x in lines] == ["video.stream", "video.chunk", "video.chunk", "video.done"]
    assert httpx.get(f"{hard['url']}/v1/videos", timeout=30).status_code == 200
    with connect(hard["ws"], open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "prompt": "still here", "max_chunks": 1}))
        kinds = []
        while not kinds or kinds[-1] != "done":
            kinds.append(json.loads(_next_text(ws))["type"])
        assert kinds[0] == "session" and "chunk" in kinds


# -------------------------------------------------------------------------------------------- capacity
@pytest.mark.slow
def test_a_burst_of_max_streams_plus_max_waiting_is_accepted_whole_every_time(hard):
    args = hard["args"]
    capacity = args.max_streams + args.max_waiting
    body = {"prompt": "burst", "num_frames": LONG, "format": "ndjson"}

    async def burst() -> tuple[list[int], list[bool], httpx.Response]:
        async with httpx.AsyncClient(base_url=hard["url"], timeout=60) as client:
            streams = [client.stream("POST", "/v1/videos/stream", json={**body, "seed": i}) for i in range(capacity)]
            responses = await asyncio.gather(*[s.__aenter__() for s in streams])
            lines = [r.aiter_lines() for r in responses]  # kept: a collected iterator closes its stream
            try:
                headers = [json.loads(await anext(it)) if r.status_code == 200 else {}
                           for r, it in zip(responses, lines, strict=True)]
                extra = await client.post("/v1/videos/stream", json={**body, "seed": 99})
            finally:
                await asyncio.gather(*[s.__aexit__(None, None, None) for s in streams])
        return [r.status_code for r in responses], [h.get("waiting") for h in headers], extra

    for repeat in range(10):
        _wait_idle(hard["generator"])
        statuses, waiting, extra = asyncio.run(burst())
        assert statuses == [200] * capacity, (repeat, statuses)
        assert sorted(waiting) == [False] * args.max_streams + [True] * args.max_waiting, (repeat, waiting)
        assert extra.status_code == 503 and int(extra.headers["Retry-After"]) >= 1, (repeat, extra.text)
        assert extra.json()["error"]["code"] == "overloaded"
    print(f"\nburst: {capacity} streams accepted whole and the next one 503, 10 times in a row")


def _wait_idle(generator, timeout_s: float = 60) -> None:
    deadline = time.perf_counter() + timeout_s
    while (stats := generator.stats.remote().result()).streams or stats.running:
        assert time.perf_counter() < deadline, stats
        time.sleep(0.1)
