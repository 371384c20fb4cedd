"""Compiled DiT blocks: equal to eager, one graph set for every chunk position, eager fallback."""

import gc

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.diffusion.samplers import timesteps_like
from selfforcing.inference import VideoPipeline
from selfforcing.inference.compiled import CompiledBlocks
from selfforcing.models import WanDiT


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test starts from an empty dynamo cache (graph counts and recompile limits are per test)."""
    yield
    torch._dynamo.reset()
    gc.collect()


class CountingBackend:
    """A torch.compile backend that runs the captured graphs as they are and counts compilations."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        return gm.forward


def _model() -> WanDiT:
    torch.manual_seed(0)
    return WanDiT(load_config("tiny").model).eval()


def _chunks(model: WanDiT, positions, window=None):
    """Chunk-by-chunk calls (a denoising call and a cache-writing call per chunk) -> flows."""
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 16, 32, generator=g)
    cache = model.new_kv_cache(1, window_frames=window, max_frames=None if window else 3 * len(positions))
    out = []
    with torch.no_grad():
        for start in positions:
            x = torch.randn(1, 3, 4, 4, 6, generator=g)
            out.append(model(x, timesteps_like(x, 700.0), text, kv_cache=cache, start_frame=start))
            model(x, timesteps_like(x, 0.0), text, kv_cache=cache, start_frame=start)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("window", [None, 6])
def test_one_graph_set_serves_every_chunk_position(window):
    """The cache's position logic stays out of the graphs: after the first chunk, later positions (and
    the ring cache's wrap-around) compile nothing new, and the compiled blocks give eager's result."""
    positions = [0, 3, 6, 9, 12, 15]
    eager = _chunks(_model(), positions, window)
    model = _model()
    backend = CountingBackend()
    compiled = CompiledBlocks(model, "default", backend=backend)
    _chunks(model, positions[:1], window)
    after_first = backend.graphs
    got = _chunks(model, positions, window)
    assert after_first > 0 and backend.graphs == after_first
    assert compiled.active and compiled.calls > 0
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)


def test_compile_failure_falls_back_to_eager_for_good():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    eager = _chunks(_model(), [0, 3])
    model = _model()
    compiled = CompiledBlocks(model, "default", backend=broken_backend)
    with pytest.warns(RuntimeWarning, match="running eagerly"):
        got = _chunks(model, [0, 3])
    assert torch.equal(got, eager)
    assert not compiled.active and "no C++ compiler" in compiled.error
    assert all("forward" not in vars(block) for block in model.blocks)  # the model's own forward again


def test_an_error_eager_raises_too_is_the_callers():
    model = _model()
    compiled = CompiledBlocks(model, "default", backend=CountingBackend())
    cache = model.new_kv_cache(1, max_frames=3)
    x = torch.randn(1, 3, 4, 4, 6)
    with torch.no_grad(), pytest.raises(ValueError, match="start_frame=3 must be in"):
        model(x, timesteps_like(x, 0.0), torch.zeros(1, 4, 32), kv_cache=cache, start_frame=3)
    assert compiled.error is None


def test_bad_compile_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: \\['none', 'default', 'max-autotune-no-cudagraphs'\\]"):
        CompiledBlocks(_model(), "reduce-overhead")
    assert not CompiledBlocks(_model(), "none").active


@pytest.mark.slow
def test_inductor_compiled_pipeline_equals_eager():
    """The real compiler (inductor's C++ backend on the CPU), through the pipeline's config switch."""
    text = torch.randn(1, 16, 32)
    videos = []
    for mode in ("none", "default"):
        pipe = VideoPipeline.from_config(
            load_config("tiny", overrides=[f"runtime.compile={mode}"]), device="cpu", text_encoder=False
        )
        videos.append(pipe.generate([""], 21, seed=[3], text_embeddings=text, decode=False).latents)
        if mode == "default":
            assert pipe.compiled.active and pipe.compiled.calls == 2 * 5 * 2  # chunks x calls x blocks
    torch.testing.assert_close(videos[1], videos[0], rtol=1e-4, atol=1e-4)
