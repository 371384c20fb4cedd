"""Streaming generation: determinism, batching, chunk accounting, rolling cache, checkpoints, CLI."""

import numpy as np
import pytest
import torch

from selfforcing.cli import main
from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline, read_video
from selfforcing.models.factory import save_generator


@pytest.fixture(scope="module")
def pipe():
    return VideoPipeline.from_config(load_config("tiny"), device="cpu")


def test_chunks_stream_with_exact_frame_accounting(pipe):
    chunks = list(pipe.stream("a red square", num_frames=81, seed=3))
    assert len(chunks) == 7
    # The causal VAE turns the first latent frame into 1 frame and every later one into 4.
    assert [c.frames.shape[1] for c in chunks] == [9] + [12] * 6
    assert [c.frame_start for c in chunks] == [0, 9, 21, 33, 45, 57, 69]
    assert [c.latent_start for c in chunks] == [0, 3, 6, 9, 12, 15, 18]
    assert all(c.frames.dtype == np.uint8 for c in chunks)
    elapsed = [c.elapsed for c in chunks]
    assert elapsed == sorted(elapsed)


def test_same_seed_same_video_and_batch_equals_single(pipe):
    a = pipe.generate(["a red square", "a blue circle"], 21, seed=[5, 9], decode=False)
    b = pipe.generate(["a red square"], 21, seed=[5], decode=False)
    c = pipe.generate(["a blue circle"], 21, seed=[9], decode=False)
    torch.testing.assert_close(a.latents[:1], b.latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.latents[1:], c.latents, atol=1e-5, rtol=1e-5)
    again = pipe.generate(["a red square"], 21, seed=[5], decode=False)
    assert torch.equal(b.latents, again.latents)
    other = pipe.generate(["a red square"], 21, seed=[6], decode=False)
    assert not torch.allclose(b.latents, other.latents)


def test_rolling_cache_generates_past_the_window(pipe):
    long_ = pipe.generate("a red square", 81, seed=1, window_frames=6, decode=False)
    full = pipe.generate("a red square", 81, seed=1, decode=False)
    assert long_.latents.shape == full.latents.shape == (1, 21, 4, 4, 6)
    # Identical while the video still fits the window, different once frames are evicted.
    torch.testing.assert_close(long_.latents[:, :6], full.latents[:, :6])
    assert not torch.allclose(long_.latents[:, 12:], full.latents[:, 12:])


def test_initial_latents_are_written_first(pipe):
    start = pipe.generate("a red square", 21, seed=2, decode=False).latents[:, :3]
    chunks = list(pipe.stream("a red square", 21, seed=4, initial_latents=start, decode=False))
    assert chunks[0].given and torch.equal(chunks[0].latents, start)
    assert sum(1 for c in chunks if not c.given) == 2
    plain = pipe.generate("a red square", 21, seed=4, decode=False).latents
    assert not torch.allclose(chunks[1].latents, plain[:, :3])


def test_bad_frame_count_names_nearest_valid(pipe):
    with pytest.raises(ValueError, match=r"nearest valid counts: \[69, 81\]"):
        list(pipe.stream("x", num_frames=80))


def test_saved_generator_directory_reproduces_video(pipe, tmp_path):
    path = save_generator(pipe.config, pipe.model, tmp_path / "gen")
    loaded = VideoPipeline.from_config(load_config("tiny"), checkpoint=path, device="cpu")
    a = pipe.generate("a red square", 21, seed=0, decode=False).latents
    b = loaded.generate("a red square", 21, seed=0, decode=False).latents
    assert torch.equal(a, b)


def test_cli_generate_writes_requested_frames(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    assert main(["generate", "--preset", "tiny", "--prompt", "a red square", "--num-frames", "33",
                 "--seed", "7", "--out", str(out), "--quiet"]) == 0
    frames = read_video(out)
    assert frames.shape == (33, 32, 48, 3)
    assert main(["generate", "--preset", "tiny", "--prompt", "x", "--num-frames", "32",
                 "--out", str(tmp_path / "bad.mp4"), "--quiet"]) == 2
    assert "nearest valid counts" in capsys.readouterr().err


def test_frame_wise_generation_streams_one_latent_frame_per_chunk():
    pipe = VideoPipeline.from_config(load_config("tiny", overrides=["video.frames_per_chunk=1"]), device="cpu")
    chunks = list(pipe.stream("a red square", num_frames=21, seed=0))
    assert [c.latents.shape[1] for c in chunks] == [1] * 6
    assert [c.frames.shape[1] for c in chunks] == [1] + [4] * 5
