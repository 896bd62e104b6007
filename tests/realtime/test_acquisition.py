"""StreamReader / MarkerReader against real liblsl outlets on loopback.

Each test uses its own stream name (``unique_name``) and stops its readers (closing the inlets) before it
drops its outlets.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

import numpy as np
import pylsl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainstream.models.device_profile import load_device_profile
from brainstream.realtime.acquisition import (
    AmbiguousStreamError,
    MarkerEvent,
    MarkerReader,
    StreamMismatchError,
    StreamNotFoundError,
    StreamReader,
)
from brainstream.realtime.acquisition.stats import counter_gaps, timestamp_gaps
from brainstream.realtime.lsl_info import make_stream_info


def _outlet(name, ch_names, sfreq, source_id="", stype="EEG", ch_types=None, fmt="float32", chunk=10):
    info = make_stream_info(
        name, stype, ch_names, sfreq, ch_types=ch_types, source_id=source_id, channel_format=fmt
    )
    return pylsl.StreamOutlet(info, chunk_size=chunk)


def _push_paced(outlet, chunks, period_s):
    """Push ``chunks`` ((n, ch) arrays) at real-time pace, deadline-scheduled so sleeps do not drift."""
    t_next = time.perf_counter()
    for x in chunks:
        outlet.push_chunk(x)
        t_next += period_s
        time.sleep(max(0.0, t_next - time.perf_counter()))


def _wait_until(cond, timeout=5.0, step=0.01) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _counter_chunks(start, n_chunks, chunk, n_signal, rng):
    out = []
    for k in range(n_chunks):
        x = rng.standard_normal((chunk, n_signal + 1)).astype(np.float32)
        x[:, -1] = np.arange(start + k * chunk, start + (k + 1) * chunk)
        out.append(x)
    return out


# ---------------------------------------------------------------------------------------------- pure parts
def test_gap_detectors():
    ts = np.array([1.000, 1.001, 1.002, 1.006, 1.007, 1.007])
    gaps, regress = timestamp_gaps(ts, prev_ts=0.999, period=0.001)
    assert gaps.tolist() == [3] and regress.tolist() == [5]
    gaps, _ = timestamp_gaps(ts[:3], prev_ts=0.990, period=0.001)
    assert gaps.tolist() == [0]
    pos, miss = counter_gaps(np.array([5.0, 6, 9, 10, 2]), prev=4)
    assert pos.tolist() == [2, 4] and miss.tolist() == [2, -1]
    pos, _ = counter_gaps(np.array([5.0, 6]), prev=None)
    assert pos.size == 0


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.sampled_from([1, 1, 1, 1, 2, 5, 0, -3]), min_size=1, max_size=30),
    prev=st.one_of(st.none(), st.integers(-5, 5)),
)
def test_gap_detectors_match_a_plain_reference(steps, prev):
    counter = np.cumsum(steps).astype(np.float32)
    pos, miss = counter_gaps(counter, prev)
    ref = [
        (i, int(c - b - 1) if c - b - 1 >= 0 else -1)
        for i, (b, c) in enumerate(
            zip([prev if prev is not None else counter[0] - 1, *counter[:-1]], counter, strict=True)
        )
        if c - b != 1
    ]
    assert list(zip(pos.tolist(), miss.tolist(), strict=True)) == ref
    period = 0.01
    ts = counter.astype(np.float64) * period
    prev_ts = None if prev is None else prev * period
    gaps, regress = timestamp_gaps(ts, prev_ts, period)
    pairs = list(enumerate(zip([prev_ts, *ts[:-1]], ts, strict=True)))
    assert gaps.tolist() == [i for i, (b, t) in pairs if b is not None and t - b > 0.015]
    assert regress.tolist() == [i for i, (b, t) in pairs if b is not None and t - b <= 0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one of name"):
        StreamReader()
    with pytest.raises(ValueError, match="unknown processing flag 'dejiter'"):
        StreamReader(name="x", processing_flags=("clocksync", "dejiter"))
    with pytest.raises(ValueError, match="buffer_seconds"):
        StreamReader(name="x", buffer_seconds=0)
    with pytest.raises(RuntimeError, match="not connected"):
        _ = StreamReader(name="x").ch_names


# ---------------------------------------------------------------------------------------------- the 10 s run
def test_counter_stream_every_sample_exactly_once_in_order(unique_name):
    """64 EEG channels + a counter at 1000 Hz for 10 s, pushed in 10-sample chunks."""
    profile = load_device_profile("eeg64_1000hz")
    names = list(profile.channels) + ["CNT"]
    outlet = _outlet(unique_name, names, 1000.0, source_id=unique_name, ch_types=["EEG"] * 64 + ["MISC"])
    rng = np.random.default_rng(1)
    chunks = _counter_chunks(0, 1000, 10, 64, rng)
    pushed = np.concatenate(chunks).T  # (65, 10000)
    reader = StreamReader(name=unique_name, profile=profile, counter_channel="CNT", buffer_seconds=12)
    try:
        reader.start()
        assert outlet.wait_for_consumers(5.0)
        _push_paced(outlet, chunks, 0.010)
        assert _wait_until(lambda: reader.buffer.n_written >= pushed.shape[1], timeout=5.0)
        time.sleep(0.1)  # nothing extra may arrive
        stats = reader.stats
        status = reader.status()
        data, ts = reader.buffer.read_last(pushed.shape[1])
    finally:
        reader.stop()
        del outlet

    assert reader.buffer.n_written == pushed.shape[1] == stats.samples == 10_000
    np.testing.assert_array_equal(data[reader.counter_index], np.arange(10_000))  # once each, in order
    np.testing.assert_array_equal(data, pushed)  # the buffer holds exactly what was pushed
    assert np.all(np.diff(ts) > 0)
    assert (stats.gaps, stats.counter_gaps, stats.missing_samples, stats.nan_samples) == (0, 0, 0, 0)
    assert stats.timestamp_regressions == 0 and stats.lost is False and stats.reconnects == 0
    assert 700 < stats.effective_rate < 1400
    assert reader.ch_names == names and reader.sfreq == 1000.0
    assert reader.data_picks.tolist() == list(range(64))
    info = reader.info
    assert info["ch_names"] == names and info["sfreq"] == 1000.0
    assert info.get_channel_types() == ["eeg"] * 64 + ["misc"]
    assert reader.gaps == []
    assert status["state"] == "running" and status["stats"]["samples"] == 10_000


# ---------------------------------------------------------------------------------------------- failures
def test_outlet_destroyed_and_recreated_alarm_reconnect_gap(unique_name):
    names = [f"C{i}" for i in range(4)] + ["CNT"]
    rng = np.random.default_rng(2)
    events = []
    outlet = _outlet(unique_name, names, 500.0, source_id=unique_name)
    reader = StreamReader(source_id=unique_name, counter_channel="CNT", buffer_seconds=10)
    reader.add_alarm_callback(events.append)
    try:
        reader.start()
        assert outlet.wait_for_consumers(5.0)
        _push_paced(outlet, _counter_chunks(0, 25, 10, 4, rng), 0.02)  # counter 0..249
        assert _wait_until(lambda: reader.stats.samples == 250)
        del outlet
        gc.collect()
        assert _wait_until(lambda: reader.stats.lost and reader.stats.stalled, timeout=3.0)
        assert any("lost" in a for a in reader.alarms) and any("stalled" in a for a in reader.alarms)
        status = reader.status()
        assert status["state"] == "lost" and status["stats"]["lost"] == 1 and status["alarms"]

        # the device comes back under the same source_id; its counter kept running (300 samples missed)
        outlet = _outlet(unique_name, names, 500.0, source_id=unique_name)
        assert _wait_until(lambda: reader.stats.reconnects == 1, timeout=5.0)
        assert outlet.wait_for_consumers(5.0)
        _push_paced(outlet, _counter_chunks(550, 25, 10, 4, rng), 0.02)
        assert _wait_until(lambda: reader.stats.samples == 500)
        stats, gaps = reader.stats, reader.gaps
        data, _ = reader.buffer.read_last(500)
    finally:
        reader.stop()
        del outlet

    assert not stats.lost and not stats.stalled and stats.reconnects == 1
    assert len(gaps) == 1 and stats.gaps == 1
    gap = gaps[0]
    assert (gap.kind, gap.index, gap.n_missing) == ("reconnect", 250, 300)
    assert gap.t_after > gap.t_before
    counter = data[reader.counter_index]
    np.testing.assert_array_equal(counter, np.r_[np.arange(250), np.arange(550, 800)])  # not spliced silently
    kinds = [(e.kind, e.active) for e in events]
    for expected in [
        ("lost", True),
        ("stalled", True),
        ("lost", False),
        ("reconnected", True),
        ("gap", True),
    ]:
        assert expected in kinds
    assert kinds.index(("lost", True)) < kinds.index(("reconnected", True)) < kinds.index(("gap", True))


def test_stall_alarm_fires_fast_and_clears(unique_name):
    """A silent (still alive) outlet raises ``stalled`` well before LSL's own 15 s watchdog."""
    outlet = _outlet(unique_name, ["a", "b"], 1000.0)
    raised = []
    reader = StreamReader(name=unique_name)
    reader.add_alarm_callback(
        lambda a: raised.append((a, time.perf_counter())) if a.kind == "stalled" else None
    )
    try:
        reader.start()
        assert outlet.wait_for_consumers(5.0)
        _push_paced(outlet, [np.ones((10, 2), np.float32)] * 50, 0.01)
        t_last_push = time.perf_counter()
        assert reader.stall_timeout <= 0.5  # threshold meets max(0.5 s, 5 chunk periods) for 10 ms chunks
        assert _wait_until(lambda: reader.stats.stalled, timeout=3.0)
        alarm, t_alarm = [r for r in raised if r[0].active][-1]
        # generous bound: the machine running the tests is shared; `bench acquisition` times it properly
        assert t_alarm - t_last_push < 1.0
        assert "stalled" in alarm.message and reader.alarms
        outlet.push_chunk(np.ones((10, 2), np.float32))
        assert _wait_until(lambda: not reader.stats.stalled)
        assert raised[-1][0].active is False and not any("stalled" in a for a in reader.alarms)
        assert reader.stats.stalls >= 1
    finally:
        reader.stop()
        del outlet


def test_slow_chunked_device_is_not_a_stall(unique_name):
    """A device sending 0.5 s blocks: the threshold learns 5 chunk periods (2.5 s) instead of crying wolf."""
    outlet = _outlet(unique_name, ["a"], 100.0, chunk=50)
    raised = []
    reader = StreamReader(name=unique_name)
    reader.add_alarm_callback(lambda a: raised.append(time.perf_counter()) if a.kind == "stalled" else None)
    try:
        reader.start()
        assert outlet.wait_for_consumers(5.0)
        outlet.push_chunk(np.zeros((50, 1), np.float32))
        assert _wait_until(lambda: reader.stats.samples == 50)
        t_first = time.perf_counter()
        _push_paced(outlet, [np.zeros((50, 1), np.float32)] * 5, 0.5)
        assert _wait_until(lambda: reader.stats.samples == 300)
        assert [t for t in raised if t > t_first] == []
        assert 1.5 < reader.stall_timeout <= 2.5
    finally:
        reader.stop()
        del outlet


def test_nan_and_inf_samples_are_counted_not_fatal(unique_name):
    outlet = _outlet(unique_name, ["a", "b", "c"], 100.0)
    reader = StreamReader(name=unique_name)
    try:
        reader.start()
        assert outlet.wait_for_consumers(5.0)
        x = np.zeros((10, 3), np.float32)
        x[2, 0] = np.nan
        x[5, 1] = np.inf
        x[5, 2] = -np.inf
        outlet.push_chunk(x)
        outlet.push_chunk(np.ones((10, 3), np.float32))
        assert _wait_until(lambda: reader.stats.samples == 20)
        assert reader.stats.nan_samples == 2
        assert any("NaN/Inf" in a for a in reader.alarms)
        data, _ = reader.buffer.read_last(20)
        assert np.isnan(data[0, 2]) and np.isposinf(data[1, 5]) and data[0, 19] == 1.0
        assert reader.running  # kept going
    finally:
        reader.stop()
        del outlet


def test_timestamp_gap_without_counter(unique_name):
    """Raw timestamps (no post-processing) skipping 5 samples give one gap of 5 at the right index."""
    outlet = _outlet(unique_name, ["a"], 100.0)
    reader = StreamReader(name=unique_name, processing_flags=())
    try:
        reader.start()
        assert outlet.wait_for_consumers(5.0)
        t0 = pylsl.local_clock()
        ts = t0 + np.r_[np.arange(10), np.arange(15, 25)] * 0.01
        for i, t in enumerate(ts):
            outlet.push_sample([float(i)], t)
        assert _wait_until(lambda: reader.stats.samples == 20)
        gaps = reader.gaps
    finally:
        reader.stop()
        del outlet
    assert len(gaps) == 1
    assert (gaps[0].kind, gaps[0].index, gaps[0].n_missing) == ("timestamp", 10, 5)
    assert gaps[0].t_after - gaps[0].t_before == pytest.approx(0.06)


def _push_deduced_then_stamped(outlet, n_deduced: int, n_stamped: int, sfreq: float) -> None:
    """What an inlet that connects in the middle of a pushed chunk receives: samples whose timestamp is
    deduced (liblsl's DEDUCED_TIMESTAMP, -1.0, which it stamps from 0 in the inlet: sccn/liblsl#161),
    then a stamped chunk. Values count up across both."""
    for i in range(n_deduced):
        outlet.push_sample([float(i)], -1.0)
    time.sleep(0.2)  # the reader pulls the deduced samples on their own first
    x = np.arange(n_deduced, n_deduced + n_stamped, dtype=np.float32)[:, None]
    outlet.push_chunk(x, pylsl.local_clock())  # the chunk's last sample carries the stamp


@pytest.mark.parametrize("flags", [("clocksync", "dejitter"), ()])
def test_samples_liblsl_stamps_from_zero_at_connect_are_restamped_not_a_gap(unique_name, flags):
    sfreq = 100.0
    outlet = _outlet(unique_name, ["a"], sfreq)
    reader = StreamReader(name=unique_name, processing_flags=flags)
    try:
        reader.start()
        assert outlet.wait_for_consumers(5.0)
        time.sleep(0.3)
        _push_deduced_then_stamped(outlet, 5, 10, sfreq)
        assert _wait_until(lambda: reader.stats.samples == 15)
        stats, gaps = reader.stats, reader.gaps
        values, ts = reader.buffer.read_last(15)
    finally:
        reader.stop()
        del outlet
    assert gaps == [] and stats.missing_samples == 0 and stats.restamped_samples == 5
    np.testing.assert_array_equal(values[0], np.arange(15))
    np.testing.assert_allclose(np.diff(ts), 1.0 / sfreq, atol=1e-6)
    assert abs(ts[-1] - pylsl.local_clock()) < 5.0  # in the LSL clock, not near 0


def test_deduced_start_stamps_pass_real_streams_through_and_give_up_after_the_hold_limit():
    from brainstream.realtime.acquisition.deduced_stamps import HOLD_LIMIT_S, DeducedStartStamps

    fix = DeducedStartStamps("s")
    real = 5000.0 + np.arange(10) / 100.0
    values = np.arange(10.0)[:, None]
    out_v, out_t = fix.settle(values, real, 100.0, "uid-1", lambda: 0.0)
    assert out_t is real and out_v is values and fix.restamped == 0  # untouched: no copy
    # within one chunk: 3 deduced, then stamped
    ts = np.r_[np.arange(1, 4) / 100.0, 7000.0 + np.arange(7) / 100.0]
    out_v, out_t = fix.settle(values, ts, 100.0, "uid-2", lambda: 0.0)
    np.testing.assert_allclose(out_t, 7000.0 + np.arange(-3, 7) / 100.0)
    assert fix.restamped == 3
    # the same connection again: passed through as it comes
    assert fix.settle(values, ts, 100.0, "uid-2", lambda: 0.0)[1] is ts
    # an offset added by clocksync moves the deduced stamps by as much
    ts = np.r_[-300.0 + np.arange(1, 4) / 100.0, 7000.0 + np.arange(7) / 100.0]
    assert fix.settle(values, ts, 100.0, "uid-3", lambda: -300.0)[1][0] == pytest.approx(6999.97)
    # no stamped sample comes: held up to the limit, then given on as it is
    small = np.arange(1, 51) / 100.0
    held = [fix.settle(np.zeros((50, 1)), small, 100.0, "uid-4", lambda: 0.0) for _ in range(4)]
    assert held[:3] == [None, None, None] and fix.holding == 0
    assert len(held[3][1]) == 200 == HOLD_LIMIT_S * 100.0


# ------------------------------------------------------------------------------------------- connect checks
def test_profile_mismatch_names_the_missing_channels(unique_name, caplog):
    """A stream may carry more than the profile and lack a few of its channels (the decoder masks or
    interpolates them); lacking more is refused, naming them. Another rate is logged (the decoder
    resamples)."""
    profile = load_device_profile("eeg64_1000hz")
    few = _outlet(unique_name + "-few", [f"C{i}" for i in range(10)], 1000.0)
    slow = _outlet(unique_name + "-slow", list(profile.channels), 500.0)
    renamed = _outlet(unique_name + "-renamed", ["Xx"] + list(profile.channels[1:]) + ["STI"], 1000.0)
    unlabelled = _outlet(unique_name + "-unlabelled", [str(i) for i in range(10)], 1000.0)
    try:
        with pytest.raises(
            StreamMismatchError, match=r"lacks 58 of the 64 channels of .*'eeg64-1000hz'.*Fp1"
        ):
            StreamReader(name=unique_name + "-few", profile=profile).connect()
        with caplog.at_level(logging.WARNING):
            reader = StreamReader(name=unique_name + "-slow", profile=profile).connect()
        assert reader.sfreq == 500.0
        reader.stop()
        assert any("500 Hz" in r.getMessage() and "resamples" in r.getMessage() for r in caplog.records)
        reader = StreamReader(name=unique_name + "-renamed", profile=profile).connect()
        assert reader.ch_names[0] == "Xx" and reader.ch_names[-1] == "STI"
        reader.stop()
        with pytest.raises(StreamMismatchError, match=r"lacks 1 of the 64 channels.*: Fp1\."):
            StreamReader(name=unique_name + "-renamed", profile=profile, max_missing=0.0).connect()
        with pytest.raises(StreamMismatchError, match=r"10 unlabelled channels.*expects 64"):
            StreamReader(name=unique_name + "-unlabelled", profile=profile).connect()
        with pytest.raises(StreamMismatchError, match="counter channel 'CNT'"):
            StreamReader(name=unique_name + "-few", counter_channel="CNT").connect()
    finally:
        del few, slow, renamed, unlabelled


def test_resolution_errors_list_what_was_found(unique_name):
    other = _outlet(unique_name + "-other", ["a"], 10.0, source_id="other-src")
    twin_a = _outlet(unique_name + "-twin", ["a"], 10.0, source_id="twin-a")
    twin_b = _outlet(unique_name + "-twin", ["a"], 10.0, source_id="twin-b")
    markers = _outlet(unique_name + "-mk", ["m"], 0.0, stype="Markers", fmt="string")
    try:
        with pytest.raises(StreamNotFoundError) as err:
            StreamReader(name=unique_name + "-absent", timeout=0.5).connect()
        assert f"'{unique_name}-other'" in str(err.value) and "other-src" in str(err.value)
        with pytest.raises(AmbiguousStreamError) as err:
            StreamReader(name=unique_name + "-twin", timeout=2.0).connect()
        assert "twin-a" in str(err.value) and "twin-b" in str(err.value) and "source_id" in str(err.value)
        reader = StreamReader(name=unique_name + "-twin", source_id="twin-b").connect()
        assert reader.source_id == "twin-b"
        reader.stop()
        with pytest.raises(ValueError, match="MarkerReader"):
            StreamReader(name=unique_name + "-mk").connect()
    finally:
        del other, twin_a, twin_b, markers


# ---------------------------------------------------------------------------------------------- markers
def test_marker_reader_delivers_in_order_to_every_subscriber(unique_name):
    outlet = _outlet(unique_name, ["marker"], 0.0, stype="Markers", fmt="string", chunk=1)
    reader = MarkerReader(name=unique_name)
    try:
        reader.start()
        q1, q2 = reader.subscribe(), reader.subscribe()
        assert outlet.wait_for_consumers(5.0)
        values = [f"train/img{i:03d}" for i in range(50)]
        t0 = pylsl.local_clock()
        got: list[MarkerEvent] = []
        consumer = threading.Thread(target=lambda: got.extend(q2.get(timeout=5.0) for _ in values))
        consumer.start()
        for i, v in enumerate(values):
            outlet.push_sample([v], t0 + i * 0.001)
        consumer.join(timeout=10)
        first = [q1.get(timeout=5.0) for _ in values]
        assert q1.get(timeout=0.05) is None  # nothing more
        late = reader.subscribe(replay=True)
        assert [e.value for e in late.drain()] == values
        assert reader.stats.markers == 50
        window = reader.events_between(t0 + 0.0095, t0 + 0.0205)
    finally:
        reader.stop()
        del outlet
    for events in (first, got):
        assert [e.value for e in events] == values
        stamps = [ts for ts, _ in events]
        np.testing.assert_allclose(stamps, t0 + np.arange(50) * 0.001, atol=1e-3)
        assert stamps == sorted(stamps)
    assert [e.value for e in window] == values[10:21]


def test_numeric_marker_stream(unique_name):
    outlet = _outlet(unique_name, ["code"], 0.0, stype="Markers", fmt="int32", chunk=1)
    reader = MarkerReader(source_id=None, name=unique_name)
    try:
        reader.start()
        q = reader.subscribe()
        assert outlet.wait_for_consumers(5.0)
        for code in (3, 1, 2):
            outlet.push_sample([code])
        vals = [q.get(timeout=5.0).value for _ in range(3)]
    finally:
        reader.stop()
        del outlet
    assert vals == [3, 1, 2]


def test_returning_outlet_with_other_layout_is_refused_then_right_one_accepted(unique_name):
    names = ["a", "b", "CNT"]
    rng = np.random.default_rng(3)
    outlet = _outlet(unique_name, names, 200.0, source_id=unique_name)
    reader = StreamReader(source_id=unique_name, counter_channel="CNT")
    wrong = None
    try:
        reader.start()
        assert outlet.wait_for_consumers(5.0)
        _push_paced(outlet, _counter_chunks(0, 5, 10, 2, rng), 0.05)
        assert _wait_until(lambda: reader.stats.samples == 50)
        del outlet
        gc.collect()
        assert _wait_until(lambda: reader.stats.lost, timeout=3.0)
        wrong = _outlet(unique_name, ["a", "b", "c", "CNT"], 200.0, source_id=unique_name)
        assert _wait_until(lambda: any("different channel count" in a for a in reader.alarms), timeout=5.0)
        assert reader.stats.reconnects == 0 and reader.stats.lost
        outlet = _outlet(unique_name, names, 200.0, source_id=unique_name)
        assert _wait_until(lambda: reader.stats.reconnects == 1, timeout=5.0)
        # the mismatch alarm clears once the right outlet is in use (checked by the reader's own thread)
        mismatch = lambda: any("different channel count" in a for a in reader.alarms)  # noqa: E731
        assert _wait_until(lambda: not mismatch(), timeout=5.0)
    finally:
        reader.stop()
        del outlet, wrong


def test_silent_outlet_replaced_by_new_one_with_same_source_id(unique_name):
    """The old outlet stays alive but silent (its host's connection has not broken): the watchdog finds the
    new outlet with the same source_id and the reader switches to it, recording the gap."""
    names = ["a", "CNT"]
    rng = np.random.default_rng(4)
    old = _outlet(unique_name, names, 200.0, source_id=unique_name)
    reader = StreamReader(source_id=unique_name, counter_channel="CNT")
    new = None
    try:
        reader.start()
        assert old.wait_for_consumers(5.0)
        _push_paced(old, _counter_chunks(0, 5, 10, 1, rng), 0.05)
        assert _wait_until(lambda: reader.stats.samples == 50)
        new = _outlet(unique_name, names, 200.0, source_id=unique_name)
        assert _wait_until(lambda: reader.stats.reconnects == 1, timeout=8.0)
        assert new.wait_for_consumers(5.0)
        _push_paced(new, _counter_chunks(150, 5, 10, 1, rng), 0.05)
        assert _wait_until(lambda: reader.stats.samples == 100)
        gaps = reader.gaps
    finally:
        reader.stop()
        del old, new
    assert [(g.kind, g.index, g.n_missing) for g in gaps] == [("reconnect", 50, 100)]
