"""Preallocated key/value cache for autoregressive generation: full, rolling (windowed) and sink.

Keys are stored *after* RoPE, rotated by their global frame index, so the attention result does not
depend on where a frame sits in the buffer. That lets the rolling cache be a ring: writing a chunk
overwrites the oldest non-sink frames in place, with no copies, and the frames a chunk may see are always
a prefix of the buffer. All index arithmetic happens once per model call on Python ints
(``KVCache.begin`` returns a ``CacheStep``); layers only slice.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch

from .attention import AttentionPattern

_MIN_GROWTH_FRAMES = 8


@dataclass(frozen=True)
class RowPlan:
    """Where one row's chunk goes and what it may see, in buffer tokens."""

    # (first token of the chunk, last+1, first slot token, last+1): contiguous runs to copy.
    write_runs: tuple[tuple[int, int, int, int], ...]
    # Slot token ranges of frames visible to this chunk that precede it (for the gradient path).
    context_runs: tuple[tuple[int, int], ...]
    # After the write, the visible frames (the chunk included) are exactly this buffer prefix.
    visible_tokens: int


@dataclass(frozen=True)
class CacheStep:
    """Index plan of one model call, shared by every layer.

    ``shared`` means every row starts at the same frame (one generation, or a training batch): then one
    plan serves all rows and reads/writes are single slices. Otherwise (streams batched together at
    different positions) each row has its own plan and attention masks the shorter rows' padding.
    """

    start_frames: tuple[int, ...]
    num_frames: int
    tokens_per_frame: int
    rows: tuple[RowPlan, ...]
    # [B, 1, 1, visible_tokens] bool, False on shorter rows' padding; None when every row sees the same
    # prefix. Built once per call on the device (fills, no host-to-device copy), shared by all layers.
    key_mask: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def shared(self) -> bool:
        return len(self.rows) == 1

    @property
    def start_frame(self) -> int:
        return self.start_frames[0]

    @property
    def end_frame(self) -> int:
        return self.start_frames[0] + self.num_frames

    @property
    def visible_tokens(self) -> int:
        return max(r.visible_tokens for r in self.rows)


@dataclass
class KVCache:
    """Self-attention K/V of earlier frames for each layer and row, plus the prompt's K/V.

    Create with ``WanDiT.new_kv_cache``. ``window_frames=None`` keeps every frame (the buffer grows
    geometrically if ``max_frames`` was not given); otherwise it holds ``sink_frames`` permanent frames
    and a ring of the ``window_frames - sink_frames`` most recent ones, so memory is constant.

    Rows are independent streams. Usually all rows advance together; a stream batcher can instead
    give each row its own position (``begin`` with one start frame per row), retire a row and start a
    new stream in it (``keep_rows`` / ``add_row``) between chunks. Only the first ``active_rows`` rows
    take part in a model call.
    """

    num_layers: int
    batch_size: int
    num_heads: int
    head_dim: int
    window_frames: int | None = None
    sink_frames: int = 0
    max_frames: int | None = None
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    k: torch.Tensor | None = field(default=None, repr=False)
    v: torch.Tensor | None = field(default=None, repr=False)
    tokens_per_frame: int | None = None
    text_key: tuple | None = None
    text_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.pattern = AttentionPattern(None, self.window_frames, self.sink_frames)
        self.text_kv = [None] * self.num_layers
        self.row_frames = [0] * self.batch_size  # frames written per row
        self.active_rows = self.batch_size

    # ----------------------------------------------------------------------------- geometry
    @property
    def is_rolling(self) -> bool:
        return self.window_frames is not None

    @property
    def frames_written(self) -> int:
        """Frames written so far (all active rows agree, except in a stream batcher)."""
        return max(self.row_frames[: self.active_rows], default=0)

    @property
    def capacity_frames(self) -> int:
        return 0 if self.k is None else self.k.shape[2] // (self.tokens_per_frame or 1)

    def next_frames(self) -> int | list[int]:
        """Where each active row continues: one int when the rows agree, else one per row."""
        rows = self.row_frames[: self.active_rows]
        return rows[0] if len(set(rows)) <= 1 else list(rows)

    def slot(self, frame: int) -> int:
        """Buffer slot (in frames) holding global frame ``frame``."""
        if not self.is_rolling or frame < self.sink_frames:
            return frame
        ring = self.window_frames - self.sink_frames
        return self.sink_frames + (frame - self.sink_frames) % ring

    def _slot_runs(self, frames) -> list[tuple[int, int, int]]:
        """Group consecutive frames into runs of consecutive slots: [(first frame, first slot, n)]."""
        runs: list[list[int]] = []
        for f in frames:
            s = self.slot(f)
            if runs and runs[-1][1] + runs[-1][2] == s and runs[-1][0] + runs[-1][2] == f:
                runs[-1][2] += 1
            else:
                runs.append([f, s, 1])
        return [tuple(r) for r in runs]

    # ----------------------------------------------------------------------------- storage
    def _allocate(self, frames: int) -> None:
        tokens = frames * self.tokens_per_frame
        shape = (self.num_layers, self.batch_size, tokens, self.num_heads, self.head_dim)
        k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self.k is not None:  # growing a full cache: keep what was written
            n = self.k.shape[2]
            k[:, :, :n] = self.k
            v[:, :, :n] = self.v
        self.k, self.v = k, v

    def _check_row(self, row: int, start: int, num_frames: int) -> None:
        written = self.row_frames[row]
        if start < 0 or start > written:
            raise ValueError(
                f"start_frame={start} must be in [0, {written}] (frames written so far); "
                "frames must be generated without gaps"
            )
        if self.is_rolling:
            recent = self.window_frames - self.sink_frames
            if num_frames > recent:
                raise ValueError(
                    f"a chunk of {num_frames} frames does not fit the rolling window "
                    f"(window_frames - sink_frames = {recent})"
                )
            if start + num_frames < written:
                raise ValueError(
                    f"a rolling cache cannot rewrite frames before the newest ones: end frame "
                    f"{start + num_frames} < {written} already written"
                )

    def _plan(self, start: int, num_frames: int) -> RowPlan:
        t = self.tokens_per_frame
        end = start + num_frames
        write_runs = tuple(
            ((f - start) * t, (f - start + n) * t, s * t, (s + n) * t)
            for f, s, n in self._slot_runs(range(start, end))
        )
        context = [f for a, b in self.pattern.visible_ranges(end) for f in range(a, min(b, start))]
        context_runs = tuple((s * t, (s + n) * t) for _, s, n in self._slot_runs(context))
        visible = min(end, self.window_frames) if self.is_rolling else end
        return RowPlan(write_runs, context_runs, visible * t)

    def begin(self, start_frame: int | Sequence[int], num_frames: int, tokens_per_frame: int) -> CacheStep:
        """Validate a call over frames [start, start+num) of each active row and plan it."""
        starts = (
            [start_frame] * self.active_rows if isinstance(start_frame, int) else [int(s) for s in start_frame]
        )
        if len(starts) != self.active_rows:
            raise ValueError(f"got {len(starts)} start frames for {self.active_rows} active rows")
        if self.tokens_per_frame is None:
            self.tokens_per_frame = tokens_per_frame
        elif tokens_per_frame != self.tokens_per_frame:
            raise ValueError(
                f"this cache holds frames of {self.tokens_per_frame} tokens, got {tokens_per_frame} "
                "(a different resolution needs a new cache)"
            )
        for row, start in enumerate(starts):
            self._check_row(row, start, num_frames)
        end = max(starts) + num_frames
        if self.is_rolling:
            needed = self.window_frames
        else:
            needed = end if self.max_frames is None else max(end, self.max_frames)
        if self.k is None or self.capacity_frames < needed:
            if self.is_rolling or self.max_frames is not None:
                self._allocate(needed)
            else:  # unbounded full cache: amortised doubling, never a copy per chunk
                self._allocate(max(needed, 2 * self.capacity_frames, _MIN_GROWTH_FRAMES))
        distinct = sorted(set(starts))
        plans = {s: self._plan(s, num_frames) for s in distinct}
        rows = (plans[distinct[0]],) if len(distinct) == 1 else tuple(plans[s] for s in starts)
        return CacheStep(tuple(starts), num_frames, tokens_per_frame, rows, self._key_mask(rows))

    def _key_mask(self, rows: tuple[RowPlan, ...]) -> torch.Tensor | None:
        lengths = [p.visible_tokens for p in rows]
        if len(set(lengths)) <= 1:
            return None
        mask = torch.ones(len(rows), max(lengths), dtype=torch.bool, device=self.device)
        for row, length in enumerate(lengths):
            mask[row, length:] = False  # a fill on the device: no host data, no sync
        return mask[:, None, None, :]

    def commit(self, step: CacheStep) -> None:
        """Record that the call of ``step`` wrote its frames (called once, after all layers)."""
        for row, start in enumerate(step.start_frames):
            self.row_frames[row] = max(self.row_frames[row], start + step.num_frames)

    def write(self, layer: int, step: CacheStep, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store a chunk's post-RoPE keys/values [B, tokens, H, D]; never part of an autograd graph."""
        n = self.active_rows
        if step.shared:
            for a, b, sa, sb in step.rows[0].write_runs:
                self.k[layer, :n, sa:sb] = k[:, a:b].detach()
                self.v[layer, :n, sa:sb] = v[:, a:b].detach()
            return
        for row, plan in enumerate(step.rows):
            for a, b, sa, sb in plan.write_runs:
                self.k[layer, row, sa:sb] = k[row, a:b].detach()
                self.v[layer, row, sa:sb] = v[row, a:b].detach()

    def visible(self, layer: int, step: CacheStep) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Keys/values of every frame the chunk sees, itself included (views, after ``write``).

        The third item is None when all rows see the same prefix, else a key mask [B, 1, 1, L] that is
        False on each shorter row's padding.
        """
        n, length = self.active_rows, step.visible_tokens
        return self.k[layer, :n, :length], self.v[layer, :n, :length], step.key_mask

    def context(self, layer: int, step: CacheStep) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys/values of the visible frames *before* the chunk (detached), or None at the start."""
        if not step.shared:
            raise ValueError("the gradient path needs all rows at the same position")
        runs, n = step.rows[0].context_runs, self.active_rows
        if not runs:
            return None
        ks = [self.k[layer, :n, a:b] for a, b in runs]
        vs = [self.v[layer, :n, a:b] for a, b in runs]
        if len(ks) == 1:
            return ks[0], vs[0]
        return torch.cat(ks, dim=1), torch.cat(vs, dim=1)

    # ----------------------------------------------------------------------------- rows
    def keep_rows(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in this order) as the active rows 0..len-1, e.g. when streams finish."""
        rows = list(rows)
        if rows != list(range(len(rows))) and self.k is not None:
            index = torch.tensor(rows, device=self.device)
            self.k[:, : len(rows)] = self.k[:, index]
            self.v[:, : len(rows)] = self.v[:, index]
        frames = [self.row_frames[r] for r in rows]
        self.row_frames[: len(rows)] = frames
        self.active_rows = len(rows)
        self.text_key = None  # the prompt batch changed with the rows

    def add_row(self) -> int:
        """Activate one more row for a new stream (at frame 0); returns its index."""
        if self.active_rows >= self.batch_size:
            raise ValueError(f"all {self.batch_size} rows of this cache are in use")
        row = self.active_rows
        self.row_frames[row] = 0
        self.active_rows += 1
        self.text_key = None
        return row

    # ----------------------------------------------------------------------------- text
    def use_text(self, text: torch.Tensor) -> None:
        """Drop the prompt K/V unless ``text`` is the very tensor (unmodified) they were computed from.

        A weak reference, not the storage address: a new prompt tensor may reuse a freed address.
        Prompt switching passes a new tensor and keeps the frame cache.
        """
        held = None if self.text_key is None else self.text_key[0]()
        if held is not text or self.text_key[1] != text._version:
            self.text_key = (weakref.ref(text), text._version)
            self.text_kv = [None] * self.num_layers

    def reset(self) -> None:
        """Forget every frame and the prompt; keep the buffers for reuse."""
        self.row_frames = [0] * self.batch_size
        self.active_rows = self.batch_size
        self.text_key = None
        self.text_kv = [None] * self.num_layers

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()


class KVCachePool:
    """Idle caches kept for the next generation of the same shape, so a stream reuses preallocated
    buffers instead of allocating (and zeroing) gigabytes per request.

    ``lease(key, make)`` hands out an idle cache of ``key`` (reset: no frames, no prompt) or a new one
    from ``make()``; ``give_back`` returns it. At most ``max_idle`` caches are kept, the least recently
    returned dropped first. Thread-safe: serving runs several generations at once.
    """

    def __init__(self, max_idle: int = 1) -> None:
        if max_idle < 0:
            raise ValueError(f"max_idle={max_idle} must be >= 0")
        self.max_idle = max_idle
        self._idle: OrderedDict[int, tuple[Hashable, KVCache]] = OrderedDict()
        self._lock = threading.Lock()

    def lease(self, key: Hashable, make: Callable[[], KVCache]) -> KVCache:
        with self._lock:
            for ident, (k, cache) in self._idle.items():
                if k == key:
                    del self._idle[ident]
                    return cache
        return make()

    def give_back(self, key: Hashable, cache: KVCache) -> None:
        cache.reset()
        with self._lock:
            self._idle[id(cache)] = (key, cache)
            while len(self._idle) > self.max_idle:
                self._idle.popitem(last=False)

    def __len__(self) -> int:
        return len(self._idle)
