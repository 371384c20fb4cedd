"""``run_toyworld``: teacher -> ODE pairs -> ODE initialisation -> Self Forcing -> evaluation, in one process.

Each stage is checkpointed as a ``save_generator`` directory and skipped when its key is already done. A
key names everything that made the stage: its budget, the training config, the weights' digests of its
input checkpoints (``digest.weights_sha256``) and its code version, so a student of one teacher is never
reused with another, nor a stage trained by older code. The teacher is the shipped one (``release``) or
is trained into a cache directory keyed the same way; the students live in the run's output directory.
Evaluations are stages too, so a rerun of a finished run trains and samples nothing and only rewrites the
reports.

Layout of ``out``::

    metrics.json            {stage: {metric: value}} for untrained, teacher, ode_init, self_forcing
    stage_log.jsonl         one line per stage decision (ran / skipped, seconds)
    ode_init/generator/     checkpoints (save_generator)    self_forcing/generator/
    eval/<stage>/           metrics + sample arrays          videos/<stage>_<i>.mp4   contact_sheet.png
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfforcing.config import PlatformConfig, load_config
from selfforcing.models.factory import build_dit, load_dit, save_generator
from selfforcing.models.wan_dit import WanDiT

from . import baselines, report, students
from . import teacher as teacher_stage
from .baselines import BaselineKind, train_baseline
from .config import RecipeConfig, SelfForcingBudget, config_key, training_identity
from .digest import weights_sha256
from .evaluate import EvalSet, compare_students, evaluate_student, evaluate_teacher
from .release import RELEASE_DIR, has_release, load_release
from .stages import StageRunner
from .students import train_ode_init, train_self_forcing
from .teacher import train_teacher
from .world import ToyData

STUDENT_STAGES = ("ode_init", "self_forcing")
# Bump when evaluate_videos gains or changes a metric: cached evaluations are then recomputed (from the
# cached models; nothing is retrained). v2: moving_fraction. v3: the teacher's stillness diagnostics.
# v4: step confusion classes (step_*), the teacher's caption sensitivity (swap_*).
METRICS_VERSION = 4


def default_cache_dir() -> Path:
    """``$SELFFORCING_CACHE`` or ``~/.cache/selfforcing``, plus ``toyworld``."""
    return Path(os.environ.get("SELFFORCING_CACHE", Path.home() / ".cache" / "selfforcing")) / "toyworld"


class ToyWorldRun:
    """The state of one run: config, data, stage runner and the keys that chain the stages."""

    def __init__(
        self, out: Path, recipe: RecipeConfig, cache_dir: Path | None = None, quiet: bool = False,
        teacher_digest: str | None = None, release_dir: Path = RELEASE_DIR,
    ):
        self.out = Path(out)
        self.recipe = recipe
        self.quiet = quiet
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.config: PlatformConfig = load_config(recipe.preset, None, [*recipe.overrides, "runtime.device=cpu"])
        self.data = ToyData(self.config)
        self.runner = StageRunner(self.out / "stage_log.jsonl", quiet=quiet)
        self.eval_set = EvalSet.build(self.data, recipe.eval)
        self.release_dir = Path(release_dir)
        self.identity = training_identity(self.config)
        # Set by teacher(); a run with another generator chunking (frame-wise) shares a teacher by its digest.
        self.teacher_digest: str | None = teacher_digest

    # ------------------------------------------------------------------ helpers
    def _eval_key(self, model_digest: str) -> str:
        """An evaluation is cached per model (its weights' digest), teacher (students are measured against
        its samples), evaluation set, sampler settings and version of the metrics."""
        return config_key("eval", f"metrics-v{METRICS_VERSION}", model_digest, self.teacher_digest,
                          self.recipe.eval, self.config.generation)

    def _load(self, path: Path) -> WanDiT:
        return load_dit(self.config, path / "generator").eval().requires_grad_(False)

    def _save(self, model: WanDiT, path: Path) -> str:
        """Save the generator; returns its weights' digest (what later stages' keys hold)."""
        save_generator(self.config, model, path / "generator")
        return weights_sha256(path / "generator")

    @staticmethod
    def _unchanged(path: Path, info: dict[str, Any]) -> bool:
        """A cached checkpoint still has the digest its stage recorded."""
        try:
            return weights_sha256(path / "generator") == info.get("weights_sha256")
        except FileNotFoundError:
            return False

    def _train_stage(self, name: str, key: str, path: Path, train) -> tuple[WanDiT, str]:
        """Run (or reuse) a stage whose ``train(run_dir)`` returns (model, stats); returns (model, its digest).

        The training job's run folder is ``path/run-<key>``: an interrupted stage continues from its last
        checkpoint, and a stage of another key never picks up this one's run."""

        def build(p: Path) -> dict[str, Any]:
            run_dir = p / f"run-{key}"
            for old in p.glob("run-*"):
                if old != run_dir:
                    shutil.rmtree(old, ignore_errors=True)
            model, stats = train(run_dir)
            return {**stats, "weights_sha256": self._save(model, p)}

        record = self.runner.run(name, key, path, build, check=self._unchanged)
        return self._load(path), record.info["weights_sha256"]

    @staticmethod
    def _save_arrays(path: Path, **arrays: np.ndarray) -> None:
        np.savez_compressed(path / "samples.npz", **arrays)

    # ------------------------------------------------------------------ stages
    def teacher(self) -> WanDiT:
        """The shipped teacher (``recipe.teacher_source`` released, or auto with a release in the package),
        else one trained with ``recipe.teacher`` into the cache; sets ``teacher_digest``."""
        source = self.recipe.teacher_source
        if source == "auto":
            source = "released" if has_release(self.release_dir) else "train"
            if source == "train" and not self.quiet:
                b = self.recipe.teacher
                print(f"no shipped teacher in {self.release_dir}: training one with the recipe's budget "
                      f"({b.steps} steps x {b.batch_size} videos; hours on a CPU, minutes with teacher_gpu on a "
                      "GPU); it is cached for later runs", flush=True)
        if source == "released":
            model, release = load_release(self.config, self.release_dir, self.recipe.teacher)
            self.teacher_digest = release.weights_sha256
            self.runner.record("teacher", config_key("released", release.weights_sha256), "released",
                               self.release_dir, {"weights_sha256": release.weights_sha256,
                                                  **{f"train_{k}": v for k, v in release.train_stats.items()}})
            return model
        key = config_key("teacher", f"code-v{teacher_stage.CODE_VERSION}", self.identity, self.recipe.teacher)
        model, self.teacher_digest = self._train_stage(
            "teacher", key, self.cache_dir / f"teacher-{key}",
            lambda run_dir: train_teacher(self.config, self.recipe.teacher, run_dir, self.quiet),
        )
        return model

    def _teacher_eval_dir(self) -> tuple[str, Path]:
        if self.teacher_digest is None:
            raise RuntimeError("call teacher() first: the teacher's evaluation is keyed by its digest")
        key = self._eval_key(self.teacher_digest)
        return key, self.cache_dir / f"teacher-eval-{key}"

    def evaluate_teacher(self, teacher: WanDiT) -> dict[str, dict]:
        """Untrained (same init seed) vs teacher, both against real videos; cached by the teacher's digest."""
        key, path = self._teacher_eval_dir()

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
        return np.load(self._teacher_eval_dir()[1] / "samples.npz")

    def ode_init(self, teacher: WanDiT) -> tuple[WanDiT, str]:
        """The ODE-initialised student and its digest; keyed by the teacher's digest and the ODE budget."""
        key = config_key("ode_init", f"code-v{students.ODE_INIT_CODE_VERSION}", self.identity,
                         self.config.generation, self.teacher_digest, self.recipe.ode_init)
        return self._train_stage(
            "ode_init", key, self.out / "ode_init",
            lambda run_dir: train_ode_init(teacher, self.config, self.recipe.ode_init, self.data, run_dir, self.quiet),
        )

    def self_forcing(self, student: WanDiT, teacher: WanDiT, student_digest: str, name: str = "self_forcing",
                     budget: SelfForcingBudget | None = None) -> tuple[WanDiT, str]:
        """Distil ``student`` (digest ``student_digest``) against the teacher; returns (model, digest)."""
        budget = budget or self.recipe.self_forcing
        key = config_key(name, f"code-v{students.SELF_FORCING_CODE_VERSION}", self.identity,
                         self.teacher_digest, student_digest, budget)
        return self._train_stage(
            name, key, self.out / name,
            lambda run_dir: train_self_forcing(student, teacher, self.config, budget, run_dir, self.quiet, name=name),
        )

    def baseline(self, teacher: WanDiT, kind: BaselineKind) -> tuple[WanDiT, str]:
        """A Teacher Forcing / Diffusion Forcing student trained on renderer data (ablation)."""
        budget = self.recipe.baselines
        key = config_key(kind, f"code-v{baselines.CODE_VERSION}", self.identity, self.teacher_digest, budget)
        return self._train_stage(
            kind, key, self.out / "ablation" / kind,
            lambda run_dir: train_baseline(teacher, self.config, kind, budget, run_dir, self.quiet),
        )

    def evaluate_student(self, name: str, model: WanDiT, digest: str, teacher_videos: np.ndarray) -> dict:
        """Metrics of a student (weights' digest ``digest``) against the teacher's samples; cached."""
        ekey = self._eval_key(digest)
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
    student, digest = run.ode_init(teacher)
    metrics["ode_init"] = run.evaluate_student("ode_init", student, digest, teacher_videos)
    metrics["ode_init"].update(_stage_info(run, "ode_init"))
    distilled, sf_digest = run.self_forcing(student, teacher, digest)
    metrics["self_forcing"] = run.evaluate_student("self_forcing", distilled, sf_digest, teacher_videos)
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
