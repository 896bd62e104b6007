"""Across people: a held-out subject's session (a real virtual subject of the ``rsvp_fast`` protocol) and the
protocol's population setting. Anchor alignment and the few-shot curves are tested in ``test_adaptation``
on its synthetic population."""

from __future__ import annotations

import numpy as np
import pytest

from brainstream.calibration.population import heldout_session
from brainstream.calibration.protocol import VirtualSubjectConfig, load_protocol, split_images


def test_heldout_session_keeps_the_protocol_test_set_apart():
    from brainstream.calibration.session import load_gallery

    config = load_protocol("rsvp_fast")
    config = config.model_copy(update={"subject": VirtualSubjectConfig(shared_fraction=0.25)})
    gallery = load_gallery(config)
    data = heldout_session(config, gallery, seed=301, n_train=12)
    test_ids, _, _ = split_images(config, list(gallery.ids))
    train, test = data.split("train"), data.split("test")
    assert len(train.X) == 12 and len(set(train.image_ids)) == 12
    assert sorted(test.image_ids.tolist()) == sorted(i for i in test_ids for _ in range(config.test_repeats))
    assert not set(train.image_ids) & set(test.image_ids)
    assert np.isfinite(data.X).all() and data.subject_names == ["heldout-301"]
    # the subject's own scaler, fitted on its training windows: they are centred on ~0 per channel
    assert np.abs(np.median(train.X, axis=(0, 2))).max() < 1.0


def test_protocol_passes_the_population_setting_to_the_simulator():
    assert VirtualSubjectConfig().simulator_kwargs() == {}
    assert VirtualSubjectConfig(snr=0.8, shared_fraction=0.0).simulator_kwargs() == {
        "snr": 0.8,
        "shared_fraction": 0.0,
    }
    with pytest.raises(ValueError, match="less than or equal to 1"):
        VirtualSubjectConfig(shared_fraction=1.5)


def test_a_shipped_pretrained_encoder_is_used_when_its_key_matches(tmp_path, monkeypatch):
    import brainstream.calibration.pretrained as pretrained
    from brainstream.calibration.session import load_gallery

    config = load_protocol("rsvp_fast")
    gallery = load_gallery(config)
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path)
    monkeypatch.setenv("BRAINSTREAM_CACHE", str(tmp_path / "cache"))  # nothing may be built here
    key = pretrained.pretrained_key(config, gallery)
    stale = tmp_path / f"{config.name}-000000000000"
    stale.mkdir()
    (stale / pretrained.INFO_FILE).write_text("{}")
    shipped = tmp_path / f"{config.name}-{key}"
    shipped.mkdir()
    (shipped / pretrained.INFO_FILE).write_text("{}")
    assert pretrained.get_pretrained(config, gallery, progress=False) == shipped
    with pytest.raises(pretrained.PretrainedError, match="choose another --virtual-subject"):
        pretrained.get_pretrained(config, gallery, new_subject_seed=config.pretrained.seeds[0])


def test_the_rsvp_protocol_ships_its_pretrained_encoder_with_a_trained_zero_shot_path():
    """A first calibration must not pretrain: the shipped encoder's key matches the protocol and simulator
    (when the simulator or the recipe changes, rebuild it: python -m brainstream.calibration.pretrained
    --ship rsvp)."""
    import brainstream.calibration.pretrained as pretrained
    from brainstream.calibration.session import load_gallery
    from brainstream.models.checkpoint import load_checkpoint

    config = load_protocol("rsvp")
    key = pretrained.pretrained_key(config, load_gallery(config))
    shipped = pretrained.SHIPPED_DIR / f"{config.name}-{key}"
    assert (shipped / pretrained.INFO_FILE).is_file(), f"stale or missing shipped encoder (key {key})"
    assert sorted(pretrained.SHIPPED_DIR.glob(f"{config.name}-*")) == [shipped]  # no stale copy beside it
    assert pretrained.read_info(shipped)["seeds"] == config.pretrained.seeds
    model, _ = load_checkpoint(shipped)
    assert model.subject_layer.weight.shape[0] == len(config.pretrained.seeds)
    assert model.subject_layer.dropout == config.pretrained.model["subject_dropout"] > 0
    assert sum(f.stat().st_size for f in shipped.iterdir()) < 5_000_000  # small enough to ship


def test_pretraining_augmentation_reaches_the_trainer_and_the_key():
    import brainstream.calibration.pretrained as pretrained
    from brainstream.calibration.session import load_gallery

    config = load_protocol("rsvp_fast")
    gallery = load_gallery(config)
    assert pretrained.training_config(config, 50).augment.sign_flip == 0.0  # none unless asked
    recipe = config.pretrained.model_copy(update={"augment": {"sign_flip": 0.5, "time_shift": 8}})
    augmented = config.model_copy(update={"pretrained": recipe})
    aug = pretrained.training_config(augmented, 50).augment
    assert (aug.sign_flip, aug.time_shift, aug.noise_std) == (0.5, 8, 0.0)
    # an augmented recipe is another encoder; without augmentation the key is the one encoders had before
    assert pretrained.pretrained_key(augmented, gallery) != pretrained.pretrained_key(config, gallery)
    bad = config.model_copy(
        update={"pretrained": config.pretrained.model_copy(update={"augment": {"sign_flips": 0.5}})}
    )
    with pytest.raises(ValueError, match="sign_flips"):
        pretrained.training_config(bad, 50)


def test_cached_trials_build_once_and_read_back_the_same_trials(tmp_path):
    from brainstream.calibration.data import cached_trials
    from brainstream.calibration.session import load_gallery

    config = load_protocol("rsvp_fast")
    gallery = load_gallery(config)
    session = heldout_session(config, gallery, seed=302, n_train=6)
    calls = []

    def build():
        calls.append(1)
        return session

    key = {"session": "heldout", "seed": 302, "n_train": 6}
    assert cached_trials(tmp_path, key, build) is session
    again = cached_trials(tmp_path, key, build)  # read back from the file, not built again
    assert len(calls) == 1 and len(list(tmp_path.glob("trials-*.npz"))) == 1 and again is not session
    assert np.array_equal(again.X, session.X) and np.array_equal(again.targets, session.targets)
    assert again.image_ids.tolist() == session.image_ids.tolist() and again.scaler == session.scaler
    assert again.subject_names == session.subject_names and again.ch_names == session.ch_names
    assert np.array_equal(again.positions, session.positions) and again.sfreq == session.sfreq
    cached_trials(tmp_path, {**key, "seed": 303}, build)  # another key: another file
    assert len(calls) == 2 and len(list(tmp_path.glob("trials-*.npz"))) == 2
    assert cached_trials(None, key, build) is session and len(calls) == 3  # no folder: no cache
