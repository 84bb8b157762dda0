"""Configuration: YAML files into typed dataclasses, key=value overrides, errors, saving."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from sparseags.config import Config, ConfigError, config_to_dict, load_config, save_config

REPO = Path(__file__).resolve().parent.parent


def test_default_yaml_equals_dataclass_defaults():
    # configs/default.yaml documents the defaults; it must not drift from the dataclasses.
    from_file = load_config(REPO / "configs" / "default.yaml")
    assert config_to_dict(from_file) == config_to_dict(Config())


@pytest.mark.parametrize("name", ["default.yaml", "paper.yaml", "fast_cpu.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.recon.iters > 0


def test_paper_config_has_official_numbers():
    cfg = load_config(REPO / "configs" / "paper.yaml")
    assert cfg.recon.num_pts == 25000
    assert cfg.recon.init == "ball"
    assert cfg.recon.lr_camera == pytest.approx(2.5e-4)
    assert cfg.search.stage_steps == [128, 256, 256]


def test_overrides_are_parsed_and_typed():
    cfg = load_config(
        None,
        [
            "recon.iters=300",
            "recon.lr_camera=1e-3",
            "prior.enabled=false",
            "seed=7",
            "recon.resolution_schedule=[[0, 64]]",
            "scene.init=dust3r_like",
        ],
    )
    assert cfg.recon.iters == 300 and isinstance(cfg.recon.iters, int)
    assert cfg.recon.lr_camera == pytest.approx(1e-3) and isinstance(cfg.recon.lr_camera, float)
    assert cfg.prior.enabled is False
    assert cfg.seed == 7
    assert cfg.recon.resolution_schedule == [[0, 64]]
    assert cfg.scene.init == "dust3r_like"


def test_int_widens_to_float_but_not_the_other_way():
    assert load_config(None, ["recon.lr_camera=1"]).recon.lr_camera == 1.0
    with pytest.raises(ConfigError, match="recon.iters"):
        load_config(None, ["recon.iters=1.5"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("recon.itres=3", "unknown config key 'recon.itres'"),
        ("nosuch.key=1", "unknown config key 'nosuch'"),
        ("recon.iters=abc", "expected an integer"),
        ("recon.optimize_cameras=1", "expected true/false"),
        ("recon.init=sphere", "not one of"),
        ("recon=3", "is a section"),
        ("recon.iters", "key=value"),
    ],
)
def test_bad_overrides_give_one_line_errors(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recon:\n  iters: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("recon:\n  iterz: 3\n")
    with pytest.raises(ConfigError, match="recon.iterz"):
        load_config(typo)


def test_save_config_round_trip(tmp_path):
    cfg = load_config(None, ["seed=123", "recon.iters=42"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["seed"] == 123 and data["recon"]["iters"] == 42
    again = load_config(path)
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
    # no temporary files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]
