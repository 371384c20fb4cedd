"""Serving under load: total frames/s and time to first chunk at 1-8 concurrent streams, with chunk-level
batching on and off, on 1 and 2 generator replicas, through real HTTP on loopback.

Question: what does a viewer wait for (first chunk vs whole video), and how much does batching the
concurrent streams of a replica buy? All configurations run in one process side by side, each as its own
Serve application on one local Serve instance (127.0.0.1 only), so the ratios are comparable.

    python benchmarks/serve_load.py                      # tiny preset on CPU, 81-frame videos
    python benchmarks/serve_load.py --streams 1 4 --frames 45 --configs on1 off1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx  # noqa: E402

CONFIGS = {  # name: (batching, generator replicas)
    "on1": (True, 1), "off1": (False, 1), "on2": (True, 2), "off2": (False, 2),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(names: list[str], preset: str, max_streams: int) -> str:
    from ray import serve

    from selfforcing.serving.app import ServeArgs, build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    small = {"ray_actor_options": {"num_cpus": 0.02}}
    for name in names:
        batching, replicas = CONFIGS[name]
        args = ServeArgs(
            preset=preset, default_model_uri=None, config_overrides=["runtime.device=cpu"], torch_threads=1,
            batching=batching, max_streams=max_streams, max_waiting=max_streams, max_num_frames=81,
            ingress_options=small, text_encoder_options=small,
            generator_options={"num_replicas": replicas, "autoscaling_config": None,
                               "max_ongoing_requests": 2 * max_streams, "max_queued_requests": 64,
                               "ray_actor_options": {"num_cpus": 0.1}},
        )
        serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    return f"http://127.0.0.1:{port}"


async def one_stream(client: httpx.AsyncClient, url: str, prompt: str, seed: int, frames: int) -> dict:
    """Time to first chunk, to the whole video, and frames received (no JPEG decoding: client cost ~0)."""
    start = time.perf_counter()
    first, got, steps = None, 0, []
    body = {"prompt": prompt, "num_frames": frames, "seed": seed, "format": "ndjson"}
    async with client.stream("POST", f"{url}/v1/videos/stream", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread()).decode()[:300]}")
        async for line in r.aiter_lines():
            msg = json.loads(line)
            if msg["object"] == "video.chunk":
                first = first if first is not None else time.perf_counter() - start
                got += msg["num_frames"]
                steps.append(msg["seconds"])
            elif msg["object"] == "error":
                raise RuntimeError(msg["error"])
    return {"ttfc": first, "total": time.perf_counter() - start, "frames": got, "steps": steps}


async def load(url: str, n: int, frames: int) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        runs = await asyncio.gather(*[one_stream(client, url, f"prompt {i}", i, frames) for i in range(n)])
        wall = time.perf_counter() - start
    ttfc = sorted(r["ttfc"] for r in runs)
    return {"fps": sum(r["frames"] for r in runs) / wall, "p50": statistics.median(ttfc),
            "p95": ttfc[min(len(ttfc) - 1, round(0.95 * (len(ttfc) - 1)))],
            "video": statistics.median(r["total"] for r in runs),
            "step": statistics.median(s for r in runs for s in r["steps"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--frames", type=int, default=81, help="pixel frames per video")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--configs", nargs="+", default=["on1", "off1", "on2", "off2"], choices=sorted(CONFIGS))
    p.add_argument("--repeats", type=int, default=1, help="runs per cell (the best total fps is kept)")
    args = p.parse_args()

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    base = deploy(args.configs, args.preset, max(8, max(args.streams)))
    print(f"{len(args.configs)} apps up in {time.perf_counter() - started:.0f} s; preset={args.preset}, "
          f"{args.frames}-frame videos, ndjson over loopback")
    for name in args.configs:  # warm-up: first calls build caches, threads, connections
        asyncio.run(load(f"{base}/{name}", 2, args.frames))
    results: dict[tuple[str, int], dict] = {}
    for n in args.streams:  # configurations interleaved per stream count: shared-machine noise hits all
        for name in args.configs:
            runs = [asyncio.run(load(f"{base}/{name}", n, args.frames)) for _ in range(args.repeats)]
            results[name, n] = max(runs, key=lambda r: r["fps"])
            r = results[name, n]
            print(f"  {name:>4} x{n}: {r['fps']:6.1f} fps, first chunk p50 {r['p50']:.3f} s p95 {r['p95']:.3f} s,"
                  f" video {r['video']:.2f} s, replica step {1000 * r['step']:.0f} ms", flush=True)

    print("\n| streams | " + " | ".join(f"{c} fps | {c} TTFC p50 / p95 (s)" for c in args.configs)
          + " | batching speed-up (1 replica) |")
    print("|---:|" + "---:|---:|" * len(args.configs) + "---:|")
    for n in args.streams:
        cells = [f"{results[c, n]['fps']:.0f} | {results[c, n]['p50']:.2f} / {results[c, n]['p95']:.2f}"
                 for c in args.configs]
        ratio = (f"{results['on1', n]['fps'] / results['off1', n]['fps']:.2f}x"
                 if ("on1", n) in results and ("off1", n) in results else "-")
        print(f"| {n} | " + " | ".join(cells) + f" | {ratio} |")
    solo = results.get((args.configs[0], args.streams[0]))
    if solo:
        print(f"\none stream ({args.configs[0]}): first chunk {solo['p50']:.3f} s vs full video {solo['video']:.3f} s")
    from ray import serve

    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
