"""Real-time throughput at real size, as a reference-style table measured side by side in one run.

Question: how far is streaming generation from real time (the paper: 17.0 FPS and 0.69 s to the first
chunk for Self Forcing chunk-wise, Wan2.1-1.3B, 832x480, 81 frames, 4 steps, one H100), and what does
each switch buy? Rows: end to end with the VAE (decode serial vs overlapped with the DiT), DiT only,
the precision modes (speed beside their distance to a float32 run of the same weights), compiled
blocks, the fastest combination, batched streams 1/2/4/8, VAE decode (cuDNN autotuning off/on),
frame-wise, and the rolling cache at 3x the window. Random weights (speed does not depend on them);
random prompt embeddings stand in for UMT5 (prompts are encoded once per request, off the hot path).
Rows run in that order while ``--budget`` seconds last; the ones that would not fit are listed.

    python benchmarks/throughput.py --tiny                                      # CPU dry run (~1 min)
    python benchmarks/throughput.py --preset wan2.1-t2v-1.3b --device cuda --budget 200

Imports only torch, numpy, pydantic and (for the Wan VAE) diffusers: no Ray, MLflow or DeepSpeed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch

from selfforcing.config import load_config, video_geometry
from selfforcing.diffusion.samplers import timesteps_like
from selfforcing.inference import VideoPipeline
from selfforcing.inference.batching import ChunkBatcher
from selfforcing.inference.precision import PrecisionMode
from selfforcing.models.factory import DTYPES, build_dit
from selfforcing.models.vae import build_vae

PAPER_FPS, PAPER_FIRST_S = 17.0, 0.69  # Self Forcing chunk-wise, one H100 (paper, Table 1)


class Bench:
    """The model, VAE and inputs shared by every row; rows build pipelines over them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.perf_counter()
        self.base = list(args.set)
        self.config = load_config(args.preset, overrides=self.base)
        self.device = torch.device(args.device)
        self.dtype = DTYPES[self.config.runtime.dtype]
        self.model = build_dit(self.config, self.device)
        self.vae = build_vae(self.config.vae, device=self.device, dtype=self.dtype)
        mc = self.config.model
        g = torch.Generator().manual_seed(0)
        self.text = torch.randn(1, mc.text_len, mc.text_dim, generator=g).to(self.device, self.dtype)
        self.rows: list[dict] = []
        self.accuracy: dict[str, list[float]] = {}  # precision mode -> rel L2 vs fp32 (chunk 0, chunk 1)
        self.skipped: list[str] = []
        self.unit_s = 1.0  # seconds of one default end-to-end video, once measured

    # ------------------------------------------------------------------ plumbing
    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.start)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def pipeline(self, *overrides: str):
        """A pipeline over the shared model with config ``overrides``; its model changes undone after."""
        cudnn = torch.backends.cudnn.benchmark
        cfg = load_config(self.args.preset, overrides=[*self.base, *overrides])
        pipe = VideoPipeline(cfg, self.model, None, self.vae, self.device)
        try:
            yield pipe
        finally:
            pipe.compiled.restore()
            pipe.precision.restore()
            torch.backends.cudnn.benchmark = cudnn

    def video(self, pipe: VideoPipeline, decode: bool = True, num_frames: int | None = None,
              window: int | None = None) -> tuple[float, float, int]:
        """One generation: (first-chunk s, total s, frames: pixel frames, or latent frames without decode)."""
        first, total, frames = None, 0.0, 0
        for chunk in pipe.stream([""], num_frames or self.args.num_frames, seed=0, decode=decode,
                                 text_embeddings=self.text, window_frames=window):
            first = chunk.elapsed if first is None else first
            total = chunk.elapsed
            frames += chunk.frames.shape[1] if chunk.frames is not None else chunk.latents.shape[1]
        return first, total, frames

    def timed(self, once: Callable[[], tuple[float, float, int]], repeats: int | None = None) -> dict:
        once()  # warm-up: kernels, allocator, autotuning, compilation
        runs = [once() for _ in range(repeats or self.args.repeats)]
        total = statistics.median(r[1] for r in runs)
        return {"first_s": statistics.median(r[0] for r in runs), "total_s": total,
                "frames": runs[0][2], "per_s": runs[0][2] / total}

    def add(self, group: str, label: str, res: dict, unit: str, **extra) -> dict:
        row = {"group": group, "label": label, "unit": unit, **res, **extra}
        self.rows.append(row)
        note = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
        first = "-" if res["first_s"] != res["first_s"] else f"{res['first_s']:.3f}s"
        print(f"  {label:44s} {res['per_s']:9.2f} {unit:9s} first {first} "
              f"total {res['total_s']:.3f}s {note}", flush=True)
        return row

    def fits(self, name: str, seconds: float) -> bool:
        if self.left() > seconds:
            return True
        self.skipped.append(f"{name} (needs ~{seconds:.0f}s, {self.left():.0f}s left)")
        print(f"  -- skipped {name}: needs ~{seconds:.0f}s, {self.left():.0f}s left", flush=True)
        return False


# ---------------------------------------------------------------------------------------------- rows
def end_to_end(b: Bench) -> None:
    for overlap in ("false", "true"):
        with b.pipeline(f"generation.overlap_decode={overlap}") as pipe:
            res = b.timed(lambda p=pipe: b.video(p))
        label = f"end to end, decode {'overlapped' if overlap == 'true' else 'serial'}"
        b.add("e2e", label, res, "px FPS", vs_paper_fps=res["per_s"] / PAPER_FPS)
    b.unit_s = b.rows[-1]["total_s"]
    b.rows[-1]["overlap_speedup"] = b.rows[-2]["total_s"] / b.rows[-1]["total_s"]
    print(f"  overlap speed-up: {b.rows[-1]['overlap_speedup']:.3f}x", flush=True)
    with b.pipeline() as pipe:
        b.add("dit", "DiT only", b.timed(lambda: b.video(pipe, decode=False)), "lat f/s")


def precision_accuracy(b: Bench) -> None:
    """Flow of chunk 0 (empty cache) and chunk 1 (after chunk 0 was written) at t=1000, each mode vs the
    same weights in float32 (TF32 off); the numbers gpu-bench reports as 'bf16 output vs fp32'."""
    mc = b.config.model
    geo = video_geometry(b.config)
    k = geo.frames_per_chunk
    g = torch.Generator(device=b.device).manual_seed(1234)
    shape = (1, k, mc.in_dim, geo.latent_height, geo.latent_width)
    x0, x1, clean = (torch.randn(shape, generator=g, device=b.device) for _ in range(3))

    def flows(model, dtype) -> list[torch.Tensor]:
        cache = model.new_kv_cache(1, max_frames=2 * k)
        text = b.text.to(dtype)
        with torch.no_grad():
            f0 = model(x0.to(dtype), timesteps_like(x0, 1000.0), text, kv_cache=cache, start_frame=0)
            model(clean.to(dtype), timesteps_like(clean, 0.0), text, kv_cache=cache, start_frame=0)
            f1 = model(x1.to(dtype), timesteps_like(x1, 1000.0), text, kv_cache=cache, start_frame=k)
        return [f0.double(), f1.double()]

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        ref = flows(copy.deepcopy(b.model).float(), torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        if b.device.type == "cuda":
            torch.cuda.empty_cache()
    for mode in ("default", "bf16-residual", "fp8"):
        try:
            handle = PrecisionMode(b.model, mode)
        except ValueError as err:
            print(f"  precision {mode}: unavailable ({err})", flush=True)
            continue
        try:
            out = flows(b.model, b.dtype)
        finally:
            handle.restore()
        rel = [((o - r).norm() / r.norm()).item() for o, r in zip(out, ref, strict=True)]
        b.accuracy[mode] = rel
        print(f"  precision {mode:14s} rel L2 vs fp32: chunk0 {rel[0]:.4g}, chunk1 (cache) {rel[1]:.4g}",
              flush=True)


def fast_modes(b: Bench) -> None:
    for mode in ("bf16-residual", "fp8"):
        if mode not in b.accuracy or not b.fits(f"precision {mode}", 2.5 * b.unit_s):
            continue
        rel = b.accuracy[mode][0]
        with b.pipeline(f"runtime.precision={mode}", "generation.overlap_decode=true") as pipe:
            b.add("precision", f"end to end, {mode}", b.timed(lambda p=pipe: b.video(p)), "px FPS", rel_l2=rel)
            b.add("precision", f"DiT only, {mode}", b.timed(lambda p=pipe: b.video(p, decode=False)), "lat f/s",
                  rel_l2=rel)


def batched_streams(b: Bench) -> None:
    """Total pixel frames/s of N streams sharing each model call and VAE decode (``ChunkBatcher``, rolling
    window of the default video's length), measured after every stream's first chunk."""
    base = None
    for n in b.args.streams:
        if not b.fits(f"batched x{n}", (0.6 * n + 0.5) * b.unit_s):
            break
        with b.pipeline() as pipe:
            batcher = ChunkBatcher(pipe, max_streams=n)
            for i in range(n):
                batcher.add(str(i), b.text, seed=i, num_chunks=None)
            batcher.step()  # chunk 0 (one pixel frame fewer per latent frame, first-call shapes)
            t, frames = time.perf_counter(), 0
            for _ in range(b.args.batch_steps):
                frames += sum(c.frames.shape[1] for _, c in batcher.step())
            b.sync()
            total = time.perf_counter() - t
        res = {"first_s": float("nan"), "total_s": total, "frames": frames, "per_s": frames / total}
        base = base or res["per_s"]
        b.add("batched", f"batched streams x{n} (total)", res, "px FPS", vs_one_stream=res["per_s"] / base)


def compiled(b: Bench) -> None:
    setups = [("fastest: compiled + fp8 + cuDNN autotune",
               ["runtime.compile=default", "runtime.precision=fp8", "runtime.cudnn_benchmark=true",
                "generation.overlap_decode=true"]),
              ("compiled blocks", ["runtime.compile=default", "generation.overlap_decode=true"])]
    for label, overrides in setups:
        if "fp8" in label and "fp8" not in b.accuracy:
            continue
        if not b.fits(label, b.args.compile_s + 2.5 * b.unit_s):
            continue
        with b.pipeline(*overrides) as pipe:
            res = b.timed(lambda p=pipe: b.video(p), 1)  # the warm-up compiles
            extra = {"compile_error": pipe.compiled.error} if pipe.compiled.error else {}
            b.add("compiled", f"end to end, {label}", res, "px FPS", vs_paper_fps=res["per_s"] / PAPER_FPS,
                  **extra)
            b.add("compiled", f"DiT only, {label}", b.timed(lambda p=pipe: b.video(p, decode=False), 1),
                  "lat f/s")


def vae_decode(b: Bench) -> None:
    geo = video_geometry(b.config, b.args.num_frames)
    g = torch.Generator(device=b.device).manual_seed(7)
    mc = b.config.model
    latents = torch.randn(1, geo.latent_frames, mc.in_dim, geo.latent_height, geo.latent_width, generator=g,
                          device=b.device, dtype=b.dtype)
    k = geo.frames_per_chunk

    def once() -> tuple[float, float, int]:
        decoder, t, n, first = b.vae.streaming_decoder(), time.perf_counter(), 0, None
        with torch.no_grad():
            for i in range(0, geo.latent_frames, k):
                n += decoder.decode_chunk(latents[:, i:i + k]).shape[1]
                b.sync()
                first = time.perf_counter() - t if first is None else first
        return first, time.perf_counter() - t, n

    previous = torch.backends.cudnn.benchmark
    for bench_mode in (False, True):
        torch.backends.cudnn.benchmark = bench_mode
        try:
            b.add("vae", f"VAE streaming decode, cuDNN autotune {'on' if bench_mode else 'off'}",
                  b.timed(once), "px FPS")
        finally:
            torch.backends.cudnn.benchmark = previous


def frame_wise_and_rolling(b: Bench) -> None:
    if b.fits("frame-wise", 4 * b.unit_s):
        with b.pipeline("video.frames_per_chunk=1") as pipe:
            b.add("frame-wise", "frame-wise, end to end", b.timed(lambda: b.video(pipe), 1), "px FPS")
            b.add("frame-wise", "frame-wise, DiT only", b.timed(lambda: b.video(pipe, decode=False), 1), "lat f/s")
    if b.fits("rolling", 3 * b.unit_s):
        with b.pipeline() as pipe:
            geo = pipe.geometry(b.args.num_frames)
            long_frames = 1 + (3 * geo.latent_frames - 1) * b.config.vae.temporal_compression
            res = b.timed(lambda: b.video(pipe, decode=False, num_frames=long_frames, window=geo.latent_frames), 1)
            b.add("rolling", f"rolling cache, {3 * geo.latent_frames} latent frames (window "
                  f"{geo.latent_frames}), DiT only", res, "lat f/s")


ROWS = {"e2e": end_to_end, "accuracy": precision_accuracy, "batched": batched_streams, "compiled": compiled,
        "precision": fast_modes, "vae": vae_decode, "framewise": frame_wise_and_rolling}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU dry run: tiny preset (bf16), 81 frames, 1 repeat")
    p.add_argument("--preset", default="wan2.1-t2v-1.3b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--num-frames", type=int, default=None, help="pixel frames (default: the preset's)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--batch-steps", type=int, default=2, help="timed batcher steps per stream count")
    p.add_argument("--budget", type=float, default=210.0, help="seconds for the whole run; later rows skip")
    p.add_argument("--compile-s", type=float, default=90.0, help="expected compile time (budget planning)")
    p.add_argument("--rows", default=None, help=f"comma-separated subset of {list(ROWS)} (default: all; "
                   "--tiny leaves out 'compiled': inductor on a CPU takes minutes)")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    args = p.parse_args()
    if args.tiny:
        args.preset, args.device, args.repeats = "tiny", "cpu", 1
        args.set = ["runtime.dtype=bfloat16", *args.set]
        args.num_frames = args.num_frames or 81
        args.budget = max(args.budget, 600.0)
    args.rows = args.rows or ",".join(r for r in ROWS if not (args.tiny and r == "compiled"))
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    if unknown:
        p.error(f"--rows: unknown {unknown}; valid: {list(ROWS)}")

    b = Bench(args)
    args.num_frames = args.num_frames or b.config.video.num_frames
    name = torch.cuda.get_device_name(b.device) if b.device.type == "cuda" else "cpu"
    geo = video_geometry(b.config, args.num_frames)
    print(f"device={name} torch={torch.__version__} preset={args.preset} dtype={b.dtype} "
          f"{b.config.video.width}x{b.config.video.height} video={geo.pixel_frames} frames ({geo.latent_frames} "
          f"latent, chunks of {geo.frames_per_chunk}) steps={len(b.config.schedule.denoising_steps)} "
          f"built in {time.perf_counter() - b.start:.1f}s", flush=True)
    for key in args.rows.split(","):
        print(f"== {key} ({b.left():.0f}s left)", flush=True)
        ROWS[key](b)
        save(b, name)  # after every group: a run cut short keeps what it measured

    print("\n| run | throughput | unit | first chunk s | total s | notes |\n|---|---:|---|---:|---:|---|")
    for r in b.rows:
        notes = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                          if k not in ("group", "label", "unit", "first_s", "total_s", "frames", "per_s"))
        first = "-" if r["first_s"] != r["first_s"] else f"{r['first_s']:.3f}"
        print(f"| {r['label']} | {r['per_s']:.2f} | {r['unit']} | {first} | {r['total_s']:.3f} | {notes} |")
    for mode, rel in b.accuracy.items():
        print(f"| {mode} vs fp32 (rel L2 of the flow) | chunk0 {rel[0]:.4g} | chunk1 {rel[1]:.4g} | | | |")
    if b.skipped:
        print("skipped: " + "; ".join(b.skipped))
    print(f"total {time.perf_counter() - b.start:.1f}s on {name}", flush=True)


def save(b: Bench, device_name: str) -> None:
    if b.args.json:
        with open(b.args.json, "w") as f:
            json.dump({"device": device_name, "torch": torch.__version__, "preset": b.args.preset,
                       "rows": b.rows, "accuracy": b.accuracy, "skipped": b.skipped}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
