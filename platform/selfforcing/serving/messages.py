"""Typed messages between deployments: what the ingress asks a generator replica for, what the replica
streams back, the control messages of live sessions, and the job store's replies.

Plain frozen dataclasses of numbers, strings and numpy arrays: Ray pickles them by reference to this
module, which every replica imports, and a typo in a field is an error where it is made, not a
``KeyError`` in another process.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .errors import ErrorInfo


# ---------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class StreamRequest:
    """Ingress -> generator: one bounded video of ``num_frames`` pixel frames (validated)."""

    seed: int
    num_frames: int


@dataclass(frozen=True)
class SessionRequest:
    """Ingress -> generator: a live session, until closed or after ``max_chunks`` chunks."""

    session_id: str
    seed: int
    max_chunks: int | None = None


# ---------------------------------------------------------------------------------------- stream items
@dataclass(frozen=True)
class StreamOpened:
    """The first item of every generator stream: the replica admitted it (it runs, or waits for a row).

    The ingress answers 200 on it; a replica that cannot admit sends ``Refused`` instead (-> 503).
    """

    stream_id: str
    waiting: bool  # admitted, waiting for a free batch row
    window_frames: int  # rolling KV-cache window in latent frames
    batching: bool
    control: Any = None  # live sessions: the replica's control queue (a ``ray.util.queue.Queue``)


@dataclass(frozen=True)
class Refused:
    """Instead of ``StreamOpened``: the replica's admission refused the stream (the ingress answers 503).
    An item, not an exception: a refusal is normal under load and must not be logged as a failure."""

    reason: str


@dataclass(frozen=True)
class ChunkItem:
    """One generated chunk of one stream."""

    index: int
    num_chunks: int | None  # None: a live session (unbounded)
    frame_start: int  # first pixel frame of this chunk in the video
    latent_start: int
    frames: np.ndarray  # uint8 [n, H, W, 3]
    seconds: float  # the replica's time for the batched step that made it
    elapsed: float  # seconds since the stream was opened
    batch: int  # streams in that step
    prompt_id: int = 0  # live sessions: which prompt made it
    cache_nbytes: int | None = None  # live sessions: the replica's batch cache bytes (``cache_nbytes``)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def meta(self) -> dict[str, Any]:
        """Every field but the frames (what the stream formats send as the chunk's header)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "frames"}


@dataclass(frozen=True)
class StreamFailure:
    """The stream ended early. ``message`` is safe to show a client (no internal details)."""

    code: str  # "timeout", "generation_failed"
    message: str

    def error(self) -> dict[str, Any]:
        return {"code": self.code, "type": "server_error", "message": self.message}


StreamItem = StreamOpened | Refused | ChunkItem | StreamFailure


# -------------------------------------------------------------------------------------- session control
@dataclass(frozen=True)
class SetPrompt:
    """Switch a session's prompt from its next chunk on (``text``: embeddings float32 [1, L, D])."""

    session_id: str
    text: np.ndarray
    prompt_id: int


@dataclass(frozen=True)
class Pause:
    session_id: str


@dataclass(frozen=True)
class Resume:
    session_id: str


ControlMessage = SetPrompt | Pause | Resume


# ------------------------------------------------------------------------------------------- replies
@dataclass(frozen=True)
class ReplicaStats:
    """A generator replica's load and memory (``GeneratorDeployment.stats``)."""

    streams: int  # admitted: running + waiting + parked
    running: int
    waiting: int
    parked: int  # paused or throttled (slow reader), holding a copy of their K/V row
    sessions: int
    steps: int
    batch: int  # streams in the last step
    batching: bool
    max_streams: int
    max_admitted: int  # streams this replica admits at most (slots and memory)
    cache_nbytes: int  # frame K/V of the batch caches (constant once past the window)
    kv_nbytes: int  # every K/V byte held now: batch caches, prompt K/V, parked copies
    row_nbytes: int  # K/V bytes of one stream
    memory_budget: int | None  # K/V bytes admission keeps within (None: unlimited)
    window_frames: int | None


@dataclass(frozen=True)
class StoreReply:
    """The job store's answer: a value, or the API error to raise in the ingress."""

    value: Any = None
    error: ErrorInfo | None = None
