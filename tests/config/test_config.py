import pytest

from selfforcing.config import ConfigError, load_config, preset_names, video_geometry
from selfforcing.config.loader import parse_override


def test_presets_build_and_have_expected_sizes():
    assert {"tiny", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b"} <= set(preset_names())
    small = load_config("wan2.1-t2v-1.3b").model
    assert (small.dim, small.num_heads, small.head_dim, small.num_layers) == (1536, 12, 128, 30)
    big = load_config("wan2.1-t2v-14b").model
    assert (big.dim, big.ffn_dim, big.num_heads, big.num_layers) == (5120, 13824, 40, 40)
    tiny = load_config("tiny").model
    assert tiny.num_layers == 2 and 64 <= tiny.dim <= 128


def test_real_geometry_is_derived_not_hardcoded():
    geo = video_geometry(load_config("wan2.1-t2v-1.3b"))
    assert (geo.latent_frames, geo.latent_height, geo.latent_width) == (21, 60, 104)
    assert geo.tokens_per_frame == 1560 and geo.num_chunks == 7


def test_yaml_then_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nmodel:\n  num_layers: 3\nvideo:\n  fps: 12\n")
    cfg = load_config(yaml_path=path, overrides=["model.num_layers=4", "schedule.shift=3.0"])
    assert cfg.model.num_layers == 4 and cfg.video.fps == 12 and cfg.schedule.shift == 3.0
    assert cfg.preset == "tiny"


@pytest.mark.parametrize(
    "override, field, fragment",
    [
        ("model.num_heads=5", "model", "divisible by num_heads=5"),
        ("model.num_layers=0", "model.num_layers", "greater than 0"),
        ("runtime.dtype=float8", "runtime.dtype", "'float32', 'bfloat16' or 'float16'"),
        ("model.num_layer=3", "model.num_layer", "unknown field"),
        ("schedule.denoising_steps=[250, 500]", "schedule.denoising_steps", "strictly descending"),
        ("generation.window_frames=3", "generation", "sink_frames"),
    ],
)
def test_bad_values_name_field_value_and_allowed(override, field, fragment):
    overrides = [override]
    if override.startswith("generation"):
        overrides.append("generation.sink_frames=3")
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides=overrides)
    message = str(info.value)
    assert field in message and fragment in message


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid presets: .*tiny"):
        load_config("huge")


def test_cross_section_consistency_is_checked():
    with pytest.raises(ConfigError, match="model.in_dim=8 must equal vae.z_dim=4"):
        load_config("tiny", overrides=["model.in_dim=8"])


def test_frame_count_errors_suggest_nearest_valid():
    cfg = load_config("wan2.1-t2v-1.3b")
    assert video_geometry(cfg, 81).latent_frames == 21
    with pytest.raises(ValueError, match=r"nearest valid counts: \[69, 81\]"):
        video_geometry(cfg, 80)


def test_override_parsing():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    with pytest.raises(ConfigError):
        parse_override("novalue")
