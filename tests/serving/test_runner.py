"""Model sources and the generator runner on the tiny preset (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfforcing.config import load_config
from selfforcing.inference.pipeline import VideoPipeline
from selfforcing.models.factory import build_dit, save_generator
from selfforcing.serving.model_source import ModelSourceArgs, load_source
from selfforcing.serving.runner import (
    TextEncoderRunner,
    build_generator_pipeline,
    model_info,
)
from selfforcing.tracking import register_generator

CPU = ["runtime.device=cpu"]


@pytest.fixture(scope="module")
def tiny():
    loaded = load_source(ModelSourceArgs(config_overrides=CPU, default_model_uri=None))
    info = model_info(loaded)
    return loaded, build_generator_pipeline(loaded), info, TextEncoderRunner(loaded)


def spec(num_frames: int = 21, seed: int = 3) -> dict:
    return {"prompt": "a red ball", "num_frames": num_frames, "seed": seed, "fps": 8}


def test_preset_source_and_info(tiny):
    loaded, pipeline, info, _ = tiny
    assert (loaded.model_id, loaded.source, loaded.checkpoint) == ("selfforcing-tiny", "preset:tiny", None)
    assert info.size == "48x32" and info.frames_per_chunk == 3
    assert pipeline.text_encoder is None  # generator replicas get embeddings from the encoder service


def test_separate_text_encoder_and_generator_match_the_pipeline(tiny):
    """Embeddings from the text-encoder deployment + a generator-only pipeline == the all-in-one pipeline."""
    loaded, pipeline, _, encoder = tiny
    text = torch.from_numpy(np.asarray(encoder.encode(["a red ball"]), dtype=np.float32))
    chunks = list(pipeline.stream("a red ball", 21, 3, text_embeddings=text))
    assert [c.frames.shape[1] for c in chunks] == [9, 12] and chunks[1].frame_start == 9
    reference = VideoPipeline.from_config(loaded.config).generate("a red ball", 21, 3).frames[0]
    np.testing.assert_array_equal(np.concatenate([c.frames[0] for c in chunks]), reference)


def test_registry_default_and_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFFORCING_MODEL_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ModelSourceArgs(config_overrides=CPU, tracking_uri=uri, default_model_uri="models:/toy-world@production")
    assert load_source(args).source == "preset:tiny"  # nothing registered: the preset
    config = load_config("tiny", overrides=CPU)
    torch.manual_seed(0)
    register_generator(save_generator(config, build_dit(config, seed=9), tmp_path / "g"), "toy-world",
                       "production", uri)
    loaded = load_source(args)
    assert loaded.model_id == "toy-world" and loaded.registry["version"] == "1"
    assert loaded.source == "models:/toy-world@production" and loaded.checkpoint is not None
    by_dir = load_source(ModelSourceArgs(checkpoint=str(tmp_path / "g"), config_overrides=CPU))
    assert by_dir.model_id == "g" and by_dir.registry is None
