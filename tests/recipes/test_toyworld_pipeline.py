"""The toy-world recipe end to end at --quick budgets, plus its small parts (stage runner, keys, reports)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfforcing.cli import main
from selfforcing.inference.video_io import read_video
from selfforcing.recipes.toyworld import RecipeConfig, config_key
from selfforcing.recipes.toyworld.report import contact_sheet, display_scale, markdown_table, upscale
from selfforcing.recipes.toyworld.stages import StageRunner

STAGES = ("teacher", "ode_init", "self_forcing")


def test_config_key_changes_with_budget_and_is_stable():
    a, b = RecipeConfig(), RecipeConfig()
    assert config_key(a.teacher) == config_key(b.teacher)
    b.teacher.steps += 1
    assert config_key(a.teacher) != config_key(b.teacher)
    assert config_key("x", a.teacher) != config_key("y", a.teacher)


def test_stage_runner_skips_done_stages_and_logs(tmp_path: Path):
    calls = []

    def build(p: Path) -> dict:
        calls.append(p)
        (p / "weights").write_text("w")
        return {"loss": 1.0}

    log = tmp_path / "log.jsonl"
    first = StageRunner(log, quiet=True).run("s", "k1", tmp_path / "s", build)
    second = StageRunner(log, quiet=True).run("s", "k1", tmp_path / "s", build)
    third = StageRunner(log, quiet=True).run("s", "k2", tmp_path / "s", build)  # new key: reruns
    assert [first.status, second.status, third.status] == ["ran", "skipped", "ran"]
    assert second.info == {"loss": 1.0} and len(calls) == 2
    assert [json.loads(line)["status"] for line in log.read_text().splitlines()] == ["ran", "skipped", "ran"]


def test_reports_render(tmp_path: Path):
    video = np.zeros((6, 20, 20, 3), dtype=np.uint8)
    path = contact_sheet({"a": video, "b": video[:3]}, tmp_path / "sheet.png", scale=2)
    assert Image.open(path).size[1] == 2 * (20 * 2 + 2)
    big = upscale(video, 3)
    assert big.shape == (6, 60, 60, 3) and np.array_equal(big[:, ::3, ::3], video)
    assert display_scale(10) * 10 >= 48 and display_scale(200) == 1
    table = markdown_table({"teacher": {"fidelity": 0.5}, "student": {"fidelity": 0.4}})
    assert "| fidelity | 0.500 | 0.400 |" in table


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_quick_pipeline_end_to_end_then_rerun_with_the_ablation(tmp_path: Path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["toyworld", "run", "--out", str(out), "--quick", "--cache-dir", str(cache), "--quiet"]
    assert main(argv) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(STAGES) <= set(metrics)
    quick = RecipeConfig.quick().eval
    for stage in STAGES:
        m = metrics[stage]
        assert isinstance(m["frechet_distance"], float) and m["frechet_distance"] >= 0
        assert len(m["fidelity_by_chunk"]) == 12 // 3
    for tv in (700, 850, 950):  # the teacher's stillness diagnostics, against the exact denoiser's
        assert 0 <= metrics["teacher"][f"still_x0_moving_t{tv}"] <= 1
        assert metrics["teacher"][f"still_oracle_moving_t{tv}"] == 1.0
    sf, ode = metrics["self_forcing"], metrics["ode_init"]
    for prefix in ("", "extrap_"):  # Self Forcing vs its start, with the bootstrap's spread
        assert sf[f"{prefix}frechet_vs_ode_init_margin"] == pytest.approx(
            ode[f"{prefix}frechet_distance"] - sf[f"{prefix}frechet_distance"], abs=1e-9)
        assert sf[f"{prefix}frechet_vs_ode_init_margin_std"] >= 0
        assert 0 <= sf[f"{prefix}frechet_vs_ode_init_closer_fraction"] <= 1
    for stage in ("ode_init", "self_forcing"):
        assert len(metrics[stage]["extrap_fidelity_by_chunk"]) == quick.extrapolate_frames // 3
        assert (out / stage / "generator" / "config.json").exists()
    assert Image.open(out / "contact_sheet.png").size[0] > 0
    assert Image.open(out / "report_by_chunk.png").size[0] > 0
    assert "| extrap_fidelity_by_chunk | chunk 0 |" in (out / "report.md").read_text()
    for name in ("teacher", "ode_init", "self_forcing", "self_forcing_extrap"):
        frames = read_video(out / "videos" / f"{name}_0.mp4")
        side = 10 * display_scale(10)  # the toy preset's 10x10 frames, upscaled for viewing
        assert frames.shape[1:] == (side, side, 3)
    assert read_video(out / "videos" / "self_forcing_extrap_0.mp4").shape[0] == quick.extrapolate_frames

    # A rerun trains and samples nothing of the pipeline: every stage is a cache hit. The rerun adds the
    # ablation (7 students of the same teacher), which trains only the students the pipeline lacks.
    log = out / "stage_log.jsonl"
    first_run = len(log.read_text().splitlines())
    assert main([*argv, "--ablation"]) == 0
    rerun = [json.loads(line) for line in log.read_text().splitlines()[first_run:]]
    base = [r for r in rerun if r["stage"] in ("teacher", "ode_pairs", "ode_init", "self_forcing")]
    assert {r["stage"] for r in base} >= {"teacher", "ode_init", "self_forcing"}
    assert all(r["status"] == "skipped" for r in base), base
    assert json.loads((out / "metrics.json").read_text()) == metrics

    folder = out / "ablation"
    results = json.loads((folder / "ablation.json").read_text())
    assert set(results) == {"ode_init", "teacher_forcing", "diffusion_forcing", "causvid", "self_forcing",
                            "self_forcing_short", "self_forcing_framewise"}
    for m in results.values():
        assert len(m["extrap_fidelity_by_chunk"]) == quick.extrapolate_frames // 3
    assert Image.open(folder / "ablation_by_chunk.png").size[0] > 0
    assert "| frechet_distance |" in (folder / "ablation.md").read_text()
