"""``run_toyworld``: teacher -> ODE pairs -> ODE initialisation -> Self Forcing -> evaluation, in one process.

Each stage is checkpointed as a ``save_generator`` directory and skipped when its config key is already
done. The teacher lives in a cache directory keyed by its config (shared by every run that uses the same
preset and budget); the students live in the run's output directory. Evaluations are stages too, so a
rerun of a finished run trains and samples nothing and only rewrites the reports.

Layout of ``out``::

    metrics.json            {stage: {metric: value}} for untrained, teacher, ode_init, self_forcing
    stage_log.jsonl         one line per stage decision (ran / skipped, seconds)
    ode_init/generator/     checkpoints (save_generator)    self_forcing/generator/
    eval/<stage>/           metrics + sample arrays          videos/<stage>_<i>.mp4   contact_sheet.png
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfforcing.config import PlatformConfig, dump_config, load_config
from selfforcing.models.factory import build_dit, load_dit, save_generator
from selfforcing.models.wan_dit import WanDiT

from . import report
from .baselines import BaselineBudget, train_baseline
from .config import RecipeConfig, config_key
from .evaluate import EvalSet, compare_students, evaluate_student, evaluate_teacher
from .stages import StageRunner
from .students import train_ode_init, train_self_forcing
from .teacher import train_teacher
from .world import ToyData

STUDENT_STAGES = ("ode_init", "self_forcing")
# Bump when evaluate_videos gains or changes a metric: cached evaluations are then recomputed (from the
# cached models; nothing is retrained). v2: moving_fraction. v3: the teacher's stillness diagnostics.
METRICS_VERSION = 3


def default_cache_dir() -> Path:
    """``$SELFFORCING_CACHE`` or ``~/.cache/selfforcing``, plus ``toyworld``."""
    return Path(os.environ.get("SELFFORCING_CACHE", Path.home() / ".cache" / "selfforcing")) / "toyworld"


class ToyWorldRun:
    """The state of one run: config, data, stage runner and the keys that chain the stages."""

    def __init__(
        self, out: Path, recipe: RecipeConfig, cache_dir: Path | None = None, quiet: bool = False,
        teacher_key: str | None = None,
    ):
        self.out = Path(out)
        self.recipe = recipe
        self.quiet = quiet
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.config: PlatformConfig = load_config(recipe.preset, None, [*recipe.overrides, "runtime.device=cpu"])
        self.data = ToyData(self.config)
        self.runner = StageRunner(self.out / "stage_log.jsonl", quiet=quiet)
        self.eval_set = EvalSet.build(self.data, recipe.eval)
        # A run with another generator chunking (frame-wise) may share a teacher by passing its key.
        self.teacher_key = teacher_key or config_key("teacher", dump_config(self.config), recipe.teacher)

    # ------------------------------------------------------------------ helpers
    def _eval_key(self, model_key: str) -> str:
        """An evaluation is cached per model, evaluation set and version of the metrics."""
        return config_key(model_key, self.recipe.eval, f"metrics-v{METRICS_VERSION}")

    def _load(self, path: Path) -> WanDiT:
        return load_dit(self.config, path / "generator").eval().requires_grad_(False)

    def _save(self, model: WanDiT, path: Path) -> None:
        save_generator(self.config, model, path / "generator")

    @staticmethod
    def _save_arrays(path: Path, **arrays: np.ndarray) -> None:
        np.savez_compressed(path / "samples.npz", **arrays)

    # ------------------------------------------------------------------ stages
    def teacher(self) -> WanDiT:
        path = self.cache_dir / f"teacher-{self.teacher_key}"

        def build(p: Path) -> dict[str, Any]:
            model, stats = train_teacher(self.config, self.recipe.teacher, self.data, self.quiet)
            self._save(model, p)
            return stats

        self.runner.run("teacher", self.teacher_key, path, build)
        return self._load(path)

    def evaluate_teacher(self, teacher: WanDiT) -> dict[str, dict]:
        """Untrained (same init seed) vs teacher, both against real videos; cached with the teacher."""
        key = self._eval_key(self.teacher_key)
        path = self.cache_dir / f"teacher-{self.teacher_key}" / f"eval-{key}"

        def build(p: Path) -> dict[str, Any]:
            untrained = build_dit(self.config, "cpu", seed=self.recipe.teacher.seed).eval()
            m0, v0 = evaluate_teacher(untrained, self.config, self.data, self.eval_set)
            m1, v1 = evaluate_teacher(teacher, self.config, self.data, self.eval_set)
            self._save_arrays(p, untrained=v0, teacher=v1, real=self.eval_set.real_videos)
            return {"untrained": m0, "teacher": m1}

        self.runner.run("eval_teacher", key, path, build)
        return json.loads((path / "stage.json").read_text())["info"]

    def teacher_samples(self):
        """The cached evaluation arrays: real, untrained and teacher videos (uint8 [N, T, H, W, 3])."""
        key = self._eval_key(self.teacher_key)
        return np.load(self.cache_dir / f"teacher-{self.teacher_key}" / f"eval-{key}" / "samples.npz")

    def ode_init(self, teacher: WanDiT) -> tuple[WanDiT, str]:
        key = config_key(self.teacher_key, self.recipe.ode_init)
        path = self.out / "ode_init"

        def build(p: Path) -> dict[str, Any]:
            model, stats = train_ode_init(teacher, self.config, self.recipe.ode_init, self.data, self.quiet)
            self._save(model, p)
            return stats

        self.runner.run("ode_init", key, path, build)
        return self._load(path), key

    def self_forcing(self, student: WanDiT, teacher: WanDiT, parent_key: str, name: str = "self_forcing",
                     budget=None) -> tuple[WanDiT, str]:
        budget = budget or self.recipe.self_forcing
        key = config_key(parent_key, budget)
        path = self.out / name

        def build(p: Path) -> dict[str, Any]:
            model, stats = train_self_forcing(
                self._clone(student), teacher, self.config, budget, self.data, self.quiet
            )
            self._save(model, p)
            return stats

        self.runner.run(name, key, path, build)
        return self._load(path), key

    def baseline(self, teacher: WanDiT, budget: BaselineBudget) -> tuple[WanDiT, str]:
        """A Teacher Forcing / Diffusion Forcing student trained on renderer data (ablation)."""
        key = config_key(self.teacher_key, budget)
        path = self.out / "ablation" / budget.kind

        def build(p: Path) -> dict[str, Any]:
            model, stats = train_baseline(teacher, self.config, budget, self.data, self.quiet)
            self._save(model, p)
            return stats

        self.runner.run(budget.kind, key, path, build)
        return self._load(path), key

    def _clone(self, model: WanDiT) -> WanDiT:
        clone = build_dit(self.config, "cpu")
        clone.load_state_dict(model.state_dict())
        return clone

    def evaluate_student(self, name: str, model: WanDiT, key: str, teacher_videos: np.ndarray) -> dict:
        ekey = self._eval_key(key)
        path = self.out / "eval" / name.replace("/", "_")

        def build(p: Path) -> dict[str, Any]:
            m, short, long = evaluate_student(
                model, self.config, self.data, self.eval_set, self.recipe.eval, teacher_videos
            )
            self._save_arrays(p, short=short, long=long)
            return m

        self.runner.run(f"eval_{name}", ekey, path, build)
        return json.loads((path / "stage.json").read_text())["info"]

    def compare_with_ode_init(self, teacher_videos: np.ndarray) -> dict[str, float]:
        """Self Forcing vs its ODE-initialised start: Fréchet margins to the teacher's samples (positive =
        Self Forcing closer) with their bootstrap spread, at the training length and extrapolated."""
        sf, ode = (np.load(self.out / "eval" / name / "samples.npz") for name in ("self_forcing", "ode_init"))
        out: dict[str, float] = {}
        for prefix, length in (("", "short"), ("extrap_", "long")):
            c = compare_students(sf[length], ode[length], teacher_videos, self.data, self.eval_set.prompts)
            name = f"{prefix}frechet_vs_ode_init"
            out.update({f"{name}_margin": c.margin, f"{name}_margin_std": c.margin_std,
                        f"{name}_closer_fraction": c.a_closer})
        return out


def _stage_info(run: ToyWorldRun, name: str) -> dict[str, Any]:
    rec = next((r for r in run.runner.records if r.name == name), None)
    return {} if rec is None else {f"train_{k}": v for k, v in rec.info.items()}


def run_toyworld(
    out: str | Path, recipe: RecipeConfig | None = None, cache_dir: str | Path | None = None,
    quiet: bool = False,
) -> dict[str, dict]:
    """Run (or resume) the whole pipeline into ``out``; returns and writes ``out/metrics.json``."""
    recipe = recipe or RecipeConfig()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    run = ToyWorldRun(Path(out), recipe, None if cache_dir is None else Path(cache_dir), quiet)
    teacher = run.teacher()
    metrics = run.evaluate_teacher(teacher)
    metrics["teacher"].update(_stage_info(run, "teacher"))
    arrays = run.teacher_samples()
    teacher_videos = arrays["teacher"]
    student, key = run.ode_init(teacher)
    metrics["ode_init"] = run.evaluate_student("ode_init", student, key, teacher_videos)
    metrics["ode_init"].update(_stage_info(run, "ode_init"))
    distilled, key = run.self_forcing(student, teacher, key)
    metrics["self_forcing"] = run.evaluate_student("self_forcing", distilled, key, teacher_videos)
    metrics["self_forcing"].update(_stage_info(run, "self_forcing"))
    metrics["self_forcing"].update(run.compare_with_ode_init(teacher_videos))
    write_reports(run, metrics, arrays)
    return metrics


def write_reports(run: ToyWorldRun, metrics: dict[str, dict], teacher_arrays) -> None:
    """metrics.json, report.md + report_by_chunk.png, MP4s per stage, the contact sheet, and a short printed
    summary."""
    out, fps, n = run.out, run.config.video.fps, run.recipe.eval.videos_to_write
    report.write_metrics(metrics, out / "metrics.json")
    rows = {"real": teacher_arrays["real"][0], "untrained": teacher_arrays["untrained"][0],
            "teacher": teacher_arrays["teacher"][0]}
    for name in ("untrained", "teacher"):
        report.write_videos(teacher_arrays[name], out / "videos", name, fps, n)
    for name in STUDENT_STAGES:
        samples = np.load(out / "eval" / name / "samples.npz")
        report.write_videos(samples["short"], out / "videos", name, fps, n)
        report.write_videos(samples["long"], out / "videos", f"{name}_extrap", fps, n)
        rows[name] = samples["short"][0]
        rows[f"{name} x3"] = samples["long"][0]
    report.contact_sheet(rows, out / "contact_sheet.png")
    report.write_summary(out, "report", "Toy world: teacher -> ODE init -> Self Forcing", metrics,
                         run.recipe.eval.window_frames // run.data.world.frames_per_chunk,
                         notes=[f"Contact sheet caption: {run.eval_set.prompts[0]!r}."])
    if not run.quiet:
        print(f"caption of the contact sheet's videos: {run.eval_set.prompts[0]!r}")
        print(report.markdown_table(metrics))
        print(f"wrote {out / 'metrics.json'}, {out / 'contact_sheet.png'}, {out / 'videos'}")
