"""The RSVP presenter in a real (offscreen) Qt window with a real LSL marker outlet read by a real inlet."""

from __future__ import annotations

import numpy as np
import pylsl
import pytest

from brainstream.calibration.presenter import Presenter, VirtualClock
from brainstream.calibration.protocol import DisplayConfig, ProtocolConfig, build_schedule
from brainstream.models.events import parse_stimulus_marker

SPEED = 10.0


@pytest.fixture(scope="module")
def gallery():
    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.gallery import Gallery

    return Gallery.load(default_gallery_dir())


def config(**kw) -> ProtocolConfig:
    base = dict(
        n_train_images=8, n_test_images=2, test_repeats=2, n_catch=2, image_s=0.5, isi_s=0.5,
        isi_jitter_s=0.1, fixation_s=0.3, block_trials=6, break_s=0.5, seed=1,
        display=DisplayConfig(image_px=64, photodiode_px=16, width=240, height=180),
    )  # fmt: skip
    return ProtocolConfig(**{**base, **kw})


def _inlet(name: str) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("name", name, timeout=5.0)
    assert found, f"marker outlet {name} not visible"
    inlet = pylsl.StreamInlet(found[0], recover=False)
    inlet.open_stream(timeout=5.0)
    return inlet


def _drain(inlet: pylsl.StreamInlet) -> tuple[list[str], np.ndarray]:
    values, stamps = [], []
    while True:
        chunk, ts = inlet.pull_chunk(timeout=0.5)
        if not ts:
            break
        values += [c[0] for c in chunk]
        stamps += list(ts)
    return values, np.asarray(stamps)


def test_presenter_runs_the_schedule_and_stamps_every_onset(qapp, gallery, unique_name):
    cfg = config()
    sched = build_schedule(cfg, list(gallery.ids))
    pres = Presenter(cfg, sched, gallery, marker_name=unique_name, speed=SPEED, progress=False)
    frames: list[tuple[str, float, tuple[int, int, int]]] = []
    responded = set()

    def on_frame(state: str, stamp: float) -> None:
        frames.append((state, stamp, pres.window.photodiode_color()))
        trial = pres.current_trial
        # a person answering the attention task: a key press while the catch image's blank is up
        if state == "blank" and trial is not None and trial.split == "catch" and trial.index not in responded:
            responded.add(trial.index)
            from PySide6.QtCore import Qt
            from PySide6.QtTest import QTest

            QTest.keyClick(pres.window, Qt.Key.Key_Space)

    pres.on_frame = on_frame
    pres.open()
    inlet = _inlet(unique_name)
    try:
        result = pres.run()
        values, stamps = _drain(inlet)
    finally:
        inlet.close_stream()
        pres.close()
    assert not result.aborted and result.next_index == len(sched)
    stim = [(v, t) for v, t in zip(values, stamps, strict=True) if parse_stimulus_marker(v)]
    assert [v for v, _ in stim] == sched.markers()  # every onset, in order, with the image id
    assert [k for k, _ in result.shown] == list(range(len(sched)))
    assert np.allclose([t for _, t in stim], [t for _, t in result.shown])
    assert values[0] == "run_start" and values[-1] == "run_end"
    assert values.count("break_start") == values.count("break_end") == sched.n_blocks - 1
    # onsets follow the protocol's timing on the (virtual) clock: image + blank, later never earlier
    gaps = np.diff([t for _, t in stim])
    within = [sched.trials[k].block == sched.trials[k + 1].block for k in range(len(sched) - 1)]
    planned = np.array([cfg.image_s + t.isi_s for t in sched.trials[:-1]])
    assert np.all(gaps[within] >= planned[within] - 1e-3)
    assert np.median(gaps[within] - planned[within]) < 0.05 * SPEED  # < 50 ms real per trial
    # the photodiode patch is white exactly while an image is up
    for state, _, color in frames:
        if state in ("image", "blank", "fixation"):
            assert color == ((255, 255, 255) if state == "image" else (0, 0, 0)), state
    assert result.catch_total == 2 and result.catch_hits == 2 and result.false_alarms == 0
    assert values.count("response") == 2


def test_escape_stops_and_reports_where(qapp, gallery, unique_name):
    cfg = config(n_catch=0)
    sched = build_schedule(cfg, list(gallery.ids))
    pres = Presenter(cfg, sched, gallery, marker_name=unique_name, speed=SPEED, start_index=3, progress=False)

    def on_frame(state: str, stamp: float) -> None:
        if state == "image" and pres.current_trial.index == 6:
            from PySide6.QtCore import Qt
            from PySide6.QtTest import QTest

            QTest.keyClick(pres.window, Qt.Key.Key_Escape)

    pres.on_frame = on_frame
    pres.open()
    inlet = _inlet(unique_name)
    try:
        result = pres.run()
        values, _ = _drain(inlet)
    finally:
        inlet.close_stream()
        pres.close()
    assert result.aborted and "Escape" in result.abort_reason
    assert result.next_index == 7  # trial 6 was shown; 7 is the first missing one
    assert [v for v in values if "/" in v] == sched.markers()[3:7]
    assert values[-1] == "aborted"


def test_max_trials_and_clock(qapp, gallery, unique_name):
    cfg = config(n_catch=0)
    sched = build_schedule(cfg, list(gallery.ids))
    clock = VirtualClock(SPEED)
    assert clock.real_seconds(2.0) == pytest.approx(0.2)
    t0, v0 = pylsl.local_clock(), clock.now()
    pres = Presenter(cfg, sched, gallery, marker_name=unique_name, clock=clock, max_trials=4, progress=False)
    pres.open()
    try:
        result = pres.run()
    finally:
        pres.close()
    real, virtual = pylsl.local_clock() - t0, clock.now() - v0
    assert virtual == pytest.approx(real * SPEED, rel=1e-3)
    assert result.aborted and result.next_index == 4 and len(result.shown) == 4
    assert "0:" in pres.status_text() or "left" in pres.status_text()
    with pytest.raises(ValueError, match="speed"):
        VirtualClock(0)
