"""Opt-in faster inference numerics, applied from outside to a plain ``WanDiT`` (and undone the same way).

- ``default``: Wan's numerics: residual stream in float32, matmuls in the parameter dtype.
- ``bf16-residual``: the residual stream stays in the parameter dtype (bf16 at real size): half the
  memory traffic of every residual read/write; norms and modulation still compute in float32.
- ``fp8``: bf16-residual plus float8 (e4m3) matmuls in every block's linear layers, with one scale per
  weight output channel (fixed) and one per activation row (computed per call): Hopper's FP8 tensor
  cores run these at twice the bf16 rate. ``torch._scaled_mm`` needs CUDA compute capability >= 8.9
  (or the CPU, where it is slow and only useful for tests).

The benchmark (benchmarks/throughput.py) reports each mode's distance to a float32 run beside its speed.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from ..models.wan_dit import WanDiT

PRECISION_MODES = ("default", "bf16-residual", "fp8")
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448


def _fp8_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """y = x W^T + b with x and W quantised to e4m3: x [..., in] -> [..., out] in x's dtype."""
    rows = x.reshape(-1, x.shape[-1])
    scale_x = rows.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX  # [M, 1]
    xq = (rows.float() / scale_x).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    y = torch._scaled_mm(
        xq, self.weight_fp8.t(), scale_a=scale_x, scale_b=self.weight_scale, out_dtype=out_dtype
    )
    if self.bias is not None:
        y = y + self.bias.to(out_dtype)
    return y.to(x.dtype).unflatten(0, x.shape[:-1])


def _fp8_layers(model: WanDiT) -> list[nn.Linear]:
    """The block matmuls that carry the FLOPs: q/k/v/o of self-attention, q/o of cross-attention (its
    k/v act on the prompt once per prompt), and the FFN."""
    layers = []
    for block in model.blocks:
        sa, ca = block.self_attn, block.cross_attn
        layers += [sa.q, sa.k, sa.v, sa.o, ca.q, ca.o, block.ffn[0], block.ffn[2]]
    return layers


def _check_fp8(device: torch.device) -> None:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            raise ValueError(
                f"runtime.precision='fp8' needs FP8 tensor cores (compute capability >= 8.9), "
                f"got {major}.{minor} on {torch.cuda.get_device_name(device)}; use 'bf16-residual'"
            )
    if not hasattr(torch, "_scaled_mm"):
        raise ValueError(f"runtime.precision='fp8' needs torch._scaled_mm (torch {torch.__version__} lacks it)")


class PrecisionMode:
    """Applies one of ``PRECISION_MODES`` to ``model`` in place; ``restore()`` undoes it exactly."""

    def __init__(self, model: WanDiT, mode: str = "default") -> None:
        if mode not in PRECISION_MODES:
            raise ValueError(f"runtime.precision={mode!r} is not a precision mode; valid: {list(PRECISION_MODES)}")
        self.model = model
        self.mode = mode
        self._patched: list[nn.Linear] = []
        self._residual = model.residual_dtype
        if mode == "default":
            return
        param_dtype = next(model.parameters()).dtype
        model.residual_dtype = param_dtype
        if mode == "fp8":
            _check_fp8(next(model.parameters()).device)
            with torch.no_grad():
                for layer in _fp8_layers(model):
                    w = layer.weight.float()
                    scale = w.abs().amax(dim=1).clamp_min(1e-12) / E4M3_MAX  # [out]
                    fp8 = (w / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
                    layer.register_buffer("weight_fp8", fp8.contiguous(), persistent=False)
                    layer.register_buffer("weight_scale", scale[None, :].contiguous(), persistent=False)
                    layer.forward = types.MethodType(_fp8_linear_forward, layer)
                    self._patched.append(layer)

    def restore(self) -> None:
        """Back to the model's own numerics (float32 residual, its own linear layers)."""
        for layer in self._patched:
            del layer.forward
            del layer.weight_fp8
            del layer.weight_scale
        self._patched = []
        self.model.residual_dtype = self._residual
        self.mode = "default"
