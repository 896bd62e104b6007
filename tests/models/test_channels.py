"""Channel matching and repair (models.channels), the brain module's sensor mask, profiles from data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainstream.models.channels import (
    ChannelMismatchError,
    ChannelRepair,
    canonical_name,
    match_channels,
    plan_channels,
)
from brainstream.models.device_profile import load_device_profile, profile_from_info, write_device_profile
from brainstream.models.encoders import build_encoder

DATA = Path(__file__).resolve().parents[1] / "data"
CTF_DS = DATA / "ctf" / "testdata_ctf_short_discontinuous.ds"
BRAINVISION = DATA / "brainvision" / "test_NO.vhdr"


# -------------------------------------------------------------------------------------------- matching
def test_ctf_names_match_without_their_system_suffix_in_the_wanted_order():
    available = ["UPPT001", "BG1-4304", "MLC12-4304", "EEG057", "MLC11-4304", "SCLK01-177"]
    match = match_channels(available, ["MLC11-1609", "MLC12-1609"])
    np.testing.assert_array_equal(match.index, [4, 2])
    assert match.renamed == [("MLC11-1609", "MLC11-4304"), ("MLC12-1609", "MLC12-4304")]
    assert canonical_name("MLC11-4304") == "MLC11" and canonical_name("Fp1") == "Fp1"
    assert canonical_name("EEG-1") == "EEG-1"  # only CTF's 4-digit suffix is dropped


def test_exact_names_win_and_an_ambiguous_base_is_not_guessed():
    match = match_channels(["MLC11-1111", "MLC11-2222", "MLC11-1609"], ["MLC11-1609"])
    np.testing.assert_array_equal(match.index, [2])
    with pytest.raises(ChannelMismatchError, match="lacks 1 of them: MLC11-1609"):
        match_channels(["MLC11-1111", "MLC11-2222"], ["MLC11-1609"])


def test_missing_channels_are_allowed_up_to_the_fraction_and_named_beyond_it():
    wanted = [f"C{i}" for i in range(10)]
    match = match_channels(wanted[:9] + ["STI"], wanted, max_missing=0.1)
    assert match.missing == ["C9"] and match.present.sum() == 9
    data = np.arange(20.0).reshape(10, 2)
    taken = match.take(data)
    np.testing.assert_array_equal(taken[:9], data[:9])
    np.testing.assert_array_equal(taken[9], 0.0)
    with pytest.raises(ChannelMismatchError, match=r"lacks 2 of them: C8, C9 \(at most 10% may be missing\)"):
        match_channels(wanted[:8], wanted, max_missing=0.1)


def test_plan_counts_bad_sensors_named_with_another_suffix_and_refuses_too_many():
    wanted = [f"MLC{i}1-1609" for i in range(1, 10)] + ["MZC01-1609"]
    available = [c.replace("-1609", "-4304") for c in wanted[:-1]]
    plan = plan_channels(available, wanted, "mask", bad=["MLC11-4304", "UPPT001"], max_missing=0.2)
    assert plan.missing == ["MZC01-1609"] and plan.bad == ["MLC11-1609"]
    assert plan.absent == ["MLC11-1609", "MZC01-1609"]
    assert plan.counts() == {
        "channels_used": 8,
        "channels_missing": 1,
        "channels_bad": 1,
        "channels_masked": 2,
    }
    with pytest.raises(
        ChannelMismatchError, match=r"without 3 of its 10 sensors.*bad: MLC11-1609, MLC21-1609"
    ):
        plan_channels(available, wanted, "mask", bad=["MLC11-1609", "MLC21-1609"], max_missing=0.2)


# ---------------------------------------------------------------------------------------------- repair
def _sphere_positions(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 3))
    v[:, 2] = np.abs(v[:, 2]) + 0.3  # an upper cap, as EEG caps are
    return 0.09 * v / np.linalg.norm(v, axis=1, keepdims=True)


def test_interpolation_rebuilds_a_smooth_field_from_the_neighbours():
    names = [f"E{i}" for i in range(48)]
    pos = _sphere_positions(len(names))
    t = np.linspace(0, 1, 50)
    field = (pos[:, 0:1] * np.sin(2 * np.pi * t) + pos[:, 1:2] * np.cos(2 * np.pi * t)) / 0.09
    repair = ChannelRepair(names, ["E3", "E17"], "interpolate", positions=pos)
    damaged = field.copy()
    damaged[[3, 17]] = np.nan  # a bad sensor's NaNs must not leak
    out = repair.apply(damaged)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[[3, 17]], field[[3, 17]], atol=0.15)
    np.testing.assert_array_equal(out[:3], field[:3])
    assert repair.weights.shape == (2, 48) and np.all(repair.weights[:, [3, 17]] == 0)


def test_interpolation_without_positions_is_refused_clearly():
    with pytest.raises(ValueError, match="needs sensor positions.*from-recording"):
        ChannelRepair(["a", "b", "c"], ["b"], "interpolate")
    out = ChannelRepair(["a", "b", "c"], ["b"], "mask").apply(np.ones((3, 4)))
    np.testing.assert_array_equal(out[1], 0.0)


def _brain_module(n_ch: int = 12):
    torch.manual_seed(0)
    arch = {
        "name": "brain_module",
        "n_channels": n_ch,
        "n_times": 40,
        "dim": 8,
        "spatial_channels": 6,
        "fourier_freqs": 4,
        "hidden": 8,
        "depth": 1,
        "out_channels": 8,
        "positions": np.random.default_rng(0).uniform(size=(n_ch, 2)).tolist(),
    }
    return build_encoder(arch).eval()


def test_masked_sensors_get_no_weight_in_any_form_of_the_brain_module():
    from brainstream.models.runtime.base import weights_digest

    model = _brain_module()
    before = model.spatial.weights().detach().clone()
    digest = weights_digest(model)
    model.mask_sensors([2, 7])
    after = model.spatial.weights().detach()
    assert torch.all(after[:, [2, 7]] == 0)
    torch.testing.assert_close(after.sum(dim=1), torch.ones(after.shape[0]))
    keep = [i for i in range(12) if i not in (2, 7)]
    torch.testing.assert_close(after[:, keep], before[:, keep] / before[:, keep].sum(dim=1, keepdim=True))
    assert weights_digest(model) != digest  # exports of the unmasked module are not reused
    x = torch.randn(3, 12, 40)
    noisy = x.clone()
    noisy[:, [2, 7]] = torch.randn(3, 2, 40) * 1e3
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(noisy))
        torch.testing.assert_close(model.export_form()(noisy), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="every sensor"):
        model.mask_sensors(range(12))


# ------------------------------------------------------------------------------------ profiles from data
def test_profile_from_a_real_ctf_recording_keeps_the_sensors_and_their_positions(tmp_path):
    import mne

    raw = mne.io.read_raw_ctf(CTF_DS, verbose="error")
    profile, warnings = profile_from_info(raw.info, "site-ctf")
    assert not warnings
    assert (profile.modality, profile.channel_type, profile.unit, profile.sfreq) == (
        "meg",
        "mag",
        "T",
        1200.0,
    )
    assert profile.n_channels == 273 and all(c.endswith("-4304") for c in profile.channels)
    assert np.asarray(profile.positions).shape == (273, 3)
    path = write_device_profile(profile, tmp_path / "site.yaml")
    loaded = load_device_profile(path)
    assert loaded.channels == profile.channels
    pos = loaded.positions_2d
    assert pos.shape == (273, 2) and pos.min() == 0.0 and pos.max() == 1.0
    # left sensors lie on one side of the right ones
    left = [i for i, c in enumerate(loaded.channels) if c.startswith("ML")]
    right = [i for i, c in enumerate(loaded.channels) if c.startswith("MR")]
    lr = pos[left].mean(axis=0) - pos[right].mean(axis=0)
    assert np.abs(lr).max() > 0.3


def test_profile_without_positions_is_written_with_a_warning_and_a_bad_montage_is_refused(tmp_path):
    import mne

    raw = mne.io.read_raw_brainvision(BRAINVISION, verbose="error")
    profile, warnings = profile_from_info(raw.info, "test_NO")
    assert profile.modality == "eeg" and profile.n_channels == 65 and profile.sfreq == 5000.0
    assert not profile.has_positions
    assert len(warnings) == 1 and "spatial encoders" in warnings[0] and "--montage" in warnings[0]
    with pytest.raises(ValueError, match="not in the montage|not present|DigMontage"):
        profile_from_info(raw.info, "test_NO", montage="standard_1020")
