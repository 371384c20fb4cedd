"""Admission: the one place per generator replica that decides whether a new stream may start.

A replica holds every admitted stream in one of three states: running (a row of a batch cache),
waiting (for a free row) or parked (paused, or throttled because its reader fell behind; its K/V row
is copied aside so its batch row can serve others). Every admitted stream may be parked at any time
(a pause needs no admission), so the device memory admission must keep within is the worst case:
the batch cache (``max_streams`` rows, allocated once, when batching) plus one row per admitted stream.
(Without batching, each running stream has a one-row cache instead, and one row of headroom is kept.)
A stream is admitted only if, after it, (1) running + waiting + parked <= ``max_streams + max_waiting``,
(2) live sessions <= ``max_sessions``, (3) that worst case fits ``memory_budget``. Nothing else refuses
streams: the Serve queue in front of the replica is sized never to answer first (serve/config.yaml).

Plain Python: ``BatchLoop`` calls ``Admission.check`` on every ``open``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class Overloaded(Exception):
    """This replica admits no more streams now (the ingress answers 503 + Retry-After)."""


def kv_row_nbytes(model, tokens_per_frame: int, window_frames: int) -> int:
    """Device bytes of one stream's K/V in a rolling cache: keys and values of ``window_frames`` frames
    of ``tokens_per_frame`` tokens plus the prompt's ``text_len`` tokens, for every layer.

    At Wan2.1-1.3B, 832x480 (1560 tokens per frame), a 21-frame window in bf16: 30 layers x 2 x
    (32760 + 512) tokens x 1536 channels x 2 B = 6.1 GB per stream.
    """
    cfg = model.config
    itemsize = torch.empty((), dtype=next(model.parameters()).dtype).element_size()
    tokens = window_frames * tokens_per_frame + cfg.text_len
    return 2 * cfg.num_layers * tokens * cfg.num_heads * cfg.head_dim * itemsize


def default_kv_budget(device, fraction: float) -> int | None:
    """K/V budget when none is configured: ``fraction`` of the CUDA memory free after the model loaded
    (activations of a step need the rest); None (unlimited) on the CPU, where rows are host memory."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * fraction)


@dataclass(frozen=True)
class Capacity:
    """What one generator replica may hold at once."""

    max_streams: int  # batch rows: streams generating at once
    max_waiting: int  # admitted streams waiting for a row
    max_sessions: int  # live sessions among the admitted streams
    row_nbytes: int  # device bytes of one stream's K/V (``kv_row_nbytes``)
    batching: bool = True  # one batch cache of max_streams rows (else a one-row cache per running stream)
    memory_budget: int | None = None  # device bytes for all K/V (None: unlimited)

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.max_waiting < 0 or self.max_sessions < 0 or self.row_nbytes < 0:
            raise ValueError(f"invalid capacity {self}: max_streams must be >= 1, the others >= 0")
        if self.memory_budget is not None and self.worst_case_nbytes(1) > self.memory_budget:
            raise ValueError(
                f"the K/V memory budget of {_gb(self.memory_budget)} cannot hold one stream: the batch cache "
                f"of {self.max_streams} rows plus one parked row of {_gb(self.row_nbytes)} each need "
                f"{_gb(self.worst_case_nbytes(1))}; lower max_streams or window_frames, or raise the budget"
            )

    @property
    def fixed_nbytes(self) -> int:
        """The batch cache, allocated on the first step for ``max_streams`` rows and kept; without batching,
        one row of headroom (parking copies a stream's row before its one-row cache is dropped)."""
        return (self.max_streams if self.batching else 1) * self.row_nbytes

    def worst_case_nbytes(self, streams: int) -> int:
        """K/V bytes if ``streams`` admitted streams each held a row of their own (all parked, or, without
        batching, each running in its one-row cache), plus the batch cache."""
        return self.fixed_nbytes + streams * self.row_nbytes

    @property
    def max_admitted(self) -> int:
        """Streams admitted at most: the slots, or fewer if the memory budget binds first."""
        slots = self.max_streams + self.max_waiting
        if self.memory_budget is None or self.row_nbytes == 0:
            return slots
        return min(slots, (self.memory_budget - self.fixed_nbytes) // self.row_nbytes)


@dataclass(frozen=True)
class Load:
    """Streams a replica holds now."""

    running: int
    waiting: int
    parked: int
    sessions: int

    @property
    def admitted(self) -> int:
        return self.running + self.waiting + self.parked


class Admission:
    """``check(load, session)`` raises ``Overloaded`` naming the limit a new stream would exceed."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity

    def check(self, load: Load, session: bool = False) -> None:
        cap = self.capacity
        if session and load.sessions >= cap.max_sessions:
            raise Overloaded(f"this replica already runs {cap.max_sessions} live sessions; retry later")
        if load.admitted >= cap.max_streams + cap.max_waiting:
            raise Overloaded(
                f"all {cap.max_streams} generation rows and {cap.max_waiting} waiting slots of this replica "
                f"are taken ({load.running} running, {load.waiting} waiting, {load.parked} paused); retry later"
            )
        if load.admitted >= cap.max_admitted:
            raise Overloaded(
                f"this replica's K/V memory budget ({_gb(cap.memory_budget or 0)}) holds {cap.max_admitted} "
                f"streams of {_gb(cap.row_nbytes)} each besides its batch cache, and all are taken; retry later"
            )


def _gb(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**26 else f"{nbytes / 2**10:.3g} KiB"
