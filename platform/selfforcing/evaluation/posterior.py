"""The exact denoiser of a finite set of equally likely clean samples, and what it says about a learned one.

Under flow matching, x_t = (1 - sigma) x0 + sigma * eps. When x0 is one of K known candidates (in the toy
world: the K start cells of a captioned trajectory), the posterior over candidates is a softmax of
-|x_t - (1 - sigma) m_k|^2 / (2 sigma^2), and E[x0 | x_t] is the weighted mean. That is the best any
denoiser can do, so it is the yardstick for a learned one at each noise level.

``per_frame=True`` gives the best a denoiser can do *if it looks at each frame alone*: the posterior is
taken frame by frame. A model whose x0 error sits on the per-frame curve rather than the full one does not
use the other frames, and its samples cannot move coherently (every frame picks its own position).
"""

from __future__ import annotations

import torch


def posterior_x0(x_t: torch.Tensor, sigma: float, modes: torch.Tensor, per_frame: bool = False) -> torch.Tensor:
    """E[x0 | x_t] when x0 is uniform over ``modes``.

    x_t: [B, F, ...]; modes: [B, K, F, ...] (K candidates per sample, e.g. per caption); sigma in (0, 1].
    Computed in float64 (the log-weights span hundreds of nats at small sigma); returns x_t's dtype.
    """
    if not 0.0 < sigma <= 1.0:
        raise ValueError(f"sigma={sigma} must be in (0, 1]")
    if modes.ndim != x_t.ndim + 1 or modes.shape[0] != x_t.shape[0] or modes.shape[2:] != x_t.shape[1:]:
        raise ValueError(f"modes must have shape [B, K, *x_t.shape[1:]]; got {tuple(modes.shape)} for x_t "
                         f"{tuple(x_t.shape)}")
    m = modes.to(torch.float64)
    d2 = (x_t.to(torch.float64)[:, None] - (1.0 - sigma) * m) ** 2  # [B, K, F, ...]
    # Per frame, the log-weights sum over each frame's values only: [B, K, F] instead of [B, K].
    logits = -d2.flatten(3 if per_frame else 2).sum(-1) / (2 * sigma**2)
    w = torch.softmax(logits, dim=1)
    x0 = (w.reshape(*w.shape, *([1] * (m.ndim - w.ndim))) * m).sum(1)
    return x0.to(x_t.dtype)


def posterior_flow(x_t: torch.Tensor, t: torch.Tensor, modes: torch.Tensor, num_train_timesteps: int = 1000,
                   per_frame: bool = False) -> torch.Tensor:
    """The exact flow prediction (eps - x0 = (x_t - x0) / sigma) as a ``Denoiser``: (x_t, t [B, F]) -> flow.

    Every frame of a sample must share one timestep (the posterior couples the frames).
    """
    sig = t[:, 0].to(torch.float64) / num_train_timesteps
    if not torch.all(t == t[:, :1]):
        raise ValueError("posterior_flow needs one timestep per sample (all frames equal)")
    out = torch.empty_like(x_t)
    for i, s in enumerate(sig.tolist()):
        x0 = posterior_x0(x_t[i : i + 1], s, modes[i : i + 1], per_frame)
        out[i] = ((x_t[i : i + 1].to(torch.float64) - x0.to(torch.float64)) / s).to(x_t.dtype)[0]
    return out
