import pytest

from brainstream.models.events import StimulusEvent, format_stimulus_marker, parse_stimulus_marker


def test_marker_round_trip():
    for split in ("train", "test", "catch"):
        assert parse_stimulus_marker(format_stimulus_marker(split, "img_001")) == StimulusEvent(
            split, "img_001"
        )


@pytest.mark.parametrize("value", ["", "boundary", "train/", "other/x", "train/a/b", "BAD boundary"])
def test_non_stimulus_markers_are_none(value):
    assert parse_stimulus_marker(value) is None


def test_format_rejects_bad_ids():
    with pytest.raises(ValueError):
        format_stimulus_marker("train", "a/b")
    with pytest.raises(ValueError):
        format_stimulus_marker("nope", "a")
