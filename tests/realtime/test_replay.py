"""Replay on real liblsl (loopback): FIF / XDF / BIDS → outlets → Recorder → XDF, compared to the source."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import mne
import numpy as np
import pylsl
import pytest
import pyxdf

from brainstream.cli import main as cli_main
from brainstream.models import xdf
from brainstream.realtime.recording import Recorder, StreamHeader, XdfWriter
from brainstream.realtime.replay import Player, UnsupportedRecordingError, open_recording
from brainstream.realtime.replay.xdf_stream import StreamingXdfSource

REPO = Path(__file__).resolve().parents[2]
SFREQ = 250.0
ONSETS = [0.5, 1.004, 1.5, 2.208]  # 1.004 and 2.208 fall on samples 251 and 552
DESCRIPTIONS = ["train/img_a", "test/img_b", "BAD_blink", "catch/img c"]


def _make_fif(path: Path, seconds: float = 3.0, annotations: bool = True) -> mne.io.Raw:
    n = int(seconds * SFREQ)
    rng = np.random.default_rng(1)
    data = np.vstack([rng.standard_normal((3, n)) * 1e-5, np.arange(n)[None]])  # EEG + a sample counter
    info = mne.create_info(["Fz", "Cz", "Oz", "COUNTER"], SFREQ, ["eeg", "eeg", "eeg", "misc"])
    raw = mne.io.RawArray(data, info, verbose=False)
    if annotations:
        raw.set_annotations(mne.Annotations(ONSETS, [0.0] * 4, DESCRIPTIONS))
    raw.save(path, overwrite=True, verbose=False)
    return mne.io.read_raw_fif(path, preload=True, verbose=False)


def _replay_and_record(player: Player, out: Path) -> Path:
    """Record every outlet of ``player`` while it plays to the end; inlets closed before the outlets."""
    player.open()
    rec = Recorder(out).start()
    try:
        for name in player.outlet_names:
            rec.add_stream(name, timeout=5.0, recover=False)
        stats = player.run()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            rec.stats["streams"][k]["samples"] < n for k, n in stats.samples.items()
        ):
            time.sleep(0.05)
    finally:
        rec.stop()
        player.close()
    assert rec.alarms == []
    return out


def test_fif_round_trip_is_sample_identical(tmp_path, unique_name):
    raw = _make_fif(tmp_path / "src_raw.fif")
    speed = 4.0
    player = Player(tmp_path / "src_raw.fif", name=unique_name, speed=speed, wait_for_consumers=5.0)
    assert player.outlet_names == [unique_name, f"{unique_name}-markers"]
    out = _replay_and_record(player, tmp_path / "rec.xdf")

    streams, _ = pyxdf.load_xdf(out, dejitter_timestamps=False, verbose=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    sig, mrk = by_name[unique_name], by_name[f"{unique_name}-markers"]
    # values, channel names, sample count: identical (the FIF holds float32, so does the stream)
    np.testing.assert_array_equal(sig["time_series"].T, raw.get_data().astype(np.float32))
    labels = [c["label"][0] for c in sig["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == raw.ch_names
    assert float(sig["info"]["nominal_srate"][0]) == SFREQ
    # markers: descriptions unchanged, times at their samples (within one sample period)
    assert [m[0] for m in mrk["time_series"]] == DESCRIPTIONS
    t_rel = (np.asarray(mrk["time_stamps"]) - sig["time_stamps"][0]) * speed
    assert np.all(np.abs(t_rel - np.asarray(ONSETS)) < 1.0 / SFREQ)
    # relative timing of the signal: exactly 1/(sfreq*speed) apart
    np.testing.assert_allclose(np.diff(sig["time_stamps"]), 1 / (SFREQ * speed), rtol=1e-6)
    assert player.stats.worst_lag_ms < 1000  # sanity only; lag figures belong to `brainstream bench replay`


def test_start_duration_and_no_markers(tmp_path, unique_name):
    _make_fif(tmp_path / "src_raw.fif")
    player = Player(
        tmp_path / "src_raw.fif", name=unique_name, speed=8.0, start=1.0, duration=0.8, markers=False,
        wait_for_consumers=5.0,
    )  # fmt: skip
    assert player.outlet_names == [unique_name]
    out = _replay_and_record(player, tmp_path / "rec.xdf")
    s = xdf.read_xdf(out).stream(unique_name)
    np.testing.assert_array_equal(s.data[3], np.arange(250, 450, dtype=np.float32))


def test_file_without_annotations_has_no_marker_outlet(tmp_path, unique_name, caplog):
    _make_fif(tmp_path / "plain_raw.fif", annotations=False)
    with caplog.at_level(logging.WARNING):
        src = open_recording(tmp_path / "plain_raw.fif", name=unique_name)
    assert [s.name for s in src.streams] == [unique_name]
    said = [r for r in caplog.records if "no annotations" in r.getMessage()]
    assert len(said) == 1


def _write_multistream(src: Path, prefix: str):
    """Two signals at different rates and a marker stream, offset from each other, in many chunks."""
    w = XdfWriter(src).open()
    a = w.add_stream(StreamHeader.local(f"{prefix}-a", "EEG", ["x", "y"], 100.0))
    b = w.add_stream(StreamHeader.local(f"{prefix}-b", "MISC", ["c"], 40.0, channel_format="int32"))
    m = w.add_stream(StreamHeader.local(f"{prefix}-m", "Markers", ["m"], 0.0, channel_format="string"))
    t0 = 5000.0
    va = np.vstack([np.arange(200), -np.arange(200)]).astype(np.float32)
    vb = np.arange(70, dtype=np.int32)[None]
    for k in range(0, 200, 30):  # interleaved chunks, as a recorder writes them
        w.write_samples(a, va[:, k : k + 30], t0 + np.arange(k, min(k + 30, 200)) / 100.0)
        kb = k * 70 // 200
        kb1 = (k + 30) * 70 // 200 if k + 30 < 200 else 70
        w.write_samples(b, vb[:, kb:kb1], t0 + 0.25 + np.arange(kb, kb1) / 40.0)
    w.write_samples(m, ["train/one"], [t0 + 0.5])
    w.write_samples(m, ["test/two"], [t0 + 1.23])
    w.close()
    return va, vb


@pytest.mark.parametrize("reader", ["pyxdf", "streaming"])
def test_multistream_xdf_from_our_recorder_replays_together(tmp_path, unique_name, reader):
    src = tmp_path / "multi.xdf"
    va, vb = _write_multistream(src, unique_name)
    source = src if reader == "pyxdf" else StreamingXdfSource(src)
    player = Player(source, speed=5.0, wait_for_consumers=5.0)
    assert sorted(player.outlet_names) == sorted([f"{unique_name}-{k}" for k in "abm"])
    out = _replay_and_record(player, tmp_path / "again.xdf")
    f = xdf.read_xdf(out, synchronize_clocks=False)
    sa, sb, sm = (f.stream(f"{unique_name}-{k}") for k in "abm")
    np.testing.assert_array_equal(sa.data, va)
    np.testing.assert_array_equal(sb.data, vb)
    assert sb.data.dtype == np.int32 and sa.ch_names == ["x", "y"]
    assert sm.markers == ["train/one", "test/two"]
    # relative timing across streams kept (compressed by the speed)
    ref = sa.timestamps[0]
    np.testing.assert_allclose((sb.timestamps[0] - ref) * 5.0, 0.25, atol=1e-6)
    np.testing.assert_allclose((sm.timestamps - ref) * 5.0, [0.5, 1.23], atol=1e-6)


def test_streaming_xdf_blocks_match_the_whole_file_even_when_cut(tmp_path):
    """The on-disk index gives exactly the samples of the file in every window, also for a crashed file."""
    src = tmp_path / "multi.xdf"
    va, vb = _write_multistream(src, "s")
    raw = src.read_bytes()
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(raw[: int(len(raw) * 0.7)])  # ends inside a chunk, no footers
    for path in (src, cut):
        whole = xdf.read_xdf(path)
        source = StreamingXdfSource(path)
        try:
            present = [s for s in whole.streams if s.n_samples]  # the cut file lost its markers
            assert [sp.name for sp in source.streams] == [s.name for s in present]
            t_ref = min(s.timestamps[0] for s in present)
            for start, stop in ((0.0, source.duration), (0.37, 1.5)):
                blocks = list(source.blocks(start, stop, block_s=0.3))
                for i, stream in enumerate(present):
                    rel = stream.timestamps - t_ref
                    sel = (rel >= start) & (rel < stop)
                    times = np.concatenate([blk.times[i] for blk in blocks])
                    np.testing.assert_allclose(times, rel[sel], atol=1e-9)
                    if stream.is_markers:
                        got = [v[0] for blk in blocks for v in blk.values[i]]
                        assert got == [m for m, k in zip(stream.markers, sel, strict=True) if k]
                    else:
                        got = np.concatenate([blk.values[i] for blk in blocks], axis=1)
                        np.testing.assert_array_equal(got, stream.data[:, sel])
        finally:
            source.close()
    assert xdf.read_xdf(cut).truncated


def test_bids_recording_replays_events_tsv_as_markers(tmp_path, unique_name):
    mne_bids = pytest.importorskip("mne_bids")
    n = int(2.5 * SFREQ)
    data = np.vstack([np.random.default_rng(2).standard_normal((3, n)) * 1e-12, np.arange(n)[None]])
    info = mne.create_info(["MLC11", "MLC12", "MRO11", "UPPT001"], SFREQ, ["mag", "mag", "mag", "misc"])
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_annotations(mne.Annotations([0.4, 1.2], [0.0, 0.0], ["train/img1", "test/img2"]))
    raw.info["line_freq"] = 50.0
    bids_root = tmp_path / "bids"
    bp = mne_bids.BIDSPath(subject="01", task="view", run="1", datatype="meg", root=bids_root)
    mne_bids.write_raw_bids(raw, bp, allow_preload=True, format="FIF", overwrite=True, verbose=False)
    events_tsv = next(bids_root.rglob("*_events.tsv")).read_text()
    assert "train/img1" in events_tsv
    recording = next(bids_root.rglob("*_meg.fif"))

    player = Player(recording, name=unique_name, speed=5.0, wait_for_consumers=5.0)
    assert player.specs[0].stype == "MEG" and player.specs[0].units[:3] == ("T", "T", "T")
    out = _replay_and_record(player, tmp_path / "rec.xdf")
    f = xdf.read_xdf(out, synchronize_clocks=False)
    s, m = f.stream(unique_name), f.stream(f"{unique_name}-markers")
    assert m.markers == ["train/img1", "test/img2"]
    np.testing.assert_allclose((m.timestamps - s.timestamps[0]) * 5.0, [0.4, 1.2], atol=1 / SFREQ)
    assert s.ch_names == raw.ch_names
    np.testing.assert_allclose(s.data[3], np.arange(n))  # the counter survives the BIDS copy


def test_unknown_file_is_refused_naming_the_formats(tmp_path, capsys):
    bad = tmp_path / "notes.xyz"
    bad.write_text("hello")
    with pytest.raises(UnsupportedRecordingError, match=r"\.fif.*\.xdf|\.xdf.*\.fif"):
        open_recording(bad)
    assert cli_main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "brainstream replay: error:" in err and ".edf" in err and ".xdf" in err
    assert cli_main(["replay", str(tmp_path / "missing.fif")]) == 2
    (tmp_path / "garbage.xdf").write_bytes(b"not an xdf file at all")
    with pytest.raises(UnsupportedRecordingError, match=r"could not be read as XDF.*\.fif"):
        open_recording(tmp_path / "garbage.xdf")


def test_cli_replay_at_speed_10_keeps_order_and_timing(tmp_path, unique_name):
    """`brainstream replay --speed 10 --loop` in a real subprocess, read back with a plain inlet."""
    _make_fif(tmp_path / "src_raw.fif", seconds=1.0, annotations=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "brainstream", "replay", str(tmp_path / "src_raw.fif"), "--speed", "10",
         "--loop", "--name", unique_name, "--chunk-ms", "10"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        found = pylsl.resolve_byprop("name", unique_name, minimum=1, timeout=30)
        assert found, "the replay outlet never appeared"
        inlet = pylsl.StreamInlet(found[0], recover=False, processing_flags=0)
        inlet.open_stream(timeout=5)
        counters, stamps = [], []
        deadline = time.monotonic() + 10
        while len(stamps) < 1000 and time.monotonic() < deadline:  # > 3 passes of the 250-sample file
            chunk, ts = inlet.pull_chunk(timeout=0.2, max_samples=512)
            counters += [c[3] for c in chunk]
            stamps += ts
        inlet.close_stream()
        del inlet
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "worst lag" in out
    counters = np.asarray(counters)
    # in order, wrapping at the end of the file, no sample lost or repeated
    expected = (counters[0] + np.arange(counters.size)) % 250
    np.testing.assert_array_equal(counters, expected)
    # timestamps 1/(250*10) s apart, also across the loop seam
    np.testing.assert_allclose(np.diff(stamps), 1 / 2500, rtol=1e-6, atol=1e-9)


def test_bench_replay_reports_the_issue_fields(capsys):
    """The benchmark runs end to end on a small stream (its figures need a quiet machine, not judged here)."""
    from brainstream.cli import main

    assert main(["bench", "replay", "--seconds", "2", "--channels", "8", "--sfreq", "250", "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("rate_error_pct", "worst_lag_ms", "recorder_mb_s", "fsync_ms_p99"):
        assert isinstance(result[key], float) and result[key] >= 0, key
    assert result["recorder_mb_s"] > 0
    assert result["baseline"]["replay_details"]["samples_received"] == 500


def test_memory_does_not_grow_with_file_length(tmp_path, unique_name):
    """A 60 s file streams from disk: the player's peak allocation stays far below the file's size."""
    import tracemalloc

    n_ch, sfreq, seconds = 64, 1000.0, 60
    info = mne.create_info(n_ch, sfreq, "eeg")
    data = np.random.default_rng(3).standard_normal((n_ch, int(sfreq * seconds))).astype(np.float32) * 1e-5
    mne.io.RawArray(data.astype(np.float64), info, verbose=False).save(
        tmp_path / "long_raw.fif", verbose=False
    )
    del data
    file_bytes = (tmp_path / "long_raw.fif").stat().st_size
    player = Player(tmp_path / "long_raw.fif", name=unique_name, speed=200.0, chunk_ms=20.0, markers=False)
    tracemalloc.start()
    try:
        stats = player.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        player.close()
    assert stats.samples[unique_name] == int(sfreq * seconds)
    assert peak < file_bytes / 3, f"peak {peak / 1e6:.1f} MB for a {file_bytes / 1e6:.1f} MB file"


def test_stop_mid_replay_returns_and_keeps_outlets_until_close(tmp_path, unique_name):
    _make_fif(tmp_path / "src_raw.fif", seconds=3.0)
    player = Player(tmp_path / "src_raw.fif", name=unique_name, loop=True).start()
    time.sleep(0.3)
    assert not player.join(0.0)  # a looping replay runs until stopped
    t = time.monotonic()
    player.stop()
    assert time.monotonic() - t < 5.0 and player.join(0.0)
    assert 0 < player.stats.samples[unique_name] < 3 * SFREQ and player.error is None
    assert len(player.outlets) == 2  # still there for consumers to drain
    player.close()
    assert player.outlets == []


def test_late_pushes_do_not_accumulate_into_drift(tmp_path, unique_name, monkeypatch):
    """Every sleep oversleeps by 3 ms (a busy machine): each push is late, but lateness never adds up,
    because pushes are scheduled on absolute LSL times, not on the time since the previous push."""
    import brainstream.realtime.replay.player as player_module

    real_sleep = time.sleep
    monkeypatch.setattr(player_module.time, "sleep", lambda s: real_sleep(s + 0.003))
    _make_fif(tmp_path / "src_raw.fif", seconds=3.0, annotations=False)
    # no spin window: it would wake the player before the deadline and hide the oversleep
    player = Player(tmp_path / "src_raw.fif", name=unique_name, speed=3.0, chunk_ms=10.0, spin_ms=0.0)
    stats = player.run()
    player.close()
    lags = np.asarray(stats.lags) * 1e3
    assert stats.pushes == lags.size >= 90
    assert np.median(lags) >= 2.5  # the oversleep shows as lag...
    # ...that stays put: a scheduler counting from the previous push would be ~90 × 3 ms late by the end
    assert np.median(lags[-20:]) < np.median(lags[:20]) + 10


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread scheduling calls are Linux's")
def test_priority_and_gc_freeze_are_undone_when_playback_ends(tmp_path, unique_name):
    """The push thread may get SCHED_FIFO (root) or a lower nice value while it plays, and the heap is
    frozen; both are back as they were afterwards, whether or not the OS allowed the raise."""
    import gc
    import os
    import threading

    def scheduling() -> tuple:
        tid = threading.get_native_id()
        return os.sched_getscheduler(0), os.sched_getparam(0), os.getpriority(os.PRIO_PROCESS, tid)

    _make_fif(tmp_path / "src_raw.fif", seconds=1.0, annotations=False)
    before = scheduling()
    frozen_before = gc.get_freeze_count()
    player = Player(tmp_path / "src_raw.fif", name=unique_name, speed=4.0, markers=False)
    stats = player.run()  # plays in this thread: its priority is the one raised
    player.close()
    assert stats.scheduling in ("SCHED_FIFO 10", "nice -10", "normal")
    assert scheduling() == before
    assert gc.get_freeze_count() == frozen_before
    assert stats.samples[unique_name] == int(SFREQ) and 0 < stats.cpu_share < 2


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread scheduling calls are Linux's")
def test_a_saturated_push_thread_gives_its_raised_priority_back(tmp_path, unique_name):
    """Spinning for the whole push interval keeps a core busy: at a real-time priority that would starve
    the machine, so the player drops back to normal priority (when it had more) and says so."""
    import os
    import threading

    _make_fif(tmp_path / "src_raw.fif", seconds=1.0, annotations=False)
    tid = threading.get_native_id()
    before = os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, tid)
    player = Player(tmp_path / "src_raw.fif", name=unique_name, speed=2.0, markers=False, spin_ms=10.0)
    stats = player.run()
    player.close()
    assert stats.samples[unique_name] == int(SFREQ) and stats.cpu_share > 0.5
    assert stats.scheduling == "normal" or stats.scheduling.endswith(", then normal (push thread saturated)")
    assert (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, tid)) == before


def test_spin_window_must_fit_in_a_push_interval(tmp_path):
    _make_fif(tmp_path / "src_raw.fif", seconds=1.0, annotations=False)
    with pytest.raises(ValueError, match="spin_ms must be between 0 and chunk_ms"):
        Player(tmp_path / "src_raw.fif", chunk_ms=5.0, spin_ms=6.0)


def _make_stim_fif(path: Path, stim: np.ndarray) -> mne.io.Raw:
    """Two EEG channels and a stim channel holding ``stim``."""
    data = np.vstack([np.random.default_rng(2).standard_normal((2, stim.size)) * 1e-5, stim[None]])
    info = mne.create_info(["Fz", "Cz", "STI 014"], SFREQ, ["eeg", "eeg", "stim"])
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_annotations(mne.Annotations([0.5], [0.0], ["image/a"]))
    raw.save(path, overwrite=True, verbose=False)
    return mne.io.read_raw_fif(path, preload=True, verbose=False)


def test_stim_events_replay_as_markers_beside_annotations(tmp_path, unique_name):
    stim = np.zeros(500)
    stim[0:3], stim[100:102], stim[300] = 7, 12, 3  # one already on at sample 0, one a single sample long
    raw = _make_stim_fif(tmp_path / "stim_raw.fif", stim)
    player = Player(tmp_path / "stim_raw.fif", name=unique_name, speed=8.0, events_from_stim="auto",
                    wait_for_consumers=5.0)  # fmt: skip
    f = xdf.read_xdf(_replay_and_record(player, tmp_path / "rec.xdf"), synchronize_clocks=False)
    sig, mrk = f.stream(unique_name), f.stream(f"{unique_name}-markers")
    samples = np.round((mrk.timestamps - sig.timestamps[0]) * 8.0 * SFREQ).astype(int)
    assert list(zip(samples.tolist(), mrk.markers, strict=True)) == [
        (0, "7"), (100, "12"), (125, "image/a"), (300, "3")
    ]  # fmt: skip
    np.testing.assert_array_equal(sig.data, raw.get_data().astype(np.float32))


def test_a_silent_stim_channel_warns_and_gives_no_markers(tmp_path, unique_name, caplog):
    _make_stim_fif(tmp_path / "silent_raw.fif", np.zeros(300))
    with caplog.at_level(logging.WARNING):
        src = open_recording(tmp_path / "silent_raw.fif", name=unique_name, events_from_stim="STI 014")
    assert [m for m in src.marker_values] == ["image/a"]  # the annotation only
    assert any("STI 014" in r.getMessage() and "never changes" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match=r"no channel 'UPPT001'.*stim channels are \['STI 014'\]"):
        open_recording(tmp_path / "silent_raw.fif", events_from_stim="UPPT001")
    with pytest.raises(ValueError, match="no stim channel"):
        _make_fif(tmp_path / "nostim_raw.fif")
        open_recording(tmp_path / "nostim_raw.fif", events_from_stim="auto")
    _write_multistream(tmp_path / "multi.xdf", unique_name)
    with pytest.raises(ValueError, match="markers are streams of their own"):
        open_recording(tmp_path / "multi.xdf", events_from_stim="auto")


def test_without_a_consumer_the_wait_ends_naming_the_unheard_outlets(tmp_path, unique_name, caplog):
    _make_fif(tmp_path / "src_raw.fif", seconds=0.6)  # one annotation in range: a marker outlet too
    player = Player(tmp_path / "src_raw.fif", name=unique_name, speed=4.0, wait_for_consumers=0.3)
    with caplog.at_level(logging.WARNING), player:
        stats = player.run()
    assert stats.unheard == [unique_name, f"{unique_name}-markers"] and stats.waited_s >= 0.3
    assert stats.samples[unique_name] == 150  # played anyway
    assert any("no consumer for" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="wait_for_consumers"):
        Player(tmp_path / "src_raw.fif", wait_for_consumers=-1)


def test_cli_refuses_contradictory_or_negative_options(tmp_path, capsys):
    _make_fif(tmp_path / "src_raw.fif", seconds=0.4)
    assert cli_main(["replay", str(tmp_path / "src_raw.fif"), "--wait", "-1"]) == 2
    assert "--wait must be >= 0" in capsys.readouterr().err
    assert (
        cli_main(["replay", str(tmp_path / "src_raw.fif"), "--no-markers", "--events-from-stim", "auto"]) == 2
    )
    assert "choose one" in capsys.readouterr().err


def test_progress_bars_update_rarely_when_stderr_is_not_a_terminal(capsys):
    from brainstream.cli._output import LOG_PROGRESS_INTERVAL_S, progress_bar

    with progress_bar(total=1000, desc="replay") as bar:  # under capsys stderr is a pipe, as in a log
        for _ in range(1000):
            bar.update(1)
    assert bar.mininterval == LOG_PROGRESS_INTERVAL_S >= 10
    redraws = capsys.readouterr().err.count("replay")
    assert redraws <= 3  # the first draw and the last, not one per update
