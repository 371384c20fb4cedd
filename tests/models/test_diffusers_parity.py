"""Our WanDiT against diffusers' independent WanTransformer3DModel, through the key mapping.

Both run in float32 on the same weights (ours, renamed by ``wan_to_diffusers``). Measured on CPU: max abs
difference ~2e-6 for outputs of magnitude ~2.5. The only systematic difference is the timestep sinusoid
(diffusers float32, Wan float64): ~1e-5 in the features at t = 999 for freq_dim 32, growing with t and
the lowest frequency; patching diffusers' sinusoid to float64 shows the rest is float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from selfforcing.config import load_config
from selfforcing.config.schema import ModelConfig
from selfforcing.models import WanDiT
from selfforcing.models.diffusers_keys import (
    diffusers_config_from_model,
    diffusers_to_wan,
    load_diffusers_dit,
    model_config_from_diffusers,
    save_diffusers_dit,
    wan_to_diffusers,
)
from selfforcing.models.wan_dit import timestep_sinusoid

diffusers = pytest.importorskip("diffusers")

# head_dim 20 -> 10 RoPE pairs split unevenly (4, 3, 3); no cross-attention LayerNorm.
UNEVEN = ModelConfig(
    dim=60, num_heads=3, ffn_dim=96, freq_dim=32, in_dim=4, out_dim=4, num_layers=3, text_len=8,
    text_dim=24, cross_attn_norm=False,
)
CONFIGS = {"tiny": load_config("tiny").model, "uneven_rope": UNEVEN}


class _Float64Sinusoid(nn.Module):
    """Stands in for diffusers' float32 ``Timesteps`` with Wan's float64 sinusoid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return timestep_sinusoid(t, self.dim).float()


def _pair(cfg: ModelConfig) -> tuple[WanDiT, nn.Module]:
    torch.manual_seed(0)
    ours = WanDiT(cfg, attention_backend="sdpa").eval()
    theirs = diffusers.WanTransformer3DModel(**diffusers_config_from_model(cfg)).eval()
    theirs.load_state_dict(wan_to_diffusers(ours.state_dict()), strict=True)
    return ours, theirs


def _both(ours: WanDiT, theirs: nn.Module, t: torch.Tensor, seed: int = 1):
    """Outputs [B, F, C, H, W] of both models on the same latents, per-sample timesteps and text."""
    cfg = ours.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, cfg.in_dim, 4, 6, generator=g)
    text = torch.randn(2, cfg.text_len, cfg.text_dim, generator=g)
    with torch.no_grad():
        a = ours(x, t[:, None].expand(2, x.shape[1]), text)  # ours: [B, F] timesteps
        b = theirs(x.transpose(1, 2), t, text).sample.transpose(1, 2)  # diffusers: [B, C, F, H, W], [B]
    return a, b


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("timesteps", [(3.0, 17.0), (999.0, 500.0), (731.25, 250.0)])
def test_forward_matches_diffusers(name, timesteps):
    ours, theirs = _pair(CONFIGS[name])
    a, b = _both(ours, theirs, torch.tensor(timesteps))
    assert a.abs().max() > 0.5  # a meaningful output, not a degenerate zero
    assert (a - b).abs().max() < 1e-4, f"max abs diff {(a - b).abs().max():.3g}"


def test_only_the_sinusoid_precision_differs_at_large_t():
    ours, theirs = _pair(CONFIGS["tiny"])
    t = torch.tensor([999.0, 987.5])
    f32 = theirs.condition_embedder.timesteps_proj(t).double()
    assert 0 < (f32 - timestep_sinusoid(t, ours.config.freq_dim)).abs().max() < 1e-4
    theirs.condition_embedder.timesteps_proj = _Float64Sinusoid(ours.config.freq_dim)
    a, b = _both(ours, theirs, t)
    assert (a - b).abs().max() < 2e-5


def test_key_round_trip_is_identity():
    ours, theirs = _pair(CONFIGS["tiny"])
    state = ours.state_dict()
    converted = wan_to_diffusers(state)
    assert set(converted) == set(theirs.state_dict())
    assert converted["blocks.0.norm2.weight"] is state["blocks.0.norm3.weight"]  # the norm2/norm3 swap
    back = diffusers_to_wan(converted)
    assert list(back) == list(state)
    assert all(back[k] is state[k] for k in state)


def test_unknown_and_i2v_keys_are_named():
    with pytest.raises(KeyError, match="blocks.0.mystery.weight"):
        wan_to_diffusers({"blocks.0.mystery.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="i2v"):
        wan_to_diffusers({"blocks.0.cross_attn.k_img.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="not a known diffusers"):
        diffusers_to_wan({"blocks.0.self_attn.q.weight": torch.zeros(1)})


def test_diffusers_directory_loads_into_wan_dit(tmp_path):
    ours, theirs = _pair(CONFIGS["uneven_rope"])
    theirs.save_pretrained(tmp_path / "diffusers")  # diffusers' own config.json and safetensors
    loaded = load_diffusers_dit(tmp_path / "diffusers", text_len=UNEVEN.text_len, attention_backend="sdpa")
    assert loaded.config == UNEVEN
    t = torch.tensor([400.0, 10.0])
    a, _ = _both(ours, theirs, t)
    b, _ = _both(loaded.eval(), theirs, t)
    assert torch.equal(a, b)
    # And our writer produces a directory diffusers can build and load strictly. (Not through
    # ``from_pretrained``: with ``_keep_in_fp32_modules`` set, diffusers 0.42 requires accelerate for it.)
    out = save_diffusers_dit(ours, tmp_path / "ours")
    again = diffusers.WanTransformer3DModel.from_config(
        diffusers.WanTransformer3DModel.load_config(out)
    ).eval()
    again.load_state_dict(load_file(str(out / "diffusion_pytorch_model.safetensors")), strict=True)
    _, c = _both(ours, again, t)
    _, d = _both(ours, theirs, t)
    assert torch.equal(c, d)


def test_diffusers_config_rejects_i2v():
    with pytest.raises(ValueError, match="image_dim=1280"):
        model_config_from_diffusers({"num_attention_heads": 2, "attention_head_dim": 16, "image_dim": 1280})
