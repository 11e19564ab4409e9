"""gaincell.HwConfig: presets, dicts and files, validated by the CLI's code with its messages."""
import json

import pytest

import gaincell
from conftest import run_cli


def test_presets_round_trip_through_dict():
    assert set(gaincell.HwConfig.presets()) >= {"paper-linear", "paper-nonlinear", "ideal"}
    for name in gaincell.HwConfig.presets():
        hw = gaincell.HwConfig.preset(name)
        assert hw.name == name
        assert gaincell.HwConfig.from_dict(hw.to_dict()) == hw
        assert gaincell.HwConfig(name) == hw


def test_dict_overrides_a_preset():
    hw = gaincell.HwConfig.from_dict({"preset": "paper-linear", "window": 256})
    d = hw.to_dict()
    assert d["window"] == 256
    assert hw.cell == "linear"
    assert hw != gaincell.HwConfig.preset("paper-linear")


def test_equals_cli_hw_show(tmp_path):
    cfg = {"preset": "paper-nonlinear", "window": 128, "s_sat": 70.0}
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(cfg))
    shown = json.loads(run_cli("hw", "show", "--hw", path).stdout)
    assert gaincell.HwConfig.from_file(str(path)).to_dict() == shown
    assert gaincell.HwConfig(str(path)).to_dict() == shown


@pytest.mark.parametrize("cfg", [
    {"preset": "paper-nonlinear", "window": 0},
    {"preset": "paper-nonlinear", "no_such_key": 1},
    {"preset": "no-such-preset"},
    {"quantization": {"q": {"levels": 1}}},
    {"s_sat": "eighty"},
])
def test_invalid_dict_raises_the_cli_message(tmp_path, cfg):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    cli = run_cli("hw", "show", "--hw", path, check=False)
    assert cli.returncode != 0
    with pytest.raises(gaincell.Error) as err:
        gaincell.HwConfig.from_dict(cfg)
    assert str(err.value) in cli.stderr
    with pytest.raises(ValueError):  # gaincell.Error is a ValueError
        gaincell.HwConfig.from_file(str(path))


def test_bad_sources_raise():
    with pytest.raises(gaincell.Error, match="neither a preset nor a readable JSON file"):
        gaincell.HwConfig("no-such-preset-or-file")
    with pytest.raises(gaincell.Error, match="does not exist"):
        gaincell.HwConfig.from_file("/nonexistent/hw.json")
    with pytest.raises(ValueError):  # NaN cannot be JSON
        gaincell.HwConfig.from_dict({"s_sat": float("nan")})
    with pytest.raises(TypeError):
        gaincell.HwConfig.from_dict("paper-linear")
