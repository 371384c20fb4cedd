"""The Generator deployment's own logic, run in-process (its Serve wrapper is covered by tests/integration):
the per-request time limit ends a stream with a ``timeout`` error after the chunk that crossed it, and a
full replica answers ``Refused`` (an item, not an exception Serve would log as a failure)."""

from __future__ import annotations

import asyncio

from selfforcing.config import load_config
from selfforcing.models.text_encoder import TextEncoder
from selfforcing.serving.deployments import GeneratorDeployment, GeneratorSettings
from selfforcing.serving.messages import ChunkItem, Refused, StreamFailure, StreamOpened, StreamRequest
from selfforcing.serving.model_source import ModelSourceArgs


def _collect(dep, spec, text) -> list[dict]:
    async def run():
        return [item async for item in dep.stream(spec, text)]

    return asyncio.run(run())


def test_per_request_time_limit_ends_the_stream_with_a_timeout_error():
    source = ModelSourceArgs(preset="tiny", config_overrides=["runtime.device=cpu"], default_model_uri=None)
    dep = GeneratorDeployment.func_or_class(source, device="cpu", torch_threads=1, timeout_s=0.0,
                                            max_num_frames=21)
    encoder = TextEncoder.from_config(load_config("tiny").text_encoder)
    text = encoder.encode(["a red ball"]).float().numpy()  # what the TextEncoder deployment sends
    num_chunks = dep.pipeline.geometry(21).num_chunks
    assert num_chunks >= 2
    items = _collect(dep, StreamRequest(seed=3, num_frames=21), text)
    assert [type(it) for it in items] == [StreamOpened, ChunkItem, StreamFailure]  # one chunk, then the limit
    assert items[2].code == "timeout" and f"after chunk 1/{num_chunks}" in items[2].message

    dep.timeout_s = 300.0  # a generous limit lets the same replica finish the whole video
    items = _collect(dep, StreamRequest(seed=3, num_frames=21), text)
    assert [type(it) for it in items] == [StreamOpened] + [ChunkItem] * num_chunks


def test_a_full_replica_refuses_with_an_item():
    source = ModelSourceArgs(preset="tiny", config_overrides=["runtime.device=cpu"], default_model_uri=None)
    dep = GeneratorDeployment.func_or_class(source, device="cpu", torch_threads=1, max_num_frames=21,
                                            settings=GeneratorSettings(max_streams=1, max_waiting=0))
    text = TextEncoder.from_config(load_config("tiny").text_encoder).encode(["a ball"]).float().numpy()

    async def run():
        first = dep.stream(StreamRequest(seed=1, num_frames=21), text)
        opened = await anext(first)
        refused = [item async for item in dep.stream(StreamRequest(seed=2, num_frames=21), text)]
        rest = [item async for item in first]
        return opened, refused, rest

    opened, refused, rest = asyncio.run(run())
    assert isinstance(opened, StreamOpened) and not opened.waiting
    assert len(refused) == 1 and isinstance(refused[0], Refused) and "1 generation rows" in refused[0].reason
    assert [type(it) for it in rest] == [ChunkItem, ChunkItem]
