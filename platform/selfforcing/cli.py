"""The ``selfforcing`` command: generate videos, run the embedded demo, inspect configs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, dump_config, load_config, preset_names


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"named preset: {', '.join(preset_names())}")
    p.add_argument("--config", type=Path, help="YAML config (applied after the preset)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override, e.g. --set model.num_layers=4 (repeatable)",
    )


def _load(args: argparse.Namespace):
    preset = args.preset
    if preset is None and args.config is None:
        preset = "tiny"
    return load_config(preset, args.config, args.overrides)


def _output_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(count)]


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .inference import Mp4Writer, VideoPipeline

    config = _load(args)
    pipe = VideoPipeline.from_config(config, checkpoint=args.checkpoint, which=args.which, device=args.device)
    geo = pipe.geometry(args.num_frames)  # validates the frame count before any work
    prompts = args.prompt
    paths = _output_paths(args.out, len(prompts))
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    writers = [Mp4Writer(p, pipe.config.video.fps) for p in paths]
    bar = tqdm(total=geo.pixel_frames, unit="frame", desc="generating", disable=args.quiet)
    first = None
    for chunk in pipe.stream(
        prompts, geo.pixel_frames, args.seed,
        window_frames=args.window_frames, sink_frames=args.sink_frames,
    ):
        first = chunk.elapsed if first is None else first
        for writer, frames in zip(writers, chunk.frames, strict=True):
            writer.add(frames)
        bar.update(chunk.frames.shape[1])
    bar.close()
    for w in writers:
        w.close()
    for p in paths:
        print(f"wrote {p} ({geo.pixel_frames} frames, first chunk after {first:.2f}s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: the tiny preset, streamed to ``OUT/demo.mp4``."""
    ns = argparse.Namespace(
        preset="tiny", config=None, overrides=[], checkpoint=None, which="generator_ema", device="cpu",
        prompt=["a red square moving left"], num_frames=81, seed=7,
        out=Path(args.out) / "demo.mp4", window_frames=None, sink_frames=None, quiet=False,
    )
    return cmd_generate(ns)


def cmd_config(args: argparse.Namespace) -> int:
    print(dump_config(_load(args)), end="")
    return 0


def cmd_toyworld_run(args: argparse.Namespace) -> int:
    """Teacher -> ODE init -> Self Forcing -> evaluation on the toy world (stages cached and resumed)."""
    from .recipes.toyworld import RecipeConfig, run_toyworld
    from .recipes.toyworld.ablation import run_ablation

    recipe = RecipeConfig.quick() if args.quick else RecipeConfig()
    if args.retrain_teacher:
        recipe.teacher_source = "train"
    if args.objective:
        recipe.self_forcing.objective = args.objective
    if args.threads is not None:
        if args.threads <= 0:
            raise SystemExit(f"--threads={args.threads} must be a positive number of CPU threads")
        recipe.threads = args.threads
    run_toyworld(args.out, recipe, cache_dir=args.cache_dir, quiet=args.quiet)
    if args.ablation:
        run_ablation(args.out, recipe, args.cache_dir, args.quiet, command="selfforcing " + " ".join(sys.argv[1:]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfforcing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate videos from prompts, streamed chunk by chunk to MP4")
    _add_config_args(gen)
    gen.add_argument("--prompt", action="append", required=True, help="text prompt (repeat for a batch)")
    gen.add_argument("--num-frames", type=int, default=None, help="pixel frames (default: the config's)")
    gen.add_argument("--seed", type=int, default=0, help="noise seed; same seed, same video")
    gen.add_argument("--out", type=Path, default=Path("outputs/video.mp4"), help="MP4 path")
    gen.add_argument("--checkpoint", help="Wan2.1 directory, .safetensors, or Self Forcing .pt")
    gen.add_argument("--which", default="generator_ema", choices=["generator", "generator_ema"])
    gen.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: config runtime.device)")
    gen.add_argument("--window-frames", type=int, default=None, help="rolling KV cache size (latent frames)")
    gen.add_argument("--sink-frames", type=int, default=None, help="sink frames kept in a rolling cache")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="the main job on the embedded default (tiny preset, local)")
    demo.add_argument("--out", default="outputs", help="output directory")
    demo.set_defaults(func=cmd_demo)

    toy = sub.add_parser("toyworld", help="the toy-world pipeline (CPU, minutes)")
    toy_sub = toy.add_subparsers(dest="toyworld_command", required=True)
    toy_run = toy_sub.add_parser("run", help="teacher -> ODE init -> Self Forcing -> metrics.json, videos")
    toy_run.add_argument("--out", type=Path, required=True, help="run directory (resumed when it exists)")
    toy_run.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run in about a minute")
    toy_run.add_argument("--objective", choices=["dmd", "sid", "gan"], help="Self Forcing objective (dmd)")
    toy_run.add_argument("--cache-dir", type=Path, help="teacher cache (default $SELFFORCING_CACHE/toyworld)")
    toy_run.add_argument(
        "--threads", type=int,
        help="torch CPU threads (default 1: on a shared machine more threads spin-wait; on an idle 2-core "
        "machine 2 threads made a teacher step 1.7x faster)",
    )
    toy_run.add_argument(
        "--retrain-teacher", action="store_true",
        help="train the teacher with the recipe's budget instead of using the shipped one (about 3 hours on 2 "
        "CPU cores; `python -m selfforcing.recipes.toyworld.teacher_gpu` does it in ~3 min on one GPU)",
    )
    toy_run.add_argument("--ablation", action="store_true",
                         help="then train TF / DF / CausVid / frame-wise Self Forcing students (OUT/ablation)")
    toy_run.add_argument("--quiet", action="store_true", help="no progress output")
    toy_run.set_defaults(func=cmd_toyworld_run)

    cfg = sub.add_parser("config", help="print the resolved config as YAML")
    _add_config_args(cfg)
    cfg.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
