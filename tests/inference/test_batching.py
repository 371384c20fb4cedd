"""Chunk-level batching: streams that share model calls get exactly what they would get alone."""

import numpy as np
import pytest
import torch

from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline
from selfforcing.inference.batching import ChunkBatcher


@pytest.fixture(scope="module")
def pipe():
    return VideoPipeline.from_config(load_config("tiny"), device="cpu")


def _collect(batcher, schedule, steps):
    """Run ``steps`` batch steps; ``schedule[step]`` lists streams to add before that step."""
    got: dict[str, list] = {}
    for step in range(steps):
        for sid, text, seed, chunks in schedule.get(step, []):
            batcher.add(sid, text, seed, chunks)
        for sid, chunk in batcher.step():
            got.setdefault(sid, []).append(chunk)
    return got


def test_streams_joining_at_different_times_equal_their_solo_runs(pipe):
    prompts = {"a": "a red square", "b": "a blue circle", "c": "a green dog"}
    text = {k: pipe.encode_prompts([p]) for k, p in prompts.items()}
    batcher = ChunkBatcher(pipe, max_streams=3)
    schedule = {0: [("a", text["a"], 11, 7)], 2: [("b", text["b"], 12, 7)], 3: [("c", text["c"], 13, 3)]}
    got = _collect(batcher, schedule, 9)
    assert len(batcher) == 0  # every stream finished and left
    assert {k: len(v) for k, v in got.items()} == {"a": 7, "b": 7, "c": 3}
    for sid, seed in (("a", 11), ("b", 12), ("c", 13)):
        n = len(got[sid])
        solo = list(pipe.stream(prompts[sid], 81, seed=[seed], window_frames=batcher.window_frames))[:n]
        batched_latents = torch.cat([c.latents for c in got[sid]], dim=1)
        solo_latents = torch.cat([c.latents for c in solo], dim=1)
        assert (batched_latents - solo_latents).abs().max().item() < 1e-4, sid
        assert [c.frame_start for c in got[sid]] == [c.frame_start for c in solo]
        assert [c.latent_start for c in got[sid]] == [3 * i for i in range(n)]
        frames_diff = np.abs(
            np.concatenate([c.frames for c in got[sid]], 1).astype(int)
            - np.concatenate([c.frames for c in solo], 1).astype(int)
        )
        assert frames_diff.max() <= 1, sid


def test_prompt_switch_in_a_batch_equals_switch_alone(pipe):
    t1, t2, t3 = (pipe.encode_prompts([p]) for p in ("a red square", "a blue circle", "a cat"))

    def run(with_other: bool):
        batcher = ChunkBatcher(pipe, max_streams=2)
        batcher.add("s", t1, 5, None)
        if with_other:
            batcher.add("o", t3, 6, None)
        chunks = []
        for step in range(6):
            if step == 3:
                batcher.set_text("s", t2)
            chunks += [c for sid, c in batcher.step() if sid == "s"]
        return torch.cat([c.latents for c in chunks], dim=1)

    together, alone = run(True), run(False)
    assert (together - alone).abs().max().item() < 1e-4
    # The switch changed the video from that chunk on (and not before).
    batcher = ChunkBatcher(pipe, max_streams=1)
    batcher.add("s", t1, 5, None)
    unswitched = torch.cat([batcher.step()[0][1].latents for _ in range(6)], dim=1)
    assert torch.allclose(unswitched[:, :9], alone[:, :9], atol=1e-5)
    assert not torch.allclose(unswitched[:, 9:], alone[:, 9:], atol=1e-3)


def test_unbounded_stream_runs_past_the_window_in_constant_memory(pipe):
    batcher = ChunkBatcher(pipe, max_streams=1, window_frames=6)
    batcher.add("s", pipe.encode_prompts(["a red square"]), 0, None)
    batcher.step()
    nbytes = batcher.cache.nbytes
    for _ in range(10):
        (sid, chunk), = batcher.step()
    assert chunk.latent_start == 30 and batcher.cache.nbytes == nbytes
    with pytest.raises(ValueError, match="already exists"):
        batcher.add("s", pipe.encode_prompts(["x"]), 0, None)
    with pytest.raises(ValueError, match="rows of this cache are in use"):
        batcher.add("t", pipe.encode_prompts(["x"]), 0, None)
