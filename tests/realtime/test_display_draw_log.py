"""The display's whole-run records: newest rows kept in a preallocated ring, strings as table indices."""

from __future__ import annotations

import numpy as np
import pytest

from brainstream.realtime.display.draw_log import DrawLog, ValueLog, _Names


def test_draw_log_keeps_the_newest_rows_and_gives_them_back_as_drawn():
    log = DrawLog(3)
    for k in range(5):
        topic = "image" if k % 2 else "retrieval"
        log.add(topic, "decoder:ab", k, 10.0 + k, 10.05 + k, f"img{k}", 10.02 + k, 10.03 + k)
    log.add("image", None, None, 20.0, 20.01, None, 20.0, 20.0)
    rows = log.records()
    assert len(log) == 3 and [r["seq"] for r in rows] == [3, 4, None]
    assert rows[1] == {
        "topic": "retrieval",
        "src": "decoder:ab",
        "seq": 4,
        "t_sample": 14.0,
        "t_drawn": 14.05,
        "image_id": "img4",
        "t_received": 14.02,
        "t_draw_start": 14.03,
        "sample_to_display_ms": pytest.approx(50.0),
    }
    assert rows[2]["src"] is None and rows[2]["image_id"] is None
    assert log.latencies_ms("image") == pytest.approx([50.0, 10.0])
    assert log.latencies_ms("never-drawn").size == 0
    t, ms = log.since(14.0, ("image", "retrieval"))["retrieval"]
    assert t == pytest.approx([14.05]) and ms == pytest.approx([50.0])


def test_a_flood_of_new_names_stops_growing_the_table():
    names = _Names(limit=2)
    assert [names.code(n) for n in ("a", "b", "a", "c", None)] == [0, 1, 0, -1, -1]
    assert names.name(1) == "b" and names.name(-1) is None and names.find("c") == -2


def test_value_log_keeps_the_newest_values():
    log = ValueLog(4)
    for k in range(6):
        log.add(float(k), t=float(k))
    assert np.array_equal(log.values(), [2.0, 3.0, 4.0, 5.0])
