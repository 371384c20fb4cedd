"""Named starting points. The only place where model sizes are written down."""

from __future__ import annotations

from typing import Any

# Wan2.1's published architectures (config.json of the released checkpoints).
_WAN_1_3B = dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
_WAN_14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
_WAN_COMMON = dict(
    freq_dim=256, in_dim=16, out_dim=16, patch_size=(1, 2, 2), text_len=512, text_dim=4096, eps=1e-6
)
_WAN_VAE = dict(kind="wan", z_dim=16, temporal_compression=4, spatial_compression=8)

PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests and the embedded demo: random weights, a tokenizer built locally, seconds on a CPU.
    "tiny": {
        "model": dict(
            dim=64, ffn_dim=128, freq_dim=32, in_dim=4, out_dim=4, num_heads=4, num_layers=2,
            patch_size=(1, 2, 2), text_len=16, text_dim=32,
        ),
        "text_encoder": dict(max_length=16, d_model=32, num_layers=2, num_heads=2, d_ff=64),
        "vae": dict(
            kind="wan", z_dim=4, base_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
            temporal_compression=4, spatial_compression=8,
        ),
        "video": dict(height=32, width=48, num_frames=21, frames_per_chunk=3, fps=8),
    },
    # The embedded default world (selfforcing.data.toyworld): 10x10 RGB frames, an exact 2x
    # pixel-unshuffle latent (12 x 5 x 5, no temporal compression) scaled to unit variance, one DiT
    # token per 2x2-pixel cell (patch 1x1x1: 12 values per token against a width of 64), 12-frame videos
    # in chunks of 3. Row / column RoPE frequencies periodic in the 5-cell torus, so a move that wraps is
    # the same relative offset as one that does not. Frame frequencies 3 * 20^(-j/6) (rope_time_scale 3,
    # theta 20) instead of Wan's theta^(-j/6), whose fastest pair turns only 1 rad per frame: on a 5-cell
    # torus every speed-direction of an axis visits the same cells and differs only in their order in
    # time, so a head must single out the previous frame, and per unit of query-key norm these
    # frequencies do that 3.8x more sharply (evaluation.rope_selectivity). docs/results/toyworld.md has
    # the experiments behind each choice.
    "toy": {
        "model": dict(
            dim=64, ffn_dim=128, freq_dim=64, in_dim=12, out_dim=12, num_heads=2, num_layers=4,
            patch_size=(1, 1, 1), text_len=8, text_dim=32, rope_theta=20.0, rope_time_scale=3.0,
            rope_spatial_period=(5, 5),
        ),
        "text_encoder": dict(
            max_length=8, d_model=32, num_layers=2, num_heads=2, d_ff=64,
            vocab=[
                "a", "red", "green", "blue", "yellow", "cyan", "magenta", "square", "moving",
                "left", "right", "up", "down", "slowly", "quickly",
            ],
        ),
        "vae": dict(
            kind="pixel_unshuffle", z_dim=12, temporal_compression=1, spatial_compression=2, latent_scale=5.0,
        ),
        "video": dict(height=10, width=10, num_frames=12, frames_per_chunk=3, fps=8),
        "schedule": dict(shift=3.0),
        "generation": dict(teacher_shift=3.0, teacher_steps=24, guidance_scale=3.0),
    },
    "wan2.1-t2v-1.3b": {
        "model": {**_WAN_COMMON, **_WAN_1_3B},
        "text_encoder": dict(max_length=512),
        "vae": dict(_WAN_VAE),
        "video": dict(height=480, width=832, num_frames=81, frames_per_chunk=3, fps=16),
        "runtime": dict(dtype="bfloat16"),
    },
    "wan2.1-t2v-14b": {
        "model": {**_WAN_COMMON, **_WAN_14B},
        "text_encoder": dict(max_length=512),
        "vae": dict(_WAN_VAE),
        "video": dict(height=480, width=832, num_frames=81, frames_per_chunk=3, fps=16),
        "runtime": dict(dtype="bfloat16"),
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)
