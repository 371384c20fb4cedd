"""One attention entry point, swappable kernels, and the frame-level visibility patterns.

Block-causal attention is expressed as *which frames a chunk may see* (``AttentionPattern``). The same
pattern drives three consumers that must agree exactly: the dense mask used in tests, the per-chunk
attention of the full-sequence training path, and the KV cache's eviction rule.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AttentionFn = Callable[..., torch.Tensor]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    from flash_attn import flash_attn_func  # optional GPU extra

    if mask is not None:
        raise ValueError("the flash backend takes no mask; attention() routes masked calls to SDPA")
    return flash_attn_func(q, k, v)


ATTENTION_BACKENDS: dict[str, AttentionFn] = {"sdpa": _sdpa, "flash": _flash}


@functools.cache
def flash_available() -> bool:
    """CUDA and the flash-attn package; asked once per process (``find_spec`` walks ``sys.path``)."""
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


@functools.lru_cache(maxsize=64)
def resolve_backend(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """Pick the kernel: flash-attn on CUDA in half precision when installed, SDPA otherwise.

    Memoised per (name, device, dtype): the model asks on every forward, and the answer only depends
    on those (an error for a bad name is raised again on every call, never cached).
    """
    if name == "auto":
        half = dtype in (torch.float16, torch.bfloat16)
        return "flash" if device.type == "cuda" and half and flash_available() else "sdpa"
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; valid: {sorted(ATTENTION_BACKENDS)}")
    if name == "flash" and not flash_available():
        raise ValueError("attention backend 'flash' needs CUDA and the flash-attn package (extra 'gpu')")
    return name


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention. q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D]; no dropout.

    ``mask`` (bool, broadcastable to [B, H, Lq, Lk], True = attend) is only used when rows of a
    batch see different numbers of keys (streams at different positions); it forces SDPA.
    """
    if mask is not None or (backend == "flash" and q.dtype not in (torch.float16, torch.bfloat16)):
        backend = "sdpa"  # flash-attn has neither masks nor an fp32 kernel
    return ATTENTION_BACKENDS[backend](q, k, v, mask)


@dataclass(frozen=True)
class AttentionPattern:
    """Which key frames each query chunk sees.

    ``frames_per_chunk=None`` is bidirectional. Otherwise a query in a chunk sees every frame up to the
    end of its chunk; with ``window_frames=L`` only the last ``L - sink_frames`` of those, plus the first
    ``sink_frames`` frames of the video (L counts the sink frames, as in the Self Forcing release).
    """

    frames_per_chunk: int | None = None
    window_frames: int | None = None
    sink_frames: int = 0

    def __post_init__(self) -> None:
        if self.window_frames is None:
            if self.sink_frames:
                raise ValueError("sink_frames needs window_frames (a full cache keeps every frame)")
            return
        if self.sink_frames < 0 or self.sink_frames >= self.window_frames:
            raise ValueError(
                f"sink_frames={self.sink_frames} must be in [0, window_frames={self.window_frames})"
            )
        recent = self.window_frames - self.sink_frames
        if self.frames_per_chunk is not None and recent < self.frames_per_chunk:
            raise ValueError(
                f"window_frames - sink_frames = {recent} must hold a whole chunk "
                f"(frames_per_chunk={self.frames_per_chunk})"
            )

    @property
    def recent_frames(self) -> int | None:
        return None if self.window_frames is None else self.window_frames - self.sink_frames

    def visible_ranges(self, chunk_end: int) -> list[tuple[int, int]]:
        """Frame ranges [start, end) visible to a chunk ending (exclusively) at ``chunk_end``."""
        if self.recent_frames is None:
            return [(0, chunk_end)]
        recent_start = max(0, chunk_end - self.recent_frames)
        sink_end = min(self.sink_frames, recent_start)
        return ([(0, sink_end)] if sink_end > 0 else []) + [(recent_start, chunk_end)]

    def chunks(self, num_frames: int) -> list[tuple[int, int]]:
        """Query chunks [start, end) covering ``num_frames`` frames."""
        if self.frames_per_chunk is None:
            return [(0, num_frames)]
        if num_frames % self.frames_per_chunk:
            raise ValueError(
                f"{num_frames} frames is not a whole number of chunks of {self.frames_per_chunk}"
            )
        k = self.frames_per_chunk
        return [(s, s + k) for s in range(0, num_frames, k)]

    def frame_mask(self, num_frames: int) -> torch.Tensor:
        """Dense [F, F] bool mask, True where query frame may attend key frame (for tests/SDPA)."""
        mask = torch.zeros(num_frames, num_frames, dtype=torch.bool)
        for start, end in self.chunks(num_frames):
            visible = self.visible_ranges(end) if self.frames_per_chunk else [(0, num_frames)]
            for a, b in visible:
                mask[start:end, a:b] = True
        return mask


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: AttentionPattern,
    tokens_per_frame: int,
    backend: str = "sdpa",
) -> torch.Tensor:
    """Block-causal attention over a whole sequence, one kernel call per query chunk.

    Each chunk attends to the concatenation of its visible key ranges, so no dense mask is built and
    any backend (flash-attn included) computes it; masked-out blocks cost nothing.
    """
    num_frames = q.shape[1] // tokens_per_frame
    if pattern.frames_per_chunk is None:
        return attention(q, k, v, backend)
    outputs = []
    for start, end in pattern.chunks(num_frames):
        ranges = pattern.visible_ranges(end)
        ks = [k[:, a * tokens_per_frame : b * tokens_per_frame] for a, b in ranges]
        vs = [v[:, a * tokens_per_frame : b * tokens_per_frame] for a, b in ranges]
        kc = ks[0] if len(ks) == 1 else torch.cat(ks, dim=1)
        vc = vs[0] if len(vs) == 1 else torch.cat(vs, dim=1)
        qc = q[:, start * tokens_per_frame : end * tokens_per_frame]
        outputs.append(attention(qc, kc, vc, backend))
    return torch.cat(outputs, dim=1)
