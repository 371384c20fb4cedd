"""The shipped teacher: the GPU recipe script writes a release (without PyAV, Ray, MLflow, diffusers or
pyarrow), loading checks its checksum and config, and the pipeline chains every stage to its digest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import selfforcing
from selfforcing.config import load_config
from selfforcing.recipes.toyworld import RecipeConfig
from selfforcing.recipes.toyworld.config import TeacherBudget
from selfforcing.recipes.toyworld.pipeline import ToyWorldRun
from selfforcing.recipes.toyworld.release import (
    GENERATOR_DIR,
    RELEASE_FILE,
    ReleaseError,
    has_release,
    load_release,
    read_release,
)

# What the GPU machine lacks (pydantic and diffusers come as wheels there; diffusers must not be needed).
ABSENT = ("av", "ray", "mlflow", "diffusers", "pyarrow", "deepspeed", "fastapi")
TINY = ["--steps", "3", "--batch-size", "4", "--eval-seeds", "1", "--eval-captions", "4", "--diag-n", "4"]
TINY_BUDGET = TeacherBudget(steps=3, batch_size=4)


def run_without(absent: tuple[str, ...], module: str, args: list[str], timeout: int = 600):
    """Run ``python -m module args`` with ``absent`` packages made unimportable (as if not installed)."""
    code = (
        "import runpy, sys\n"
        f"for name in {absent!r}:\n"
        "    sys.modules[name] = None  # import fails; importlib.util.find_spec(name) says not installed\n"
        f"sys.argv = [{module!r}, *sys.argv[1:]]\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(selfforcing.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory) -> Path:
    """The GPU recipe script on the CPU with a tiny budget: a small CPU-trained stand-in release."""
    out = tmp_path_factory.mktemp("teacher_gpu")
    done = run_without(ABSENT, "selfforcing.recipes.toyworld.teacher_gpu",
                       ["--device", "cpu", "--out", str(out), "--threads", "1", "--quiet", *TINY])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def toy():
    return load_config("toy", None, ["runtime.device=cpu"])


@pytest.mark.slow
def test_gpu_script_writes_weights_config_command_metrics_and_checksums(gpu_run: Path, toy):
    release = read_release(gpu_run / "release")
    assert release.budget == TINY_BUDGET and release.preset == "toy"
    assert release.command.startswith("python -m selfforcing.recipes.toyworld.teacher_gpu --device cpu")
    for key in ("fidelity", "direction_agreement", "motion_agreement", "step_opposite", "swap_opposite_t950",
                "swap_oracle_opposite_t950", "still_x0_moving_t850"):
        assert key in release.metrics
    assert release.train_stats["steps"] == 3
    report = json.loads((gpu_run / "report.json").read_text())
    assert report["weights_sha256"] == release.weights_sha256 and report["metrics"] == release.metrics
    for line in (gpu_run / "SHA256SUMS").read_text().splitlines():  # sha256sum -c format
        digest, name = line.split("  ")
        assert hashlib.sha256((gpu_run / name).read_bytes()).hexdigest() == digest
    # The shipped config names no device; the exact denoiser sees every caption's motion at t=950.
    assert "device: auto" in (gpu_run / "release" / GENERATOR_DIR / "selfforcing.yaml").read_text()
    assert release.metrics["swap_oracle_opposite_t950"] > 0.1


@pytest.mark.slow
def test_loading_checks_the_checksum_and_the_config(gpu_run: Path, toy, tmp_path: Path):
    model, release = load_release(toy, gpu_run / "release", TINY_BUDGET)
    assert not any(p.requires_grad for p in model.parameters())

    with pytest.raises(ReleaseError, match=r"teacher\.steps: released 3 != wanted 3600"):
        load_release(toy, gpu_run / "release", TeacherBudget())
    wider = load_config("toy", None, ["runtime.device=cpu", "model.num_layers=5"])
    with pytest.raises(ReleaseError, match=r"model\.num_layers: released 4 != wanted 5"):
        load_release(wider, gpu_run / "release", TINY_BUDGET)

    tampered = tmp_path / "release"
    subprocess.run(["cp", "-r", str(gpu_run / "release"), str(tampered)], check=True)
    weights = tampered / GENERATOR_DIR / "diffusion_pytorch_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(blob))
    with pytest.raises(ReleaseError, match="sha256 .* the files changed after release"):
        load_release(toy, tampered, TINY_BUDGET)
    with pytest.raises(ReleaseError, match="no shipped teacher"):
        read_release(tmp_path / "nowhere")
    (tampered / RELEASE_FILE).write_text("{}")
    with pytest.raises(ReleaseError, match="not a valid teacher release"):
        read_release(tampered)


@pytest.mark.slow
def test_pipeline_uses_the_release_and_keys_every_stage_by_its_inputs_digests(gpu_run: Path, tmp_path: Path):
    quick = RecipeConfig.quick()
    recipe = quick.model_copy(update={"teacher_source": "released", "teacher": TINY_BUDGET})
    run = ToyWorldRun(tmp_path / "run", recipe, tmp_path / "cache", quiet=True, release_dir=gpu_run / "release")
    teacher = run.teacher()
    assert run.teacher_digest == read_release(gpu_run / "release").weights_sha256
    assert [r.status for r in run.runner.records] == ["released"]

    ode, digest = run.ode_init(teacher)
    assert run.runner.records[-1].status == "ran"
    run.ode_init(teacher)
    assert run.runner.records[-1].status == "skipped"
    # Another teacher under the same configs (retrained, older code, another machine): never reused.
    run.teacher_digest = "0" * 64
    run.ode_init(teacher)
    assert run.runner.records[-1].status == "ran"
    # A cached checkpoint whose bytes changed after its stage finished is rebuilt, not loaded.
    weights = tmp_path / "run" / "ode_init" / "generator" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    run.ode_init(teacher)
    assert run.runner.records[-1].status == "ran"
    # Self Forcing's key holds its student's digest: a retrained ODE init is a new Self Forcing stage.
    _, sf_a = run.self_forcing(ode, teacher, digest)
    run.self_forcing(ode, teacher, digest)
    assert run.runner.records[-1].status == "skipped"
    run.self_forcing(ode, teacher, "f" * 64)
    assert run.runner.records[-1].status == "ran"
    log = [json.loads(line) for line in (tmp_path / "run" / "stage_log.jsonl").read_text().splitlines()]
    assert log[0]["stage"] == "teacher" and log[0]["status"] == "released"


def test_trained_teacher_key_holds_code_version_and_training_config(tmp_path: Path, monkeypatch):
    """Without a release the teacher is trained; its key changes with the stage's code version and with the
    training config, not with how long a stage may run before it is aborted."""
    from selfforcing.recipes.toyworld import config as cfg_mod
    from selfforcing.recipes.toyworld import teacher as teacher_mod

    recipe = RecipeConfig.quick()
    run = ToyWorldRun(tmp_path / "a", recipe, tmp_path / "cache", quiet=True, release_dir=tmp_path / "none")
    assert not has_release(tmp_path / "none")

    def key(r: ToyWorldRun) -> str:
        return cfg_mod.config_key("teacher", f"code-v{teacher_mod.CODE_VERSION}", r.identity, r.recipe.teacher)

    base = key(run)
    limited = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"abort_after_minutes": 5.0})})
    assert key(ToyWorldRun(tmp_path / "b", limited, tmp_path / "cache", quiet=True)) == base
    wider = recipe.model_copy(update={"overrides": [*recipe.overrides, "model.num_layers=5"]})
    assert key(ToyWorldRun(tmp_path / "c", wider, tmp_path / "cache", quiet=True)) != base
    with monkeypatch.context() as m:
        m.setattr(teacher_mod, "CODE_VERSION", teacher_mod.CODE_VERSION + 1)
        assert key(run) != base

    model = run.teacher()  # no release: trained, then cached by that key
    assert run.runner.records[-1].status == "ran" and run.teacher_digest is not None
    assert (tmp_path / "cache" / f"teacher-{base}" / "stage.json").exists()
    again = ToyWorldRun(tmp_path / "a", recipe, tmp_path / "cache", quiet=True, release_dir=tmp_path / "none")
    reused = again.teacher()
    assert again.runner.records[-1].status == "skipped" and again.teacher_digest == run.teacher_digest
    assert all(torch.equal(a, b) for a, b in zip(reused.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
