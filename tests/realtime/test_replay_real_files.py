"""Real recordings from other labs (``tests/data/README.md``) through ``brainstream replay`` and
``brainstream record``, two real processes over real liblsl on loopback.

The recorder connects while the replay waits for its consumers (``--wait``), so the recording must hold the
whole file: every sample from sample 0, identical to mne's read of it (pyxdf's for XDF files), and every
annotation as a marker at its sample. XDF files written by LabRecorder replay with their clock resets
handled (in file order, times increasing) and their empty streams left out.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import mne
import numpy as np
import pytest
import pyxdf

from brainstream.models import xdf

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def _replay_and_record(path: Path, tmp_path: Path, speed: float, *extra: str) -> tuple[dict, str, str]:
    """Replay ``path`` (signal renamed to a unique name), record every outlet it opens until it ends.

    Returns the recorded streams by outlet name (our name for the signal is ``"signal"``), and the replay's
    stdout and stderr.
    """
    name = f"bsreal-{uuid.uuid4().hex[:8]}"
    replay = subprocess.Popen(
        [sys.executable, "-m", "brainstream", "replay", str(path), "--name", name, "--speed", str(speed),
         "--wait", "60", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    record = None
    try:
        outlets, lines = [], []
        for line in replay.stdout:  # the outlets it opened, then it waits for their consumers
            lines.append(line)
            if line.startswith("outlet "):
                outlets.append(line.split("'")[1])
            if line.startswith("waiting up to"):
                break
        assert outlets, "".join(lines) + replay.stderr.read()[-3000:]
        out = tmp_path / "recorded.xdf"
        streams = [a for o in outlets for a in ("--stream", o)]
        record = subprocess.Popen(
            [sys.executable, "-m", "brainstream", "record", str(out), *streams],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        rest, err = replay.communicate(timeout=120)
        assert replay.returncode == 0, err[-3000:]
        record.send_signal(signal.SIGTERM)  # after the replay's last push: the recorder closes the file
        rec_out, rec_err = record.communicate(timeout=60)
        assert record.returncode == 0, rec_err[-3000:]
    finally:
        for proc in (replay, record):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    recorded = xdf.read_xdf(out, synchronize_clocks=False)
    found = {o: recorded.stream(o) for o in outlets}
    found["signal"] = found.pop(name)
    return found, "".join(lines) + rest, err


RAW_FILES = [
    # file, speed (each plays in well under a second), extra replay arguments, whether its stim channel
    # (auto: the neuromag122 file's first, STI 001) never changes
    pytest.param("ctf/testdata_ctf_short_discontinuous.ds", 10, ("--events-from-stim", "UPPT001"), True,
                 id="ctf"),
    pytest.param("fif/neuromag122_test_file-raw.fif", 2, ("--events-from-stim", "auto"), True, id="fif"),
    pytest.param("edf/test_reduced.edf", 10, ("--events-from-stim", "Status"), False, id="edf"),
    pytest.param("brainvision/test_NO.vhdr", 1, (), False, id="brainvision"),
    pytest.param("eeglab/test_raw.set", 200, (), False, id="eeglab"),
]  # fmt: skip


@pytest.mark.parametrize(("rel", "speed", "extra", "silent_stim"), RAW_FILES)
def test_real_recording_round_trips_from_sample_0(rel, speed, extra, silent_stim, tmp_path):
    raw = mne.io.read_raw(DATA / rel, preload=True, verbose="error")
    streams, out, err = _replay_and_record(DATA / rel, tmp_path, speed, *extra)
    sig = streams["signal"]
    dtype = np.float32 if getattr(raw, "orig_format", "double") == "single" else np.float64
    assert sig.ch_names == raw.ch_names
    # every sample, from sample 0, values exactly as mne reads them
    np.testing.assert_array_equal(sig.data, raw.get_data().astype(dtype))
    np.testing.assert_allclose(np.diff(sig.timestamps) * speed * raw.info["sfreq"], 1.0, atol=1e-4)

    # every annotation (and stim event, when asked) a marker at its sample
    ann = raw.annotations
    onsets = raw.time_as_index(ann.onset, use_rounding=True, origin=ann.orig_time)  # the nearest sample
    expected = list(zip(onsets, ann.description, strict=True))
    if "--events-from-stim" in extra:
        channel = extra[1] if extra[1] != "auto" else "STI 001"
        events = mne.find_events(raw, stim_channel=channel, consecutive=True, shortest_event=1,
                                 initial_event=True, verbose="error")  # fmt: skip
        expected += [(s - raw.first_samp, str(v)) for s, v in events[:, [0, 2]]]
    expected = sorted((int(s), d) for s, d in expected if 0 <= s < raw.n_times)
    if silent_stim:  # a stim channel that never changes: a warning, no markers from it
        assert "never changes" in err
    if not expected:
        assert set(streams) == {"signal"} and "no marker outlet" in err
        return
    (marker_name,) = set(streams) - {"signal"}
    markers = streams[marker_name]
    samples = np.round((markers.timestamps - sig.timestamps[0]) * speed * raw.info["sfreq"]).astype(int)
    assert sorted(zip(samples.tolist(), markers.markers, strict=True)) == expected


XDF_FILES = [
    pytest.param("minimal.xdf", 2, id="minimal"),
    pytest.param("clock_resets.xdf", 400, id="clock_resets"),  # 573 s of BioSemi with clock resets
    pytest.param("empty_streams.xdf", 20, id="empty_streams"),
]


@pytest.mark.parametrize(("rel", "speed"), XDF_FILES)
def test_labrecorder_xdf_round_trips(rel, speed, tmp_path):
    original, _ = pyxdf.load_xdf(str(DATA / "xdf" / rel), verbose=False)  # as the replay reads it
    playable = [s for s in original if len(s["time_stamps"])]
    streams, out, err = _replay_and_record(DATA / "xdf" / rel, tmp_path, speed)
    assert len(streams) == len(playable)  # every stream with samples; the empty ones tolerated, left out
    if rel == "empty_streams.xdf":
        assert len(playable) == 2 < len(original) == 4
    t_ref = min(s["time_stamps"][0] for s in playable)
    first = min(s.timestamps[0] for s in streams.values())
    signals = [s for s in playable if s["info"]["channel_format"][0] != "string"]
    for s in playable:
        name = s["info"]["name"][0]
        got = streams["signal"] if s is signals[0] else streams[name]
        if s["info"]["channel_format"][0] == "string":
            assert got.markers == [v[0] for v in s["time_series"]]
        else:
            np.testing.assert_array_equal(got.data, np.asarray(s["time_series"]).T)
        # in file order with times increasing (clock resets handled), relative timing kept at the speed
        assert np.all(np.diff(got.timestamps) >= 0)
        np.testing.assert_allclose((got.timestamps - first) * speed, s["time_stamps"] - t_ref, atol=1e-6)
