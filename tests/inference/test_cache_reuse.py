"""Streams reuse one KV cache from the pipeline's pool, and reuse changes no number."""

import torch

from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline


def test_consecutive_streams_reuse_the_cache_buffers_and_match_a_fresh_pipeline():
    cfg = load_config("tiny")
    pipe = VideoPipeline.from_config(cfg, device="cpu")
    buffers = []

    def watch(module, args, kwargs):
        buffers.append(kwargs["kv_cache"].k.data_ptr() if kwargs["kv_cache"].k is not None else None)

    handle = pipe.model.register_forward_pre_hook(watch, with_kwargs=True)
    first = pipe.generate("a red square", 33, seed=1, decode=False).latents
    second = pipe.generate("a blue circle", 33, seed=2, decode=False).latents
    handle.remove()
    ptrs = {p for p in buffers if p is not None}
    assert len(ptrs) == 1  # the second video wrote into the first one's buffers
    fresh = VideoPipeline.from_config(cfg, device="cpu").generate("a blue circle", 33, seed=2, decode=False)
    assert torch.equal(second, fresh.latents)
    assert not torch.equal(first, second)
