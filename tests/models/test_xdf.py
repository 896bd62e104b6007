"""Our XDF writer and tolerant reader: byte layout, pyxdf agreement, truncation, corruption, segments."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import pyxdf

from brainstream.models import xdf
from brainstream.realtime.recording.xdf_writer import StreamHeader, XdfWriter


def _write_recording(path, *, n_chunks=6, n_per_chunk=25, flush_every=2, segment_seconds=None):
    """Three streams (float32 signal, int16 counter, string markers) written chunk by chunk with flushes."""
    rng = np.random.default_rng(0)
    sig_h = StreamHeader.local("sig", "EEG", ["Fz", "Cz", "Pz"], 250.0, units=["V"] * 3)
    cnt_h = StreamHeader.local("cnt", "MISC", ["counter"], 250.0, channel_format="int16")
    mrk_h = StreamHeader.local("mrk", "Markers", ["marker"], 0.0, channel_format="string")
    w = XdfWriter(path, flush_interval=1.0, segment_seconds=segment_seconds).open()
    sid = w.add_stream(sig_h)
    cid = w.add_stream(cnt_h)
    mid = w.add_stream(mrk_h)
    sig, cnt, ts_all, marks = [], [], [], []
    t0 = 1000.0
    for c in range(n_chunks):
        ts = t0 + (c * n_per_chunk + np.arange(n_per_chunk)) / 250.0
        v = rng.standard_normal((3, n_per_chunk)).astype(np.float32)
        k = (c * n_per_chunk + np.arange(n_per_chunk)).astype(np.int16)[None, :]
        w.write_samples(sid, v, ts)
        w.write_samples(cid, k, ts)
        w.write_samples(mid, [f"train/img{c}", "ünïcode é"], ts[:2])
        w.write_clock_offset(sid, ts[0], 0.0)
        sig.append(v)
        cnt.append(k)
        ts_all.append(ts)
        marks += [f"train/img{c}", "ünïcode é"]
        if c % flush_every == flush_every - 1:
            w.flush()
    w.close()
    return w, np.concatenate(sig, 1), np.concatenate(cnt, 1), np.concatenate(ts_all), marks


def test_round_trip_matches_source_and_pyxdf(tmp_path):
    path = tmp_path / "rec.xdf"
    w, sig, cnt, ts, marks = _write_recording(path)
    assert path.read_bytes()[:4] == b"XDF:"
    f = xdf.read_xdf(path)
    assert not f.truncated and f.n_corrupt == 0 and f.problems == []
    assert f.n_boundaries >= 3
    s = f.stream("sig")
    assert s.ch_names == ["Fz", "Cz", "Pz"] and s.ch_units == ["V"] * 3 and s.nominal_srate == 250.0
    np.testing.assert_array_equal(s.data, sig)
    np.testing.assert_array_equal(s.timestamps, ts)
    c = f.stream("cnt")
    assert c.data.dtype == np.int16
    np.testing.assert_array_equal(c.data, cnt)
    assert f.stream("mrk").markers == marks
    assert s.footer["sample_count"] == str(sig.shape[1])

    streams, _ = pyxdf.load_xdf(path, dejitter_timestamps=False)
    by_name = {st["info"]["name"][0]: st for st in streams}
    np.testing.assert_array_equal(by_name["sig"]["time_series"].T, sig)
    np.testing.assert_array_equal(by_name["cnt"]["time_series"].T, cnt)
    np.testing.assert_allclose(by_name["sig"]["time_stamps"], ts)
    assert [m[0] for m in by_name["mrk"]["time_series"]] == marks
    labels = [ch["label"][0] for ch in by_name["sig"]["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == ["Fz", "Cz", "Pz"]


def _boundary_ends(raw: bytes) -> list[int]:
    out, pos = [], 0
    while (i := raw.find(xdf.BOUNDARY_UUID, pos)) >= 0:
        out.append(i + len(xdf.BOUNDARY_UUID))
        pos = i + 1
    return out


def test_truncated_anywhere_loads_everything_before_the_cut(tmp_path):
    path = tmp_path / "rec.xdf"
    _, sig, cnt, ts, _ = _write_recording(path, n_chunks=4, n_per_chunk=10, flush_every=1)
    raw = path.read_bytes()
    full = xdf.read_xdf(path)
    # samples of "sig" that the file holds when cut right after each Boundary
    at_boundary = {b: {st.name: st.n_samples for st in xdf.parse_xdf(raw[:b]).streams}.get("sig", 0)
                   for b in _boundary_ends(raw)}  # fmt: skip
    # cut points over the second half of the file: every byte of the last 700 (footers, boundary, the
    # last Samples chunks) and every 5th before (all chunk kinds, all positions inside them)
    cuts = sorted(set(range(len(raw) // 2, len(raw) - 700, 5)) | set(range(len(raw) - 700, len(raw))))
    for cut in cuts:
        f = xdf.parse_xdf(raw[:cut])
        s = f.stream("sig")
        n = s.n_samples
        # a prefix of the samples, never a wrong value
        np.testing.assert_array_equal(s.data, sig[:, :n])
        np.testing.assert_array_equal(s.timestamps, full.stream("sig").timestamps[:n])
        np.testing.assert_array_equal(f.stream("cnt").data, cnt[:, : f.stream("cnt").n_samples])
        assert f.n_corrupt == 0
        # everything written before the last complete Boundary is there
        assert n >= max([k for b, k in at_boundary.items() if b <= cut], default=0)


def test_pyxdf_loads_a_file_cut_after_any_flush(tmp_path):
    path = tmp_path / "rec.xdf"
    _, sig, _, _, _ = _write_recording(path, n_chunks=4, n_per_chunk=10, flush_every=1)
    raw = path.read_bytes()
    cut_path = tmp_path / "cut.xdf"
    for i, end in enumerate(_boundary_ends(raw)[1:], start=1):
        cut_path.write_bytes(raw[:end] + raw[end : end + 37])  # plus a torn piece of the next chunk
        streams, _ = pyxdf.load_xdf(cut_path, dejitter_timestamps=False, verbose=False)
        got = {st["info"]["name"][0]: st for st in streams}["sig"]["time_series"].T
        assert got.shape[1] == 10 * min(i, 4)  # the last boundary follows the footers
        np.testing.assert_array_equal(got, sig[:, : got.shape[1]])


def test_corrupt_chunk_resyncs_on_next_boundary(tmp_path, caplog):
    path = tmp_path / "rec.xdf"
    _, sig, _, _, _ = _write_recording(path, n_chunks=6, n_per_chunk=10, flush_every=1)
    raw = bytearray(path.read_bytes())
    b = _boundary_ends(bytes(raw))
    # smash the length prefix of the first chunk after the 3rd boundary into an invalid width
    raw[b[2]] = 0x07
    bad = tmp_path / "bad.xdf"
    bad.write_bytes(bytes(raw))
    f = xdf.read_xdf(bad)
    assert f.n_corrupt == 1 and "corrupt chunk" in f.problems[0]
    s = f.stream("sig")
    # one flush (10 samples of sig) lost between boundary 3 and 4, the rest is back, in order
    assert s.n_samples == sig.shape[1] - 10
    np.testing.assert_array_equal(s.data[:, :20], sig[:, :20])
    np.testing.assert_array_equal(s.data[:, 20:], sig[:, 30:])


def test_deduced_timestamps_and_other_widths_are_read(tmp_path):
    # hand-built chunk as other writers make it: 1-byte counts, second sample without a timestamp
    info = StreamHeader.local("x", "EEG", ["a", "b"], 100.0, channel_format="double64").xml.encode()
    body = b"\x01\x02" + b"\x08" + struct.pack("<d", 5.0) + struct.pack("<2d", 1, 2)
    body += b"\x00" + struct.pack("<2d", 3, 4)
    raw = xdf.MAGIC + xdf.chunk(xdf.TAG_FILE_HEADER, xdf.simple_xml("info", {"version": "1.0"}))
    raw += xdf.chunk(xdf.TAG_STREAM_HEADER, info, 7) + xdf.chunk(xdf.TAG_SAMPLES, body, 7)
    p = tmp_path / "h.xdf"
    p.write_bytes(raw)
    s = xdf.read_xdf(p).stream("x")
    np.testing.assert_array_equal(s.data, [[1, 3], [2, 4]])
    np.testing.assert_allclose(s.timestamps, [5.0, 5.01])


def test_not_xdf_is_refused_clearly(tmp_path):
    p = tmp_path / "a.xdf"
    p.write_bytes(b"PK\x03\x04 not xdf")
    with pytest.raises(xdf.XdfError, match="not an XDF file"):
        xdf.read_xdf(p)
    with pytest.raises(FileNotFoundError):
        xdf.read_xdf(tmp_path / "missing.xdf")
    (tmp_path / "empty.xdf").write_bytes(b"")
    with pytest.raises(xdf.XdfError, match="empty"):
        xdf.read_xdf(tmp_path / "empty.xdf")


def test_segments_are_self_contained(tmp_path):
    path = tmp_path / "long.xdf"
    w = XdfWriter(path, segment_seconds=1e-6, flush_interval=1.0).open()
    sid = w.add_stream(StreamHeader.local("s", "EEG", ["a"], 10.0))
    for i in range(3):
        w.write_samples(sid, np.full((1, 5), i, np.float32), 10.0 * i + np.arange(5) / 10)
        w.flush()  # each flush past the period rolls over
    w.close()
    assert w.paths[0].name == "long_001.xdf" and len(w.paths) >= 3
    got = [xdf.read_xdf(p).stream("s") for p in w.paths]
    values = np.concatenate([g.data for g in got], axis=1)
    np.testing.assert_array_equal(values, np.repeat(np.arange(3), 5)[None].astype(np.float32))
    for p in w.paths:
        pyxdf.load_xdf(p, verbose=False)  # each file loads on its own
