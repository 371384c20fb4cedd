"""The Serve application end to end: a real local Serve, real HTTP clients, the official openai SDK.

Two applications share one Serve instance (start-up is the expensive part): ``main`` is built from
serve/config.yaml's args with only ``model_uri`` pointing at a model registered in a local MLflow
registry; ``limited`` has tiny limits (one request per generator, one queued), an API key and long
videos allowed, for the overload / disconnect / auth tests. (The fuzz run and the burst test of the
documented capacity are in test_hardening.py.)
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from selfforcing.config import load_config
from selfforcing.inference.video_io import read_video
from selfforcing.models.factory import build_dit, save_generator
from selfforcing.tracking import register_generator

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key"
LONG = 969  # frames: 81 chunks, several seconds on the tiny model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _yaml_app() -> tuple[dict, dict]:
    app = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"][0]
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app["deployments"]}
    return app["args"], options


@pytest.fixture(scope="module")
def server(ray_session, tmp_path_factory):
    from ray import serve

    from selfforcing.serving.app import ServeArgs, build_app

    tmp = tmp_path_factory.mktemp("serve")
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    config = load_config("tiny", overrides=["runtime.device=cpu"])
    reg = register_generator(save_generator(config, build_dit(config, seed=1), tmp / "gen"),
                             "toy-world", "production", tracking)

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args, options = _yaml_app()
    small = {"ray_actor_options": {"num_cpus": 0.1}}
    generator = {**options["Generator"], "ray_actor_options": {"num_cpus": 0.3}}
    generator["autoscaling_config"] = {**generator["autoscaling_config"], "max_replicas": 1}
    main = ServeArgs(**{**args, "model_uri": reg.model_uri, "tracking_uri": tracking,
                        "job_storage": str(tmp / "jobs")},
                     ingress_options=options["VideoAPI"], text_encoder_options=options["TextEncoder"],
                     generator_options=generator)
    limited = ServeArgs(  # one batch row and one waiting slot: the generator's admission refuses the third
        preset="tiny", default_model_uri=None, config_overrides=["runtime.device=cpu"], torch_threads=1,
        max_num_frames=LONG, api_key=API_KEY, retry_after_s=3, job_storage=str(tmp / "jobs-limited"),
        max_streams=1, max_waiting=1, ingress_options=small, text_encoder_options=small,
        generator_options={"autoscaling_config": None, "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.3}},
    )
    started = time.perf_counter()
    serve.run(build_app(main), name="main", route_prefix="/")
    serve.run(build_app(limited), name="limited", route_prefix="/limited")
    print(f"\nserve start-up (2 apps, 8 replicas): {time.perf_counter() - started:.1f} s")
    yield {"url": f"http://127.0.0.1:{port}", "registered": reg, "limited_jobs": tmp / "jobs-limited"}
    serve.shutdown()


def _ndjson(url: str, body: dict, headers: dict | None = None) -> tuple[list[dict], list[float], float]:
    """Lines of a streamed ndjson response with the time each arrived (from sending the request)."""
    lines, times = [], []
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/videos/stream", json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            lines.append(json.loads(line))
            times.append(time.perf_counter() - start)
    return lines, times, time.perf_counter() - start


def test_openai_sdk_jobs_on_the_registered_model(server):
    from openai import NotFoundError, OpenAI

    client = OpenAI(base_url=f"{server['url']}/v1", api_key="unused", max_retries=0)
    video = client.videos.create_and_poll(prompt="a red ball rolls", seconds="4", poll_interval_ms=100,
                                          extra_body={"seed": 5})
    assert video.status == "completed", video.error
    # "4" s at 8 fps: 33 frames (the nearest count the chunking allows); "seconds" echoes the request.
    assert (video.model, video.seconds, video.size, video.progress) == ("toy-world", "4", "48x32", 100)
    frames = read_video(client.videos.download_content(video.id).read())
    assert frames.shape == (33, 32, 48, 3)

    other = client.videos.create_and_poll(prompt="a blue square", poll_interval_ms=100,
                                          extra_body={"num_frames": 21, "seed": 1})
    assert read_video(client.videos.download_content(other.id).content).shape[0] == 21
    listed = [v.id for v in client.videos.list()]
    assert listed[:2] == [other.id, video.id]
    assert client.videos.delete(video.id).deleted
    with pytest.raises(NotFoundError):
        client.videos.retrieve(video.id)


def test_models_health_and_openapi(server):
    url, reg = server["url"], server["registered"]
    card = httpx.get(f"{url}/v1/models").json()["data"][0]
    assert card["id"] == "toy-world" and card["object"] == "model"
    assert card["registry"]["version"] == reg.version and card["registry"]["alias"] == "production"
    assert card["frames_per_chunk"] == 3 and card["max_num_frames"] == 81
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/videos", "/v1/videos/stream", "/v1/videos/{video_id}/content", "/v1/models"} <= set(paths)


def test_ndjson_first_chunk_arrives_before_the_video_is_finished(server):
    lines, times, total = _ndjson(server["url"], {"prompt": "a red ball", "num_frames": 81, "seed": 2})
    kinds = [x["object"] for x in lines]
    assert kinds[0] == "video.stream" and kinds[-1] == "video.done" and kinds.count("video.chunk") == 7
    first = kinds.index("video.chunk")
    print(f"\nndjson 81 frames: first chunk at {times[first]:.3f} s, done at {total:.3f} s "
          f"(server: first {lines[first]['latency']:.3f} s, last {lines[-2]['latency']:.3f} s)")
    assert times[first] < times[-2]  # the first chunk was received before the last one existed
    assert lines[first]["latency"] < lines[-2]["latency"] - 0.1
    img = Image.open(io.BytesIO(base64.b64decode(lines[first]["frames"][0])))
    assert img.size == (48, 32) and len(lines[first]["frames"]) == 9
    assert sum(x.get("num_frames", 0) for x in lines if x["object"] == "video.chunk") == 81


@pytest.mark.parametrize("fmt", ["mjpeg", "mp4"])
def test_mjpeg_and_fragmented_mp4_streams_decode(server, fmt):
    r = httpx.post(f"{server['url']}/v1/videos/stream", timeout=60,
                   json={"prompt": "a ball", "num_frames": 21, "format": fmt})
    assert r.status_code == 200
    if fmt == "mp4":
        assert r.headers["content-type"] == "video/mp4"
        assert read_video(r.content).shape == (21, 32, 48, 3)
    else:
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        parts = [p.split(b"\r\n\r\n", 1)[1][:-2] for p in r.content.split(b"--frame") if b"image/jpeg" in p]
        assert len(parts) == 21 and Image.open(io.BytesIO(parts[-1])).size == (48, 32)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/videos", {"prompt": ""}, "prompt"),
    ("/v1/videos", {"prompt": "x" * 5000}, "prompt"),
    ("/v1/videos", {"prompt": "x", "num_frames": 22}, "num_frames"),
    ("/v1/videos", {"prompt": "x", "num_frames": 93}, "num_frames"),
    ("/v1/videos", {"prompt": "x", "seed": -3}, "seed"),
    ("/v1/videos", {"prompt": "x", "size": "1280x720"}, "size"),
    ("/v1/videos/stream", {"prompt": "x", "format": "gif"}, "format"),
    # What took the machine down or answered 500 (issue 14):
    ("/v1/videos", {"prompt": "x", "num_frames": 10**30}, "num_frames"),
    ("/v1/videos/stream", {"prompt": "x", "num_frames": 2**63}, "num_frames"),
    ("/v1/videos", {"prompt": "x", "num_frames": 10000002}, "num_frames"),
    ("/v1/videos", {"prompt": "x", "seconds": True}, "seconds"),
    ("/v1/videos", {"prompt": "x", "num_frames": 21, "seconds": "abc"}, "seconds"),
    ("/v1/videos", b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", "seed"),
    ("/v1/videos", {"prompt": "x", "size": "9" * 5000 + "x32"}, "size"),
    ("/v1/videos", b'{"prompt": "a \\ud800 lone surrogate"}', "prompt"),
    ("/v1/videos/stream", b'{"prompt": "\xff\xfe"}', None),
    ("/v1/videos", b'{"prompt": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", None),  # json.loads: RecursionError
])
def test_bad_inputs_are_400_with_reasons(server, path, body, param):
    raw = body if isinstance(body, bytes) else None
    r = httpx.post(f"{server['url']}{path}", json=None if raw else body, content=raw, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert "Traceback" not in r.text and "pid" not in r.text


def test_wrong_charsets_methods_and_sizes_are_4xx_and_listing_still_works(server):
    url = server["url"]
    r = httpx.post(f"{url}/v1/videos", content=b'{"prompt": "x"}',
                   headers={"content-type": "application/json; charset=klingon"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_charset"
    r = httpx.get(f"{url}/v1/videos/stream")  # a route, not a video called "stream"
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = httpx.post(f"{url}/v1/videos", content=b'{"prompt": "' + b"x" * 200_000 + b'"}')
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(f"{url}/v1/videos", params={"limit": "9" * 5000})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
    assert httpx.get(f"{url}/v1/videos").status_code == 200  # a bad prompt never became a stored job


def test_unknown_ids_are_404_and_the_server_keeps_serving(server):
    url = server["url"]
    for r in (httpx.get(f"{url}/v1/videos/video_nope"), httpx.get(f"{url}/v1/videos/video_nope/content"),
              httpx.delete(f"{url}/v1/videos/video_nope")):
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    lines, _, _ = _ndjson(url, {"prompt": "still alive", "num_frames": 9})
    assert lines[-1]["object"] == "video.done"


def test_api_key_is_required_when_configured(server):
    url = f"{server['url']}/limited"
    assert httpx.get(f"{url}/v1/models").status_code == 401
    bad = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    ok = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200 and ok.json()["data"][0]["max_num_frames"] == LONG


class _Stream:
    """A streaming request on its own connection, read in a thread; ``close`` hangs up."""

    def __init__(self, url: str, body: dict) -> None:
        self.client = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {API_KEY}"})
        self.first = threading.Event()
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, args=(url, body), daemon=True)
        self.thread.start()

    def _run(self, url: str, body: dict) -> None:
        try:
            with self.client.stream("POST", f"{url}/v1/videos/stream", json=body) as r:
                self.status = r.status_code
                for _ in r.iter_lines():
                    if '"video.chunk"' in _:
                        self.first.set()
        except Exception:  # noqa: BLE001 - closed under our feet
            pass

    def close(self) -> None:
        self.client.close()


@pytest.mark.slow
def test_overload_is_503_and_a_disconnect_frees_the_replica(server):
    url = f"{server['url']}/limited"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    a = _Stream(url, {"prompt": "long one", "num_frames": LONG})
    assert a.first.wait(30), "the first stream never produced a chunk"
    b = _Stream(url, {"prompt": "queued", "num_frames": LONG})  # waits in the single queue slot
    time.sleep(0.5)
    start = time.perf_counter()
    r = httpx.post(f"{url}/v1/videos/stream", json={"prompt": "x", "num_frames": 9}, headers=auth, timeout=30)
    assert r.status_code == 503 and int(r.headers.get("Retry-After", -1)) == 3, (r.headers, r.text)
    assert r.json()["error"]["code"] == "overloaded"
    print(f"\n503 answered in {time.perf_counter() - start:.3f} s")
    busy = httpx.get(f"{url}/healthz", timeout=5)  # the API stays responsive while generators are full
    assert busy.status_code == 200 and busy.json()["status"] == "ok"

    hang_up = time.perf_counter()
    a.close()  # the queued request gets the replica once the first generation is cancelled
    assert b.first.wait(10), "the replica was not freed after the client disconnected"
    freed_b = time.perf_counter() - hang_up
    hang_up = time.perf_counter()
    b.close()
    while True:  # free again: a new request is accepted (not 503) promptly
        r = httpx.post(f"{url}/v1/videos/stream", json={"prompt": "x", "num_frames": 9}, headers=auth,
                       timeout=30)
        if r.status_code == 200 or time.perf_counter() - hang_up > 10:
            break
        time.sleep(0.05)
    freed = time.perf_counter() - hang_up
    print(f"replica freed after disconnect: {freed_b:.3f} s (queued stream started), {freed:.3f} s (idle)")
    assert r.status_code == 200 and freed < 5


def test_job_mp4s_are_deleted_when_the_app_shuts_down(server):
    """Last in this module: it deletes the ``limited`` application."""
    from openai import OpenAI
    from ray import serve

    client = OpenAI(base_url=f"{server['url']}/limited/v1", api_key=API_KEY, max_retries=0)
    video = client.videos.create_and_poll(prompt="kept until shutdown", poll_interval_ms=100,
                                          extra_body={"num_frames": 9})
    assert video.status == "completed"
    assert len(list(server["limited_jobs"].glob("*.mp4"))) >= 1
    serve.delete("limited")  # a graceful shutdown: the job store's replica deletes its files
    assert not list(server["limited_jobs"].glob("*.mp4"))
