"""Preallocated key/value cache for autoregressive generation: full, rolling (windowed) and sink.

Keys are stored *after* RoPE, rotated by their global frame index, so the attention result does not
depend on where a frame sits in the buffer. That lets the rolling cache be a ring: writing a chunk
overwrites the oldest non-sink frames in place, with no copies, and the frames a chunk may see are always
a prefix of the buffer. All index arithmetic happens once per model call on Python ints
(``KVCache.begin`` returns a ``CacheStep``); layers only slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attention import AttentionPattern

_MIN_GROWTH_FRAMES = 8


@dataclass(frozen=True)
class CacheStep:
    """Index plan of one model call over frames [start_frame, end_frame), shared by every layer."""

    start_frame: int
    end_frame: int
    tokens_per_frame: int
    # (first token of the chunk, last+1, first slot token, last+1): contiguous runs to copy.
    write_runs: tuple[tuple[int, int, int, int], ...]
    # Slot token ranges of frames visible to this chunk that precede it (for the gradient path).
    context_runs: tuple[tuple[int, int], ...]
    # After the write, the visible frames (the chunk included) are exactly this buffer prefix.
    visible_tokens: int


@dataclass
class KVCache:
    """Self-attention K/V of earlier frames for each layer, plus each layer's prompt K/V.

    Create with ``WanDiT.new_kv_cache``. ``window_frames=None`` keeps every frame (the buffer grows
    geometrically if ``max_frames`` was not given); otherwise it holds ``sink_frames`` permanent frames
    and a ring of the ``window_frames - sink_frames`` most recent ones, so memory is constant.
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
    frames_written: int = 0
    text_key: tuple | None = None
    text_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.pattern = AttentionPattern(None, self.window_frames, self.sink_frames)
        self.text_kv = [None] * self.num_layers

    # ----------------------------------------------------------------------------- geometry
    @property
    def is_rolling(self) -> bool:
        return self.window_frames is not None

    @property
    def capacity_frames(self) -> int:
        return 0 if self.k is None else self.k.shape[2] // (self.tokens_per_frame or 1)

    def slot(self, frame: int) -> int:
        """Buffer slot (in frames) holding global frame ``frame``."""
        if not self.is_rolling or frame < self.sink_frames:
            return frame
        ring = self.window_frames - self.sink_frames
        return self.sink_frames + (frame - self.sink_frames) % ring

    def _slot_runs(self, frames: range) -> list[tuple[int, int]]:
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

    def begin(self, start_frame: int, num_frames: int, tokens_per_frame: int) -> CacheStep:
        """Validate a call over frames [start, start+num) and plan its reads and writes."""
        end = start_frame + num_frames
        if self.tokens_per_frame is None:
            self.tokens_per_frame = tokens_per_frame
        elif tokens_per_frame != self.tokens_per_frame:
            raise ValueError(
                f"this cache holds frames of {self.tokens_per_frame} tokens, got {tokens_per_frame} "
                "(a different resolution needs a new cache)"
            )
        if start_frame < 0 or start_frame > self.frames_written:
            raise ValueError(
                f"start_frame={start_frame} must be in [0, {self.frames_written}] (frames written so far); "
                "frames must be generated without gaps"
            )
        if self.is_rolling:
            recent = self.window_frames - self.sink_frames
            if num_frames > recent:
                raise ValueError(
                    f"a chunk of {num_frames} frames does not fit the rolling window "
                    f"(window_frames - sink_frames = {recent})"
                )
            if end < self.frames_written:
                raise ValueError(
                    f"a rolling cache cannot rewrite frames before the newest ones: end frame {end} < "
                    f"{self.frames_written} already written"
                )
            needed = self.window_frames
        else:
            needed = end if self.max_frames is None else max(end, self.max_frames)
        if self.k is None or self.capacity_frames < needed:
            if self.is_rolling or self.max_frames is not None:
                self._allocate(needed)
            else:  # unbounded full cache: amortised doubling, never a copy per chunk
                self._allocate(max(needed, 2 * self.capacity_frames, _MIN_GROWTH_FRAMES))

        t = tokens_per_frame
        write_runs = tuple(
            ((f - start_frame) * t, (f - start_frame + n) * t, s * t, (s + n) * t)
            for f, s, n in self._slot_runs(range(start_frame, end))
        )
        context_frames = [
            f for a, b in self.pattern.visible_ranges(end) for f in range(a, min(b, start_frame))
        ]
        context_runs = []
        for f, s, n in self._slot_runs(context_frames):
            del f
            context_runs.append((s * t, (s + n) * t))
        visible = min(end, self.window_frames) if self.is_rolling else end
        return CacheStep(start_frame, end, t, write_runs, tuple(context_runs), visible * t)

    def commit(self, step: CacheStep) -> None:
        """Record that the call of ``step`` wrote its frames (called once, after all layers)."""
        self.frames_written = max(self.frames_written, step.end_frame)

    def write(self, layer: int, step: CacheStep, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store a chunk's post-RoPE keys/values [B, tokens, H, D]; never part of an autograd graph."""
        for a, b, sa, sb in step.write_runs:
            self.k[layer, :, sa:sb] = k[:, a:b].detach()
            self.v[layer, :, sa:sb] = v[:, a:b].detach()

    def visible(self, layer: int, step: CacheStep) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of every frame the chunk sees, itself included (views, after ``write``)."""
        n = step.visible_tokens
        return self.k[layer, :, :n], self.v[layer, :, :n]

    def context(self, layer: int, step: CacheStep) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys/values of the visible frames *before* the chunk (detached), or None at the start."""
        if not step.context_runs:
            return None
        ks = [self.k[layer, :, a:b] for a, b in step.context_runs]
        vs = [self.v[layer, :, a:b] for a, b in step.context_runs]
        if len(ks) == 1:
            return ks[0], vs[0]
        return torch.cat(ks, dim=1), torch.cat(vs, dim=1)

    # ----------------------------------------------------------------------------- text
    def use_text(self, key: tuple) -> None:
        """Drop the prompt K/V when the prompt changed (prompt switching keeps the frame cache)."""
        if key != self.text_key:
            self.text_key = key
            self.text_kv = [None] * self.num_layers

    def reset(self) -> None:
        """Forget every frame and the prompt; keep the buffers for reuse."""
        self.frames_written = 0
        self.text_key = None
        self.text_kv = [None] * self.num_layers

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()
