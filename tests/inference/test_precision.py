"""Opt-in precision modes: the default changes nothing, the fast modes stay close to float32 and undo."""

import pytest
import torch

from selfforcing.config import ConfigError, load_config
from selfforcing.inference.precision import E4M3_MAX, PrecisionMode, _fp8_linear_forward
from selfforcing.models import WanDiT


def _model(dtype=torch.float32) -> WanDiT:
    torch.manual_seed(0)
    return WanDiT(load_config("tiny").model).eval().to(dtype)


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 4, 4, 6, generator=g)
    t = torch.full((1, 6), 700.0)
    return x, t, torch.randn(1, 16, 32, generator=g)


def _flow(model: WanDiT) -> torch.Tensor:
    x, t, text = _inputs()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return model(x.to(dtype), t, text.to(dtype), frames_per_chunk=3).float()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_default_mode_is_bit_identical():
    ref = _flow(_model())
    model = _model()
    PrecisionMode(model, "default")
    assert torch.equal(_flow(model), ref)


def test_bf16_residual_keeps_the_stream_in_bf16_and_tracks_fp32():
    fp32 = _flow(_model())
    model = _model(torch.bfloat16)
    seen = []
    model.blocks[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    default_bf16 = _flow(model)
    mode = PrecisionMode(model, "bf16-residual")
    fast = _flow(model)
    assert seen == [torch.float32, torch.bfloat16]
    assert _rel(fast, fp32) < 0.03 and not torch.equal(fast, default_bf16)
    mode.restore()
    assert torch.equal(_flow(model), default_bf16)


def test_fp8_linear_is_row_and_channel_scaled():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(5, 7, 64) * torch.logspace(-2, 2, 7)[None, :, None]  # rows of very different size
    with torch.no_grad():
        ref = layer(x)
        w = layer.weight
        scale = w.abs().amax(1) / E4M3_MAX
        layer.register_buffer("weight_fp8", (w / scale[:, None]).to(torch.float8_e4m3fn), persistent=False)
        layer.register_buffer("weight_scale", scale[None], persistent=False)
        out = _fp8_linear_forward(layer, x)
    assert out.shape == ref.shape and out.dtype == x.dtype
    # per-row scales: every row keeps ~2 significant digits, however small it is
    row_err = (out - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert row_err.max() < 0.08


def test_fp8_mode_tracks_fp32_and_restores_exactly():
    fp32 = _flow(_model())
    model = _model(torch.bfloat16)
    before = _flow(model)
    keys = set(model.state_dict())
    mode = PrecisionMode(model, "fp8")
    fast = _flow(model)
    assert _rel(fast, fp32) < 0.08 and not torch.equal(fast, before)
    assert set(model.state_dict()) == keys  # fp8 copies are not part of the checkpoint
    mode.restore()
    assert torch.equal(_flow(model), before)
    assert not any(hasattr(m, "weight_fp8") for m in model.modules())


def test_bad_precision_names_fail_clearly():
    with pytest.raises(ValueError, match="valid: \\['default', 'bf16-residual', 'fp8'\\]"):
        PrecisionMode(_model(), "fp4")
    with pytest.raises(ConfigError, match="runtime.precision"):
        load_config("tiny", overrides=["runtime.precision=int8"])
