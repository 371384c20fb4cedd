"""Text encoder and video codecs: shapes, Wan's zero padding, determinism, streaming == whole decode."""

from __future__ import annotations

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.config.schema import TextEncoderConfig, VAEConfig
from selfforcing.models.text_encoder import TextEncoder
from selfforcing.models.vae import (
    PixelUnshuffleVAE,
    WanVAE,
    build_vae,
    pixels_to_uint8,
    random_wan_vae,
    uint8_to_pixels,
)

PROMPTS = ["A red ball rolls across the table.", "a dog", "zyzzyva " * 40]


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny")


@pytest.fixture(scope="module")
def text_encoder(tiny) -> TextEncoder:
    return TextEncoder.from_config(tiny.text_encoder)


@pytest.fixture(scope="module")
def wan_vae(tiny) -> WanVAE:
    return build_vae(tiny.vae)


# ------------------------------------------------------------------------------------------ text
def test_text_shape_and_padding_is_exactly_zero(tiny, text_encoder):
    cfg = tiny.text_encoder
    out = text_encoder.encode(PROMPTS)
    assert out.shape == (3, cfg.max_length, cfg.d_model) and out.dtype == torch.float32
    ids, mask = text_encoder.tokenize(PROMPTS)
    lengths = mask.sum(1).tolist()
    assert lengths == [9, 3, cfg.max_length]  # 7 words + "." + </s>; "a dog" + </s>; truncated
    eos = text_encoder.tokenizer.eos_token_id
    assert ids[0, 8] == eos and ids[2, -1] == eos  # truncation keeps EOS last, as T5 does
    for row, n in enumerate(lengths):
        assert torch.all(out[row, n:] == 0)
        assert torch.all(out[row, :n].abs().sum(-1) > 0)


def test_text_encoder_is_deterministic_across_instances(tiny, text_encoder):
    again = TextEncoder.from_config(tiny.text_encoder)
    assert torch.equal(again.encode(PROMPTS), text_encoder.encode(PROMPTS))
    a, b = text_encoder.encode(["a cat runs", "a dog runs"])
    assert (a - b).abs().max() > 1e-3  # distinct words get distinct ids


def test_text_encoder_save_load_round_trip(tiny, text_encoder, tmp_path):
    text_encoder.save_pretrained(tmp_path / "te")
    cfg = TextEncoderConfig(path=str(tmp_path / "te"), max_length=tiny.text_encoder.max_length)
    loaded = TextEncoder.from_config(cfg)
    assert torch.equal(loaded.encode(PROMPTS), text_encoder.encode(PROMPTS))


def test_custom_vocab_and_unknown_words():
    cfg = TextEncoderConfig(max_length=6, d_model=16, num_layers=1, num_heads=2, d_ff=32, vocab=["hello", "World"])
    enc = TextEncoder.from_config(cfg)
    ids, mask = enc.tokenize(["Hello,   world  there"])
    unk, pad = enc.tokenizer.unk_token_id, enc.tokenizer.pad_token_id
    assert pad == 0 and ids[0, 1] == unk and ids[0, 3] == unk  # "," and "there"
    assert ids[0].tolist()[-1] == pad and mask[0].tolist() == [1, 1, 1, 1, 1, 0]
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode("hello")


# ------------------------------------------------------------------------------------------- Wan VAE
def test_wan_vae_shapes(tiny, wan_vae):
    pixels = torch.rand(2, 9, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = wan_vae.encode(pixels)
    assert latents.shape == (2, 3, tiny.vae.z_dim, 4, 6)
    frames = wan_vae.decode(latents)
    assert frames.shape == (2, 9, 3, 32, 48) and frames.abs().max() <= 1
    assert (frames.abs() < 1).float().mean() > 0.5  # not saturated, so the streaming test means something
    video = wan_vae.decode_to_uint8(latents)
    assert video.shape == (2, 9, 32, 48, 3) and video.dtype == torch.uint8
    with pytest.raises(ValueError, match="1 \\+ k\\*4"):
        wan_vae.encode(pixels[:, :8])


@pytest.mark.parametrize("chunks", [[1, 2, 1], [1, 1, 1, 1], [2, 2]])
def test_wan_streaming_decode_equals_whole_decode(tiny, wan_vae, chunks):
    latents = torch.randn(1, sum(chunks), tiny.vae.z_dim, 2, 3, generator=torch.Generator().manual_seed(1))
    whole = wan_vae.decode(latents)
    decoder = wan_vae.streaming_decoder()
    parts, start = [], 0
    for i, k in enumerate(chunks):
        part = decoder.decode_chunk(latents[:, start : start + k])
        assert part.shape[1] == 4 * k - (3 if i == 0 else 0)  # first latent frame -> 1 pixel frame
        parts.append(part)
        start += k
    assert (torch.cat(parts, dim=1) - whole).abs().max() < 1e-4
    decoder.reset()  # a new video restarts the causal state
    assert (decoder.decode_chunk(latents[:, :1]) - whole[:, :1]).abs().max() < 1e-4


def test_wan_vae_normalisation_and_local_directory(tiny, tmp_path):
    model = random_wan_vae(tiny.vae)
    z = tiny.vae.z_dim
    model.register_to_config(latents_mean=[0.5] * z, latents_std=[2.0] * z)
    model.save_pretrained(tmp_path / "vae")
    vae = build_vae(tiny.vae.model_copy(update={"path": str(tmp_path / "vae")}))
    pixels = torch.rand(1, 5, 3, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        mu = model.encode(pixels.transpose(1, 2)).latent_dist.mode().transpose(1, 2)
    torch.testing.assert_close(vae.encode(pixels), (mu - 0.5) / 2.0)
    with pytest.raises(ValueError, match="z_dim=8"):
        build_vae(tiny.vae.model_copy(update={"path": str(tmp_path / "vae"), "z_dim": 8}))


def test_random_wan_vae_geometry_is_validated(tiny):
    with pytest.raises(ValueError, match="spatial_compression=16"):
        random_wan_vae(tiny.vae.model_copy(update={"spatial_compression": 16}))
    with pytest.raises(ValueError, match="temporal_compression=3"):
        random_wan_vae(tiny.vae.model_copy(update={"temporal_compression": 3}))


# ------------------------------------------------------------------------------------ pixel unshuffle
def test_pixel_unshuffle_round_trip_is_exact():
    vae = build_vae(VAEConfig(kind="pixel_unshuffle", z_dim=12, temporal_compression=1, spatial_compression=2))
    assert isinstance(vae, PixelUnshuffleVAE)
    video = torch.randint(0, 256, (2, 5, 8, 12, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    pixels = uint8_to_pixels(video)
    latents = vae.encode(pixels)
    assert latents.shape == (2, 5, 12, 4, 6)
    assert torch.equal(vae.decode(latents), pixels)
    assert torch.equal(vae.decode_to_uint8(latents), video)
    assert torch.equal(pixels_to_uint8(pixels), video)
    decoder = vae.streaming_decoder()
    streamed = torch.cat([decoder.decode_chunk(latents[:, :2]), decoder.decode_chunk(latents[:, 2:])], dim=1)
    assert torch.equal(streamed, pixels)


def test_pixel_unshuffle_latent_scale_matches_the_toy_world_codec():
    """The serving codec (``vae.latent_scale``) and the toy world's data codec agree bit for bit."""
    from selfforcing.config import load_config
    from selfforcing.data.toyworld import PixelUnshuffleLatents, render, sample_scenes

    cfg = load_config("toy").vae
    assert cfg.latent_scale == 5.0
    vae = build_vae(cfg)
    videos = render(sample_scenes(4, 0), 6)  # uint8 [N, T, H, W, 3]
    pixels = uint8_to_pixels(torch.from_numpy(videos))
    latents = vae.encode(pixels)
    assert torch.allclose(latents, PixelUnshuffleLatents(2, 5.0).encode(videos), atol=1e-6)
    assert torch.equal(vae.decode_to_uint8(latents), torch.from_numpy(videos))
    assert 3.0 < latents.abs().max() <= 5.0  # the object's values are +-5, not +-1


def test_pixel_unshuffle_config_errors():
    with pytest.raises(ValueError, match="latent_scale=2.0 applies only to kind='pixel_unshuffle'"):
        VAEConfig(kind="wan", latent_scale=2.0)
    with pytest.raises(ValueError, match="latent_scale"):
        VAEConfig(kind="pixel_unshuffle", latent_scale=0.0)
    with pytest.raises(ValueError, match=r"z_dim=16 must be 3 \* spatial_compression\^2 = 12"):
        build_vae(VAEConfig(kind="pixel_unshuffle", z_dim=16, temporal_compression=1, spatial_compression=2))
    with pytest.raises(ValueError, match="temporal_compression=4 must be 1"):
        build_vae(VAEConfig(kind="pixel_unshuffle", z_dim=12, temporal_compression=4, spatial_compression=2))


def test_build_vae_unknown_kind_lists_valid_kinds():
    cfg = VAEConfig.model_construct(kind="vqgan")  # bypasses the Literal check, as a future kind would
    with pytest.raises(ValueError, match=r"vae.kind='vqgan'.*\['pixel_unshuffle', 'wan'\]"):
        build_vae(cfg)
