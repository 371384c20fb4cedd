"""3D rotary position embedding exactly as Wan2.1 computes it.

Each head's ``head_dim`` channels form ``c = head_dim/2`` adjacent pairs (2i, 2i+1) treated as complex
numbers. The pairs are split ``(c - 2(c//3), c//3, c//3)`` between frame, row and column positions; a part
with ``m`` pairs rotates pair ``j`` by ``pos * theta^(-2j/(2m))``. Angles are computed in float64 (as Wan
does) and only then rounded, so large global frame indices in long streams stay accurate.

``rope_table`` memoises the tables per (position, grid, device): a chunk's five model calls (and every
later video) reuse one table instead of recomputing float64 angles on every forward.
"""

from __future__ import annotations

import functools
import math

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Pairs given to (frame, row, column) positions for one head."""
    c = head_dim // 2
    return (c - 2 * (c // 3), c // 3, c // 3)


def _axis_angles(positions: torch.Tensor, num_pairs: int, theta: float, period: int | None = None) -> torch.Tensor:
    """[len(positions), num_pairs] rotation angles in float64.

    ``period``: pair j turns by 2 pi (j + 1) / period per position instead of theta^(-j/m), so positions
    live on a ring of ``period`` tokens (a shift by p + period rotates exactly like a shift by p).
    """
    pairs = torch.arange(num_pairs, dtype=torch.float64, device=positions.device)
    inv_freq = 2 * math.pi * (pairs + 1) / period if period else theta ** (-pairs / num_pairs)
    return torch.outer(positions.to(torch.float64), inv_freq)


def rope_angles(
    frame_start: int,
    num_frames: int,
    height: int,
    width: int,
    head_dim: int,
    theta: float = 10000.0,
    device: torch.device | str = "cpu",
    spatial_period: tuple[int, int] | None = None,
    time_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [num_frames*height*width, head_dim/2] float32, tokens frame-major then h, w.

    ``frame_start`` is the global index of the first frame: cached generation keeps counting frames
    across chunks (and past the cache window), so a chunk's keys are rotated as in the full sequence.
    ``spatial_period`` (rows, cols) makes the row and column parts periodic (``_axis_angles``): for worlds
    that wrap around, such as the toy world's torus. Not Wan's; None keeps Wan's frequencies exactly.
    ``time_scale`` multiplies the frame axis's angles (1.0 = Wan's): with Wan's formula the fastest pair
    turns 1 rad per frame whatever theta, which tells frame t-1 from t and t-2 only weakly; a few-frame
    world whose motion must be read frame to frame needs faster pairs (docs/results/toyworld.md).
    """
    ct, ch, cw = rope_split(head_dim)
    f = torch.arange(frame_start, frame_start + num_frames, device=device)
    h = torch.arange(height, device=device)
    w = torch.arange(width, device=device)
    at = (time_scale * _axis_angles(f, ct, theta))[:, None, None, :].expand(num_frames, height, width, ct)
    ph, pw = spatial_period or (None, None)
    ah = _axis_angles(h, ch, theta, ph)[None, :, None, :].expand(num_frames, height, width, ch)
    aw = _axis_angles(w, cw, theta, pw)[None, None, :, :].expand(num_frames, height, width, cw)
    angles = torch.cat([at, ah, aw], dim=-1).reshape(num_frames * height * width, ct + ch + cw)
    return torch.cos(angles).float(), torch.sin(angles).float()


@functools.lru_cache(maxsize=32)
def _cached_table(args: tuple, kwargs: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    return rope_angles(*args, **dict(kwargs))


def rope_table(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``rope_angles(*args, **kwargs)`` memoised: the same values, bit for bit, computed once per chunk
    position and grid instead of once per forward. The tensors are shared: read only.

    At most 32 tables are kept (a 1.3B chunk's is 2.4 MB). Arguments must be hashable (ints, floats,
    a device, a tuple or None), as ``rope_angles``'s are.
    """
    return _cached_table(args, tuple(sorted(kwargs.items())))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` [B, L, heads, head_dim] by angles [L, head_dim/2]
    (or [B, L, head_dim/2] when the rows of a batch sit at different frames).

    Eagerly, the pairs are multiplied as complex numbers (x1 + i x2)(cos + i sin): the same products
    and sums as the written-out rotation, in three kernels instead of nine. Under ``torch.compile`` the
    written-out form is used instead: inductor fuses it into one kernel but has no complex codegen.
    Computed in float32 (float64 for float64 inputs) and cast back to ``x``'s dtype.
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    if cos.ndim == 2:
        cos, sin = cos[None], sin[None]
    c, s = cos.to(compute)[:, :, None, :], sin.to(compute)[:, :, None, :]  # [B|1, L, 1, head_dim/2]
    pairs = x.to(compute).reshape(*x.shape[:-1], -1, 2)
    if torch.compiler.is_compiling():
        x1, x2 = pairs[..., 0], pairs[..., 1]
        return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2).to(x.dtype)
    return torch.view_as_real(torch.view_as_complex(pairs) * torch.complex(c, s)).flatten(-2).to(x.dtype)
