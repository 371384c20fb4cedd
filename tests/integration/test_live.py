"""Live sessions and chunk-level batching through a real local Serve: WebSocket protocol, prompt switches,
constant memory past the cache window, batched == alone, and the page in headless Chromium.

One Serve application for the module: a rolling window of 6 latent frames (2 chunks) so sessions run
past it within seconds, at most 2 live sessions per replica, a short idle timeout.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import statistics
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect

WINDOW = 6  # latent frames
IDLE_S = 4.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(ray_session, tmp_path_factory):
    from ray import serve

    from selfforcing.serving.app import ServeArgs, build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    small = {"ray_actor_options": {"num_cpus": 0.1}}
    args = ServeArgs(
        preset="tiny", default_model_uri=None, config_overrides=["runtime.device=cpu"], torch_threads=1,
        window_frames=WINDOW, max_sessions=2, session_idle_timeout_s=IDLE_S,
        job_storage=str(tmp_path_factory.mktemp("jobs")), ingress_options=small, text_encoder_options=small,
        generator_options={"num_replicas": 1, "autoscaling_config": None, "max_ongoing_requests": 12,
                           "ray_actor_options": {"num_cpus": 0.3}},
    )
    started = time.perf_counter()
    serve.run(build_app(args), name="live", route_prefix="/")
    print(f"\nserve start-up (live app): {time.perf_counter() - started:.1f} s")
    yield {"url": f"http://127.0.0.1:{port}", "ws": f"ws://127.0.0.1:{port}/v1/videos/live"}
    serve.shutdown()


class Client:
    """A session client: JSON messages as dicts; a chunk header comes back with its binary media."""

    def __init__(self, url: str) -> None:
        self.ws = connect(url, open_timeout=30, max_size=None)

    def send(self, **msg) -> None:
        self.ws.send(json.dumps(msg))

    def recv(self, timeout: float = 30) -> dict:
        msg = json.loads(self.ws.recv(timeout=timeout))
        if msg["type"] in ("chunk", "done"):
            msg["media"] = [self.ws.recv(timeout=timeout) for _ in range(msg.get("messages", 0))]
        return msg

    def until(self, kind: str, timeout: float = 30) -> tuple[dict, list[dict]]:
        seen = []
        while True:
            msg = self.recv(timeout)
            if msg["type"] == kind:
                return msg, seen
            seen.append(msg)

    def close(self) -> None:
        self.ws.close()


def test_live_session_switches_prompts_and_runs_past_the_window_in_constant_memory(live_server):
    c = Client(live_server["ws"])
    c.send(type="start", prompt="a red ball", seed=3)
    session, _ = c.until("session")
    assert session["window_frames"] == WINDOW and session["size"] == "48x32" and session["seed"] == 3
    chunks: list[dict] = []
    events: list[dict] = []

    def read(n: int) -> None:
        for _ in range(n):
            msg, other = c.until("chunk")
            chunks.append(msg)
            events.extend(other)
            c.send(type="ping")  # keeps the session alive (idle timeout)

    def read_until_prompt(prompt_id: int, limit: int = 30) -> None:
        """A switch lands after the prompt is encoded, a chunk or more later on a loaded machine; a newer
        prompt sent before then would replace it (latest wins), so wait until it shows."""
        for _ in range(limit):
            read(1)
            if chunks[-1]["prompt_id"] == prompt_id:
                return
        raise AssertionError(f"prompt {prompt_id} did not take effect within {limit} chunks")

    read(3)
    c.send(type="prompt", prompt="a blue cube")
    read_until_prompt(1)
    read(2)
    c.send(type="not-a-message")  # errors are messages: the stream goes on
    c.send(type="prompt", prompt="a green cat")
    read_until_prompt(2)
    read(10)
    c.send(type="pause")
    paused, other = c.until("paused")
    chunks += [m for m in other if m["type"] == "chunk"]
    for _ in range(20):  # chunks generated before the pause took effect may still be on their way
        time.sleep(0.5)
        c.send(type="stats")
        _, other = c.until("stats")
        late = [m for m in other if m["type"] == "chunk"]
        chunks += late
        if not late:
            break
    time.sleep(1.0)
    c.send(type="stats")
    stats, other = c.until("stats")
    assert not [m for m in other if m["type"] == "chunk"], "chunks arrived while paused"
    assert stats["paused"]
    c.send(type="resume")
    read(2)
    c.send(type="close")
    c.until("closed")
    c.close()

    errors = [m["error"]["code"] for m in events if m["type"] == "error"]
    assert errors == ["unknown_message"]
    # One uninterrupted sequence: indices and frames continue across both switches and the pause.
    assert [m["index"] for m in chunks] == list(range(len(chunks)))
    for a, b in zip(chunks[:-1], chunks[1:], strict=True):
        assert b["frame_start"] == a["frame_start"] + a["num_frames"]
        assert len(a["media"]) == a["num_frames"]
    ids = [m["prompt_id"] for m in chunks]
    assert ids == sorted(ids) and set(ids) == {0, 1, 2}
    switches = [m["switch_latency"] for m in chunks if "switch_latency" in m]
    assert len(switches) == 2
    # Past the window (2 chunks) the cache stays the same size and chunks cost the same.
    assert stats["cache_nbytes"] and {m["cache_nbytes"] for m in chunks} == {stats["cache_nbytes"]}
    early = statistics.median(m["seconds"] for m in chunks[1:5])
    late = statistics.median(m["seconds"] for m in chunks[-6:])
    print(f"\nlive: {len(chunks)} chunks ({chunks[-1]['frame_start'] + chunks[-1]['num_frames']} frames, "
          f"window {WINDOW} latent frames = 2 chunks); per-chunk seconds median early {early:.3f} / late "
          f"{late:.3f}; cache {stats['cache_nbytes']} B constant; prompt switch -> first new chunk "
          f"{switches[0]:.3f} s, {switches[1]:.3f} s")
    assert late < 3 * early
    assert Image.open(io.BytesIO(chunks[-1]["media"][0])).size == (48, 32)


def test_session_limit_and_idle_timeout_are_messages(live_server):
    a, b, c = Client(live_server["ws"]), Client(live_server["ws"]), Client(live_server["ws"])
    a.send(type="start", prompt="one")
    b.send(type="start", prompt="two")
    a.until("session"), b.until("session")
    c.send(type="start", prompt="three")
    error, _ = c.until("error")
    assert error["error"]["code"] == "overloaded" and error["error"]["retry_after_s"] > 0
    a.send(type="close")
    a.until("closed")
    c.send(type="start", prompt="three")  # the same connection, once a session slot is free
    c.until("session")
    c.until("chunk")
    started = time.perf_counter()
    error, _ = b.until("error", timeout=IDLE_S + 10)  # b never sent another message
    assert error["error"]["code"] == "idle_timeout" and b.until("closed")[0]["reason"] == "idle_timeout"
    assert time.perf_counter() - started < IDLE_S + 5
    for client in (a, b, c):
        client.close()


def _ndjson_frames(url: str, body: dict, out: dict, key: str) -> None:
    frames, batches = [], []
    with httpx.stream("POST", f"{url}/v1/videos/stream", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            msg = json.loads(line)
            if msg["object"] == "video.chunk":
                batches.append(msg["batch"])
                frames += [np.asarray(Image.open(io.BytesIO(base64.b64decode(f)))) for f in msg["frames"]]
    out[key] = (np.stack(frames).astype(int), batches)


def test_a_stream_among_three_others_equals_it_alone(live_server):
    url = live_server["url"]
    body = {"prompt": "a red ball", "num_frames": 45, "seed": 7, "format": "ndjson"}
    alone: dict = {}
    _ndjson_frames(url, body, alone, "target")
    together: dict = {}
    others = [{"prompt": p, "num_frames": 45, "seed": s} for p, s in (("a cat", 1), ("a dog", 2), ("a cube", 3))]
    threads = [threading.Thread(target=_ndjson_frames, args=(url, b, together, str(i)))
               for i, b in enumerate(others)]
    threads.append(threading.Thread(target=_ndjson_frames, args=(url, body, together, "target")))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (a, batch_alone), (b, batch_together) = alone["target"], together["target"]
    assert a.shape == b.shape == (45, 32, 48, 3)
    assert max(batch_alone) == 1 and max(batch_together) >= 2, (batch_alone, batch_together)
    diff = np.abs(a - b)
    print(f"\nbatched vs alone after JPEG: max |diff| {diff.max()}, mean {diff.mean():.4f}, batch sizes "
          f"{batch_together}")
    assert diff.mean() < 0.5 and diff.max() <= 16  # identical frames up to JPEG rounding of 1-LSB input


def _chrome_or_reason() -> str | None:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    return None


def _canvas_png(driver) -> np.ndarray:
    data = driver.execute_script("return document.getElementById('canvas').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB"))


@pytest.mark.slow
def test_page_plays_the_stream_and_switches_prompt_in_headless_chromium(live_server, tmp_path):
    reason = _chrome_or_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(live_server["url"] + "/")
        text = lambda i: driver.find_element(By.ID, i).text  # noqa: E731
        driver.find_element(By.ID, "prompt").clear()
        driver.find_element(By.ID, "prompt").send_keys("a red ball bouncing")
        driver.find_element(By.ID, "start").click()
        WebDriverWait(driver, 30).until(lambda d: int(text("frames")) >= 10)
        canvas = _canvas_png(driver)
        assert canvas.shape == (32, 48, 3) and canvas.std() > 1.0, "the canvas is blank"
        before = int(text("chunks"))
        driver.find_element(By.ID, "switch").click()
        WebDriverWait(driver, 30).until(lambda d: text("prompt-id") == "1")
        WebDriverWait(driver, 30).until(lambda d: int(text("chunks")) >= before + 3)
        assert text("status") == "streaming" and text("latency").endswith("ms")
        assert text("switch-latency").endswith("ms")
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        print(f"\npage: {text('chunks')} chunks, {text('frames')} frames drawn, chunk latency {text('latency')}, "
              f"prompt switch {text('switch-latency')}; screenshot {shot}")
        keep = os.environ.get("SELFFORCING_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
        driver.find_element(By.ID, "stop").click()
        WebDriverWait(driver, 10).until(lambda d: text("status") == "closed")
    except Exception:
        state = driver.execute_script("return [document.getElementById('log').innerText, "
                                      "document.body.innerText]")
        print("\npage state at failure:", state)
        raise
    finally:
        driver.quit()
