"""Admission: one decision per replica over rows, waiting slots, sessions and the K/V memory of every
row, parked ones included. The accounting is checked against the bytes of the real tensors of a real
(tiny) generation loop under random sequences of opens, pauses, slow readers and closes."""

from __future__ import annotations

import asyncio

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfforcing.config import load_config
from selfforcing.inference import VideoPipeline
from selfforcing.inference.batching import ChunkBatcher
from selfforcing.serving.admission import Admission, Capacity, Load, Overloaded, kv_row_nbytes
from selfforcing.serving.batch_loop import BatchLoop

WINDOW = 6  # latent frames (2 chunks): rolling, so long streams stay in constant memory


@pytest.fixture(scope="module")
def pipe():
    return VideoPipeline.from_config(load_config("tiny", overrides=["runtime.device=cpu"]), device="cpu")


@pytest.fixture(scope="module")
def text(pipe):
    return pipe.encode_prompts(["a red ball"]).float().numpy()


def row_bytes(pipe) -> int:
    return kv_row_nbytes(pipe.model, pipe.geometry().tokens_per_frame, WINDOW)


def test_row_bytes_equal_the_tensors_a_batch_allocates(pipe, text):
    batcher = ChunkBatcher(pipe, max_streams=3, window_frames=WINDOW)
    for i in range(2):
        batcher.add(f"s{i}", torch.as_tensor(text), i, None)
    with torch.no_grad():
        batcher.step()
    cache = batcher.cache
    text_bytes = sum(k.nbytes + v.nbytes for k, v in filter(None, cache.text_kv))
    # frames: allocated for all 3 rows at once; prompt K/V: for the 2 active rows
    assert cache.nbytes / 3 + text_bytes / 2 == row_bytes(pipe)


def test_wan_1_3b_row_at_832x480_is_6_gb():
    from selfforcing.config.geometry import video_geometry
    from selfforcing.models.wan_dit import WanDiT

    config = load_config("wan2.1-t2v-1.3b")
    with torch.device("meta"):
        model = WanDiT(config.model).to(torch.bfloat16)
    row = kv_row_nbytes(model, video_geometry(config).tokens_per_frame, 21)
    assert row == 2 * 30 * (21 * 1560 + 512) * 1536 * 2 and 6.0e9 < row < 6.2e9


def test_capacity_and_refusals_name_the_limit():
    cap = Capacity(max_streams=2, max_waiting=2, max_sessions=1, row_nbytes=100, memory_budget=500)
    assert cap.fixed_nbytes == 200 and cap.max_admitted == 3  # memory binds before the 4 slots
    admission = Admission(cap)
    admission.check(Load(running=2, waiting=0, parked=0, sessions=0))
    with pytest.raises(Overloaded, match="memory budget"):
        admission.check(Load(running=1, waiting=0, parked=2, sessions=0))  # parked streams count
    with pytest.raises(Overloaded, match="2 generation rows and 2 waiting"):
        Admission(Capacity(2, 2, 1, 100)).check(Load(running=2, waiting=1, parked=1, sessions=0))
    with pytest.raises(Overloaded, match="1 live sessions"):
        admission.check(Load(running=1, waiting=0, parked=0, sessions=1), session=True)
    assert Capacity(2, 2, 1, 100, batching=False, memory_budget=300).max_admitted == 2  # + 1 row headroom
    with pytest.raises(ValueError, match="cannot hold one stream"):
        Capacity(max_streams=8, max_waiting=4, max_sessions=4, row_nbytes=6 << 30, memory_budget=50 << 30)


ops = st.lists(st.one_of(
    st.tuples(st.just("open"), st.booleans()),  # (open, as a live session)
    st.tuples(st.sampled_from(["pause", "resume", "close", "slow", "read"]), st.integers(0, 7)),
    st.tuples(st.just("step"), st.just(0)),
), min_size=3, max_size=14)


@settings(max_examples=25, deadline=None)
@given(ops, st.booleans())
def test_measured_kv_memory_never_exceeds_what_admission_accounts(pipe, text, script, batching):
    row = row_bytes(pipe)
    fixed_rows = 2 if batching else 1
    cap = Capacity(max_streams=2, max_waiting=2, max_sessions=1, row_nbytes=row, batching=batching,
                   memory_budget=(fixed_rows + 3) * row)  # memory admits 3 streams of the 4 slots

    async def scenario() -> None:
        loop = BatchLoop(lambda rows: ChunkBatcher(pipe, max_streams=rows, window_frames=WINDOW), cap,
                         max_buffered=2)
        handles, slow = [], set()

        def check() -> None:
            load = loop.load()
            assert load.admitted <= cap.max_admitted and load.running <= cap.max_streams
            assert load.sessions <= cap.max_sessions
            # Closed streams free their rows at the next step boundary, before anything new is allocated.
            assert loop.kv_nbytes() <= cap.worst_case_nbytes(load.admitted + loop.closing)
            assert loop.kv_nbytes() <= cap.memory_budget

        for op, arg in script:
            live = [h for h in handles if h.stream_id in loop.entries]
            if op == "open":
                load = loop.load()
                refuse = load.admitted >= cap.max_admitted or (arg and load.sessions >= cap.max_sessions)
                try:
                    handles.append(loop.open(text, len(handles), None, session=arg))
                    assert not refuse
                except Overloaded:
                    assert refuse
            elif op == "step":
                steps = loop.steps
                for _ in range(200):
                    if loop.steps > steps or not loop.running:
                        break
                    await asyncio.sleep(0.01)
            elif live:
                h = live[arg % len(live)]
                if op == "pause":
                    loop.pause(h.stream_id)
                elif op == "resume":
                    loop.resume(h.stream_id)
                elif op == "close":
                    h.close()
                elif op == "slow":
                    slow.add(h.stream_id)
                else:
                    slow.discard(h.stream_id)
            for h in live:  # readers: all but the slow ones keep up
                while h.stream_id not in slow and h.buffered:
                    await h.get()
            check()
        for h in handles:
            h.close()
        for _ in range(500):  # closed streams leave when the step in progress ends
            if not loop.closing and not loop.running:
                break
            await asyncio.sleep(0.01)
        check()
        assert loop.kv_nbytes() <= cap.fixed_nbytes

    asyncio.run(scenario())
