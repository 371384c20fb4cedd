"""Per-frame fit of the toy-world renderer: the best (colour, shape, cell) explaining each frame.

For a frame x and a template with colour offset a = colour - background over the shape mask M at a cell,
the squared residual is  E - gain  with  E = sum ||x - bg||^2  and  gain = 2 a . sum_M (x - bg) - |M| ||a||^2,
so one pass of mask-weighted cell sums scores every colour, shape and cell at once (no template is drawn).
Fidelity maps the best residual r to 1 / (1 + r / r0), r0 = the residual of an empty frame (the energy of
an average object): 1 for a perfect frame, 0.5 when the error is as large as the object, -> 0 for noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from selfforcing.data.toyworld.config import ToyWorldConfig
from selfforcing.data.toyworld.shapes import shape_mask


@dataclass
class FrameFit:
    """Best template per frame; all arrays are [N, T] unless noted."""

    colour: np.ndarray  # int64, index into config.colours
    shape: np.ndarray  # int64, index into config.shapes
    position: np.ndarray  # int64 [N, T, 2], (row, col) top-left cell
    residual: np.ndarray  # float64, sum of squared errors in [-1, 1] pixel units
    mse: np.ndarray  # float64, residual per pixel channel
    fidelity: np.ndarray  # float64 in (0, 1], higher = better


def as_unit_float(videos: np.ndarray | torch.Tensor, config: ToyWorldConfig) -> torch.Tensor:
    """[N, T, H, W, 3] uint8 (0..255) or float (-1..1) -> float32 torch in [-1, 1] units."""
    # numpy views such as videos[:, ::-1] have negative strides, which torch cannot wrap
    x = torch.as_tensor(np.ascontiguousarray(videos) if isinstance(videos, np.ndarray) else videos)
    expected = (config.height, config.width, 3)
    if x.ndim != 5 or tuple(x.shape[2:]) != expected:
        raise ValueError(f"videos must have shape [N, T, {expected[0]}, {expected[1]}, 3]; got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 127.5 - 1.0
    x = x.to(torch.float32)
    if x.numel() and x.abs().max() > 10:
        raise ValueError(
            f"float videos must be in [-1, 1] (got values up to {x.abs().max().item():.1f}); "
            "pass uint8 for 0..255 pixels"
        )
    return x


def _unit(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0


def fit_frames(videos: np.ndarray | torch.Tensor, config: ToyWorldConfig) -> FrameFit:
    """Fit the renderer to every frame of videos [N, T, H, W, 3] (uint8 or float in [-1, 1])."""
    x = as_unit_float(videos, config)
    n, t = x.shape[:2]
    (gh, gw), cs, oc = config.grid, config.cell_size, config.object_cells
    k = config.object_size
    bg = torch.from_numpy(_unit(config.background))
    d = (x - bg).reshape(n * t, gh, cs, gw, cs, 3)
    energy = d.square().sum(dim=(1, 2, 3, 4, 5)).double()  # [M]

    # masks[s, a, u, b, v]: pixel (u, v) of cell (a, b) of the object's block
    masks = np.stack([shape_mask(s, k) for s in config.shapes]).astype(np.float32)
    area = torch.from_numpy(masks.sum(axis=(1, 2)))  # [S]
    masks_t = torch.from_numpy(masks).reshape(len(config.shapes), oc, cs, oc, cs)
    cells = d.permute(0, 1, 3, 5, 2, 4).reshape(n * t, gh, gw, 3, cs * cs)  # [M, gh, gw, 3, cs*cs]
    sums = torch.zeros(n * t, gh, gw, 3, len(config.shapes))
    for a in range(oc):
        for b in range(oc):
            part = cells @ masks_t[:, a, :, b, :].reshape(len(config.shapes), cs * cs).T  # [M, gh, gw, 3, S]
            sums += torch.roll(part, shifts=(-a, -b), dims=(1, 2))

    offsets = torch.from_numpy(_unit(np.asarray(list(config.colours.values()))) - _unit(config.background))
    norms = offsets.square().sum(dim=1)  # [C]
    gain = 2 * torch.einsum("mhwks,ck->mschw", sums, offsets)
    gain = gain - (area[:, None] * norms[None, :])[None, :, :, None, None]  # [M, S, C, gh, gw]
    best = gain.reshape(n * t, -1).argmax(dim=1)
    best_gain = gain.reshape(n * t, -1).gather(1, best[:, None])[:, 0].double()
    s_idx, c_idx, r_idx, col_idx = np.unravel_index(best.numpy(), gain.shape[1:])

    residual = (energy - best_gain).clamp_min(0).numpy().reshape(n, t)
    empty = float(k * k) * norms.double().mean().item()  # residual of a frame showing no object
    return FrameFit(
        colour=c_idx.reshape(n, t).astype(np.int64),
        shape=s_idx.reshape(n, t).astype(np.int64),
        position=np.stack([r_idx, col_idx], axis=-1).reshape(n, t, 2).astype(np.int64),
        residual=residual,
        mse=residual / (config.height * config.width * 3),
        fidelity=1.0 / (1.0 + residual / empty),
    )
