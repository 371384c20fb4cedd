"""Train the toy world's teacher on one device and write it as a release: weights, config, command, metrics, sha256.

    python -m selfforcing.recipes.toyworld.teacher_gpu --device cuda --out DIR

The recipe's own code trains it (``train_teacher`` with ``RecipeConfig().teacher``: the platform's teacher
job on the shared training loop, in this process, with the step budget, seeds and CPU-drawn scenes and
noise of ``selfforcing toyworld run --retrain-teacher``; its checkpoints go to ``DIR/train``) and measures it
(``evaluate_teacher``: Euler + CFG samples of the 96-video evaluation set, step confusion, denoising,
stillness and caption-sensitivity diagnostics). The result differs from a CPU run only by float rounding.

Needs torch, numpy, safetensors, transformers (+ tokenizers), pydantic and pyyaml; not PyAV, Ray, MLflow,
diffusers or pyarrow. Writes into DIR:

- ``release/``: ``release.json`` + ``generator/`` (``release.write_release``). To ship it, copy it to
  ``platform/selfforcing/recipes/toyworld/released_teacher/``; it loads only with a recipe whose preset
  and teacher budget are the ones recorded (``release.check_release``).
- ``report.json``: the metrics, timings (steps/s), the environment and the command.
- ``samples.npz``: the teacher's evaluation videos (uint8 [N, T, H, W, 3]) and their prompts.
- ``SHA256SUMS``: every file of ``release/``, in ``sha256sum -c`` format.

Budgets are steps: ``--abort-after-minutes`` only aborts with an error (early, once the first steps show
that the budget cannot finish in time), it never trains less.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

T0 = time.perf_counter()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m selfforcing.recipes.toyworld.teacher_gpu", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--steps", type=int, default=None, help="teacher steps (default: the recipe's budget)")
    p.add_argument("--batch-size", type=int, default=None, help="videos per step (default: the recipe's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the toy preset, e.g. model.num_layers=6 (recorded in the release)")
    p.add_argument("--abort-after-minutes", type=float, default=None,
                   help="abort training with an error past this wall time (checked early by projection)")
    p.add_argument("--eval-seeds", type=int, default=None, help="evaluation videos per caption (recipe: 2)")
    p.add_argument("--eval-captions", type=int, default=None, help="first N captions (default: all 48)")
    p.add_argument("--diag-n", type=int, default=48, help="scenes of each denoising diagnostic")
    p.add_argument("--matmul-precision", default="high", choices=["highest", "high", "medium"],
                   help="torch.set_float32_matmul_precision on CUDA (high = TF32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def say(*parts: object) -> None:
    print(f"[teacher_gpu {time.perf_counter() - T0:6.1f}s]", *parts, flush=True)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from selfforcing.config import load_config
    from selfforcing.config.schema import RuntimeConfig

    from . import teacher as teacher_stage
    from .config import EvalBudget, RecipeConfig
    from .digest import file_sha256
    from .evaluate import EvalSet, evaluate_teacher
    from .release import GENERATOR_DIR, write_release
    from .teacher import train_teacher
    from .world import ToyData

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            say(f"FATAL: --device {args.device} but torch.cuda.is_available() is False")
            return 2
        torch.set_float32_matmul_precision(args.matmul_precision)
    recipe = RecipeConfig(overrides=list(args.overrides))
    update = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                ("abort_after_minutes", args.abort_after_minutes)) if v is not None}
    budget = recipe.teacher.model_copy(update=update)
    budget = type(budget).model_validate(budget.model_dump())  # validate the command-line values
    config = load_config(recipe.preset, None, [*recipe.overrides, f"runtime.device={device.type}"])
    command = "python -m selfforcing.recipes.toyworld.teacher_gpu " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "device": str(device), "git_commit": _git_commit()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=str(torch.version.cuda),
                   matmul_precision=args.matmul_precision)
    default = RecipeConfig().teacher
    if budget.model_dump(exclude={"abort_after_minutes"}) != default.model_dump(exclude={"abort_after_minutes"}):
        say(f"NOTE: budget differs from the recipe's default ({default}); the release loads only once "
            "TeacherBudget's defaults are changed to match")
    say(f"{env}; preset {recipe.preset} + {recipe.overrides}: dim {config.model.dim}, layers "
        f"{config.model.num_layers}, heads {config.model.num_heads}; budget {budget}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"command": command, "environment": env, "budget": budget.model_dump(mode="json"),
                    "overrides": recipe.overrides}

    def save_report() -> None:
        report["total_seconds"] = round(time.perf_counter() - T0, 1)
        (out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")

    data = ToyData(config, device)
    if device.type == "cuda":  # CUDA context and kernels warm before the clock of the first step starts
        torch.ones(8, device=device).sum().item()
    t = time.perf_counter()
    model, stats = train_teacher(config, budget, out / "train", quiet=args.quiet)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - t
    stats = {**stats, "batch_size": budget.batch_size, "steps_per_s": round(budget.steps / train_s, 2),
             "videos": budget.steps * budget.batch_size}
    report["train"] = stats
    say(f"trained {budget.steps} steps in {train_s:.1f}s ({stats['steps_per_s']} steps/s), final loss "
        f"{stats['final_loss']:.4f}")
    save_report()

    eval_budget = RecipeConfig().eval.model_copy(update={k: v for k, v in (
        ("seeds_per_caption", args.eval_seeds), ("max_captions", args.eval_captions)) if v is not None})
    eval_budget = EvalBudget.model_validate(eval_budget.model_dump())
    es = EvalSet.build(data, eval_budget)
    t = time.perf_counter()
    metrics, videos = evaluate_teacher(model.requires_grad_(False), config, data, es, args.diag_n)
    metrics["eval_seconds"] = round(time.perf_counter() - t, 1)
    report["metrics"] = metrics
    np.savez_compressed(out / "samples.npz", teacher=videos, real=es.real_videos, prompts=np.array(es.prompts))
    say("teacher: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in (
        "fidelity", "direction_agreement", "speed_agreement", "motion_agreement", "moving_fraction",
        "step_opposite", "step_other_axis", "step_wrong_speed", "swap_opposite_t950", "swap_oracle_opposite_t950")))

    shipped = config.model_copy(update={"runtime": RuntimeConfig()})  # no device in the shipped config
    release = write_release(
        out / "release", shipped, model.cpu(), preset=recipe.preset, overrides=recipe.overrides, budget=budget,
        code_version=teacher_stage.CODE_VERSION, command=command, metrics=metrics, train_stats=stats,
        environment=env,
    )
    files = sorted(p for p in (out / "release").rglob("*") if p.is_file())
    (out / "SHA256SUMS").write_text("".join(f"{file_sha256(p)}  {p.relative_to(out)}\n" for p in files))
    report["weights_sha256"] = release.weights_sha256
    save_report()
    say(f"release {out / 'release'} (weights sha256 {release.weights_sha256}; {GENERATOR_DIR}/ + release.json), "
        f"report {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
