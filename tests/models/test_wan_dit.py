import pytest
import torch

from selfforcing.config import load_config
from selfforcing.models import WanDiT
from selfforcing.models.rope import apply_rope, rope_angles, rope_split
from selfforcing.models.wan_dit import timestep_sinusoid


def test_output_shape_and_text_zero_padding(tiny_model):
    x = torch.randn(2, 3, 4, 4, 6, dtype=torch.float64)
    t = torch.full((2, 3), 500.0, dtype=torch.float64)
    text = torch.randn(2, 5, 32, dtype=torch.float64)
    padded = torch.cat([text, torch.zeros(2, 11, 32, dtype=torch.float64)], dim=1)
    with torch.no_grad():
        out = tiny_model(x, t, text)
        assert out.shape == x.shape
        torch.testing.assert_close(out, tiny_model(x, t, padded))


def test_per_frame_timesteps_matter_and_broadcast(tiny_model):
    x = torch.randn(1, 3, 4, 4, 6, dtype=torch.float64)
    text = torch.randn(1, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        scalar = tiny_model(x, torch.tensor([300.0], dtype=torch.float64), text)
        per_frame = tiny_model(x, torch.full((1, 3), 300.0, dtype=torch.float64), text)
        varied = tiny_model(x, torch.tensor([[300.0, 300.0, 900.0]], dtype=torch.float64), text)
    torch.testing.assert_close(scalar, per_frame)
    assert (varied - per_frame).abs().max() > 1e-3


def test_wan_state_dict_key_names(tiny_model):
    keys = set(tiny_model.state_dict())
    for key in [
        "patch_embedding.weight", "text_embedding.0.weight", "text_embedding.2.bias",
        "time_embedding.0.weight", "time_projection.1.weight", "blocks.0.self_attn.q.weight",
        "blocks.0.self_attn.norm_q.weight", "blocks.1.cross_attn.norm_k.weight", "blocks.0.norm3.weight",
        "blocks.0.ffn.0.weight", "blocks.0.ffn.2.bias", "blocks.0.modulation", "head.head.weight",
        "head.modulation",
    ]:
        assert key in keys, key
    assert not any("norm1" in k or "norm2" in k or "freqs" in k for k in keys)


def test_timestep_sinusoid_matches_formula():
    t = torch.tensor([0.0, 999.0])
    f = timestep_sinusoid(t, 8)
    w = 10000 ** (-torch.arange(4, dtype=torch.float64) / 4)
    torch.testing.assert_close(f[1], torch.cat([torch.cos(999 * w), torch.sin(999 * w)]))
    assert f.dtype == torch.float64


def test_rope_split_and_adjacent_pair_rotation():
    assert rope_split(128) == (22, 21, 21)
    cos, sin = rope_angles(5, 1, 1, 1, head_dim=6)
    # Pair 0 of the frame part rotates by position * theta^0 = 5 radians.
    x = torch.tensor([[[[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]]])
    out = apply_rope(x, cos, sin)
    torch.testing.assert_close(out[0, 0, 0, :2], torch.tensor([torch.cos(torch.tensor(5.0)), torch.sin(torch.tensor(5.0))]))


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = WanDiT(load_config("tiny").model).double()
    x = torch.randn(1, 6, 4, 4, 6, dtype=torch.float64)
    t = torch.rand(1, 6, dtype=torch.float64) * 1000
    text = torch.randn(1, 16, 32, dtype=torch.float64)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.enable_gradient_checkpointing(ckpt)
        model(x, t, text, frames_per_chunk=3).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_bfloat16_forward_runs_and_is_close_to_fp32():
    torch.manual_seed(0)
    model = WanDiT(load_config("tiny").model)
    x = torch.randn(1, 3, 4, 4, 6)
    t = torch.full((1, 3), 400.0)
    text = torch.randn(1, 16, 32)
    with torch.no_grad():
        ref = model(x, t, text)
        out = model.to(torch.bfloat16)(x.bfloat16(), t, text.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-2


def test_input_errors_are_clear(tiny_model):
    with pytest.raises(ValueError, match="latents must be"):
        tiny_model(torch.randn(1, 3, 5, 4, 6, dtype=torch.float64), torch.zeros(1, 3), torch.zeros(1, 4, 32))
    with pytest.raises(ValueError, match="more than text_len"):
        tiny_model(torch.randn(1, 3, 4, 4, 6, dtype=torch.float64), torch.zeros(1, 3), torch.zeros(1, 17, 32))


def test_init_weights_starts_from_zero_flow():
    torch.manual_seed(0)
    model = WanDiT(load_config("tiny").model).init_weights()
    out = model(torch.randn(1, 3, 4, 4, 6), torch.full((1, 3), 500.0), torch.randn(1, 16, 32))
    assert torch.count_nonzero(out) == 0
    assert model.blocks[0].self_attn.q.bias.abs().sum() == 0
    assert model.time_embedding[0].weight.std() < 0.03
