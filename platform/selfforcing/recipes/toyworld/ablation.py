"""The toy-scale ablation (issue 6, item 5): Teacher Forcing, Diffusion Forcing, CausVid and Self Forcing
(chunk-wise and frame-wise) students, all from the same teacher with step budgets (``RecipeConfig``'s
``baselines`` and ``self_forcing``), measured on the same evaluation set against the teacher's samples.

- teacher_forcing / diffusion_forcing: teacher weights, block-causal flow matching on renderer data.
- causvid: the ODE-initialised student distilled with DMD on Diffusion Forcing samples.
- self_forcing (chunk-wise): the main pipeline's student (its stages are reused, not retrained), trained
  on rollouts of up to ``max_rollout_frames`` with a rolling cache.
- self_forcing_short: the same, but every rollout has the training length (no rolling cache in training):
  what the long rollouts buy for extrapolation.
- self_forcing_framewise: ODE init + Self Forcing with ``frames_per_chunk = 1``, same teacher.

Writes ``OUT/ablation/{ablation.json, ablation.md, ablation_by_chunk.png}``.
"""

from __future__ import annotations

from pathlib import Path

from . import report
from .config import RecipeConfig
from .pipeline import ToyWorldRun


def run_ablation(out: str | Path, recipe: RecipeConfig, cache_dir: str | Path | None = None,
                 quiet: bool = False, command: str = "") -> dict[str, dict]:
    """Train (or reuse) every variant, evaluate, and write the table and the plot; returns the metrics."""
    out = Path(out)
    run = ToyWorldRun(out, recipe, None if cache_dir is None else Path(cache_dir), quiet)
    teacher = run.teacher()
    run.evaluate_teacher(teacher)
    teacher_videos = run.teacher_samples()["teacher"]
    results: dict[str, dict] = {}

    ode, ode_digest = run.ode_init(teacher)
    results["ode_init"] = run.evaluate_student("ode_init", ode, ode_digest, teacher_videos)
    for kind in ("teacher_forcing", "diffusion_forcing"):
        model, digest = run.baseline(teacher, kind)
        results[kind] = run.evaluate_student(f"ablation/{kind}", model, digest, teacher_videos)
    causvid_budget = recipe.self_forcing.model_copy(update={"rollout": "diffusion_forcing"})
    model, digest = run.self_forcing(ode, teacher, ode_digest, name="ablation/causvid", budget=causvid_budget)
    results["causvid"] = run.evaluate_student("ablation/causvid", model, digest, teacher_videos)
    model, digest = run.self_forcing(ode, teacher, ode_digest)
    results["self_forcing"] = run.evaluate_student("self_forcing", model, digest, teacher_videos)
    short_budget = recipe.self_forcing.model_copy(update={"max_rollout_frames": None})
    model, digest = run.self_forcing(ode, teacher, ode_digest, name="ablation/self_forcing_short",
                                     budget=short_budget)
    results["self_forcing_short"] = run.evaluate_student("ablation/self_forcing_short", model, digest,
                                                         teacher_videos)

    framewise = recipe.model_copy(update={"overrides": [*recipe.overrides, "video.frames_per_chunk=1"]})
    fw = ToyWorldRun(out / "ablation" / "framewise", framewise, run.cache_dir, quiet,
                     teacher_digest=run.teacher_digest, release_dir=run.release_dir)
    fw_ode, fw_digest = fw.ode_init(teacher)
    model, digest = fw.self_forcing(fw_ode, teacher, fw_digest)
    results["self_forcing_framewise"] = fw.evaluate_student("self_forcing", model, digest, teacher_videos)

    seconds = {r.name.replace("ablation/", ""): r.info.get("seconds") for r in run.runner.records}
    seconds["self_forcing_framewise"] = next(
        (r.info.get("seconds") for r in fw.runner.records if r.name == "self_forcing"), None
    )
    for name, m in results.items():
        if seconds.get(name) is not None:
            m["train_seconds"] = seconds[name]
    write_ablation(out / "ablation", results, recipe, command)
    return results


def write_ablation(folder: Path, results: dict[str, dict], recipe: RecipeConfig, command: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    report.write_metrics(results, folder / "ablation.json")
    note = (f"Step budgets: Self Forcing / CausVid {recipe.self_forcing.steps} steps of "
            f"{recipe.self_forcing.batch_size} rollouts; Teacher / Diffusion Forcing {recipe.baselines.steps} "
            f"steps of {recipe.baselines.batch_size} videos.")
    report.write_summary(folder, "ablation", "Toy-world ablation", results, recipe.eval.window_frames // 3,
                         command, [note])
