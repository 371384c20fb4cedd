"""Checkpoint formats load strictly into WanDiT: Wan2.1 directories (single and sharded safetensors)
and Self Forcing training checkpoints (``generator`` / ``generator_ema`` with a ``model.`` prefix)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from selfforcing.config import load_config
from selfforcing.models import WanDiT, save_wan_dir, wan_config_from_model


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny").model


def _model(cfg, seed: int) -> WanDiT:
    torch.manual_seed(seed)
    return WanDiT(cfg, attention_backend="sdpa").eval()


def _output(model: WanDiT) -> torch.Tensor:
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, cfg.in_dim, 4, 6, generator=g)
    text = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([[900.0, 500.0, 100.0]]), text)


@pytest.mark.parametrize("max_shard_bytes", [None, 20_000], ids=["single", "sharded"])
def test_wan_directory_round_trip(cfg, tmp_path, max_shard_bytes):
    model = _model(cfg, 0)
    path = save_wan_dir(model, tmp_path / "wan", max_shard_bytes=max_shard_bytes)
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    assert (len(shards) > 1) == (max_shard_bytes is not None), shards
    written = json.loads((path / "config.json").read_text())
    assert written["_class_name"] == "WanModel" and written["model_type"] == "t2v"
    assert written["dim"] == cfg.dim and written["num_heads"] == cfg.num_heads

    loaded = WanDiT.from_pretrained(path, attention_backend="sdpa").eval()
    assert loaded.config == cfg
    state, again = model.state_dict(), loaded.state_dict()
    assert list(state) == list(again) and all(torch.equal(state[k], again[k]) for k in state)
    assert torch.equal(_output(model), _output(loaded))


@pytest.mark.parametrize("which", ["generator", "generator_ema"])
def test_self_forcing_checkpoint_entries(cfg, tmp_path, which):
    models = {"generator": _model(cfg, 1), "generator_ema": _model(cfg, 2)}
    ckpt = {name: {f"model.{k}": v for k, v in m.state_dict().items()} for name, m in models.items()}
    torch.save(ckpt, tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(json.dumps(wan_config_from_model(cfg)))

    loaded = WanDiT.from_pretrained(tmp_path / "model.pt", which=which, attention_backend="sdpa").eval()
    assert torch.equal(_output(loaded), _output(models[which]))
    other = "generator" if which == "generator_ema" else "generator_ema"
    assert not torch.equal(_output(loaded), _output(models[other]))


def test_bare_checkpoint_with_explicit_config_and_bad_entry(cfg, tmp_path):
    model = _model(cfg, 3)
    torch.save({"generator": {f"model.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "g.pt")
    loaded = WanDiT.from_pretrained(tmp_path / "g.pt", which="generator", config=cfg, attention_backend="sdpa")
    assert torch.equal(_output(loaded.eval()), _output(model))
    with pytest.raises(KeyError, match="generator_ema"):
        WanDiT.from_pretrained(tmp_path / "g.pt", which="generator_ema", config=cfg)
    with pytest.raises(ValueError, match="critic"):
        WanDiT.from_pretrained(tmp_path / "g.pt", which="critic", config=cfg)


def _write_state(tmp_path, cfg, state) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(wan_config_from_model(cfg)))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))


def test_missing_key_fails_naming_it(cfg, tmp_path):
    state = dict(_model(cfg, 0).state_dict())
    del state["blocks.1.cross_attn.norm_k.weight"]
    _write_state(tmp_path / "missing", cfg, state)
    with pytest.raises(RuntimeError, match=r"blocks\.1\.cross_attn\.norm_k\.weight"):
        WanDiT.from_pretrained(tmp_path / "missing")


def test_extra_key_fails_naming_it(cfg, tmp_path):
    state = dict(_model(cfg, 0).state_dict())
    state["blocks.0.cross_attn.k_img.weight"] = torch.zeros(cfg.dim, cfg.dim)
    _write_state(tmp_path / "extra", cfg, state)
    with pytest.raises(RuntimeError, match=r"blocks\.0\.cross_attn\.k_img\.weight"):
        WanDiT.from_pretrained(tmp_path / "extra")


def test_i2v_model_type_is_rejected(cfg, tmp_path):
    _write_state(tmp_path / "i2v", cfg, _model(cfg, 0).state_dict())
    config = json.loads((tmp_path / "i2v" / "config.json").read_text())
    (tmp_path / "i2v" / "config.json").write_text(json.dumps({**config, "model_type": "i2v"}))
    with pytest.raises(ValueError, match=r"model_type='i2v'.*t2v"):
        WanDiT.from_pretrained(tmp_path / "i2v")
