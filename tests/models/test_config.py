from pathlib import Path

import pytest

from brainstream.models.config_base import ConfigError, load_config
from brainstream.models.device_profile import DeviceProfile, load_device_profile


@pytest.mark.parametrize(
    ("name", "n_channels", "sfreq", "modality"),
    [
        ("ctf275_things_meg", 272, 1200.0, "meg"),
        ("eeg64_1000hz", 64, 1000.0, "eeg"),
        ("things_eeg2", 63, 1000.0, "eeg"),
    ],
)
def test_builtin_device_profiles(name, n_channels, sfreq, modality):
    profile = load_device_profile(name)
    assert profile.n_channels == n_channels
    assert profile.sfreq == sfreq
    assert profile.modality == modality
    pos = profile.positions_2d
    assert pos.shape == (n_channels, 2)
    assert len({tuple(p) for p in pos.round(6)}) == n_channels  # every sensor has its own position


def test_things_meg_names_have_dataset_suffix_and_drop_nothing_extra():
    profile = load_device_profile("ctf275_things_meg")
    assert all(name.endswith("-1609") for name in profile.channels)
    assert "MRO11-1609" in profile.channels  # the broken one is dropped by the loader, not the profile


def test_unknown_key_names_file_key_and_allowed(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodality: meg\nsfreq: 100\nchannel_type: mag\nunit: T\nchannels: [a]\nsfrq: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, DeviceProfile)
    msg = str(info.value)
    assert str(bad) in msg and "sfrq" in msg and "sfreq" in msg


def test_bad_value_and_bad_yaml(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodality: ecog\nsfreq: -1\nchannel_type: mag\nunit: T\nchannels: [a, a]\n")
    with pytest.raises(ConfigError, match="modality"):
        load_config(bad, DeviceProfile)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, DeviceProfile)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", DeviceProfile)


def test_yaml_tags_are_not_executed(tmp_path: Path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(evil, DeviceProfile)


def test_cli_config_show_json(capsys):
    import json

    from brainstream.cli import main

    assert main(["config", "show", "configs/devices/things_eeg2.yaml", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["schema"] == "DeviceProfile" and len(out["config"]["channels"]) == 63
