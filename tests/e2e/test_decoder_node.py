"""The decoder node end to end over real liblsl (loopback) and a real ZeroMQ socket: the embeddings it
publishes equal the offline path (preprocess_recording + cut_epochs + the same encoder) on the same data."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest

from brainstream.models.checkpoint import CheckpointMeta, save_checkpoint
from brainstream.models.encoders import build_encoder
from brainstream.models.preprocessing import PreprocessingConfig, preprocess_recording
from brainstream.models.runtime import create_runtime
from brainstream.models.windowing import WindowSpec, cut_epochs, sliding_windows
from brainstream.realtime.acquisition import MarkerReader, StreamReader
from brainstream.realtime.bus import Publisher, Subscriber
from brainstream.realtime.decoder.node import DecoderNode
from brainstream.realtime.lsl_info import make_stream_info

SFREQ = 600.0
CH = [f"EEG{i:02d}" for i in range(8)]


@pytest.fixture
def checkpoint(tmp_path):
    import torch

    torch.manual_seed(0)
    pre = PreprocessingConfig(
        l_freq=1.0, h_freq=40.0, sfreq_out=120.0, robust_scale=False, clamp=None, baseline=(None, 0.0)
    )
    arch = {
        "name": "brain_module",
        "n_channels": 8,
        "n_times": 60,
        "dim": 16,
        "spatial_channels": 8,
        "fourier_freqs": 4,
        "hidden": 16,
        "depth": 1,
        "out_channels": 16,
        "positions": np.random.default_rng(0).uniform(size=(8, 2)).tolist(),
    }
    model = build_encoder(arch).eval()
    meta = CheckpointMeta(
        arch=arch,
        ch_names=CH,
        positions=arch["positions"],
        sfreq=120.0,
        tmin=-0.1,
        tmax=0.4,
        preprocessing=pre.model_dump(),
        space="test:random:16",
        dim=16,
    )
    return save_checkpoint(tmp_path / "ckpt", model, meta), model, meta


def _outlets(name: str) -> tuple[pylsl.StreamOutlet, pylsl.StreamOutlet]:
    """A signal outlet of ``CH`` at ``SFREQ`` and its marker outlet, named from ``name``."""
    sig_info = make_stream_info(name, "EEG", CH, SFREQ, source_id=name + "-sig")
    mrk_info = make_stream_info(
        name + "-markers", "Markers", ["marker"], 0, channel_format="string", source_id=name + "-mrk"
    )
    return pylsl.StreamOutlet(sig_info), pylsl.StreamOutlet(mrk_info)


def _offline_embeddings(model, meta, data, ts, onsets) -> tuple[np.ndarray, np.ndarray]:
    """The offline path's embeddings of the windows at ``onsets`` and their last samples' times."""
    import torch

    pre = PreprocessingConfig(**meta.preprocessing)
    x, x_ts = preprocess_recording(data, ts, CH, SFREQ, pre)
    epochs = cut_epochs(x, x_ts, onsets, WindowSpec(meta.tmin, meta.tmax, meta.sfreq), baseline=pre.baseline)
    with torch.inference_mode():
        return model(torch.from_numpy(epochs.X)).numpy(), epochs.t_last


def test_decoder_node_publishes_offline_equal_embeddings(unique_name, tmp_path, checkpoint):
    ckpt_dir, model, meta = checkpoint
    rng = np.random.default_rng(1)
    n_total = int(5.0 * SFREQ)
    data = rng.standard_normal((len(CH), n_total)).astype(np.float32)
    sig_out, mrk_out = _outlets(unique_name)

    endpoint = f"ipc://{tmp_path}/bus"
    publisher = Publisher(endpoint, name="decoder", bind=True, heartbeat_interval=None)
    subscriber = Subscriber(endpoint, topics=("embedding.",))
    reader = StreamReader(unique_name, processing_flags=[], timeout=5.0)
    markers = MarkerReader(unique_name + "-markers", processing_flags=[], timeout=5.0)
    runtime = create_runtime(model, "onnxruntime", cache_dir=tmp_path / "onnx")
    node = DecoderNode(reader, runtime, meta, publisher, subject="s01", markers=markers)
    node.start()
    time.sleep(0.5)  # let the inlets connect before pushing: LSL drops what is pushed before

    t0 = pylsl.local_clock()
    ts = t0 + np.arange(n_total) / SFREQ
    onsets = ts[[600, 1000, 1400, 1800, 2200]] + 0.0004
    chunk = 6

    def push():
        k = 0
        for i in range(0, n_total, chunk):
            while pylsl.local_clock() < ts[i + chunk - 1]:
                time.sleep(0.0005)
            sig_out.push_chunk(np.ascontiguousarray(data[:, i : i + chunk].T), list(ts[i : i + chunk]))
            while k < onsets.size and onsets[k] <= ts[i + chunk - 1]:
                mrk_out.push_sample([f"test/img{k}"], onsets[k])
                k += 1

    pusher = threading.Thread(target=push)
    pusher.start()
    received = []
    deadline = time.monotonic() + 15
    while len(received) < onsets.size and time.monotonic() < deadline:
        msg = subscriber.recv(timeout=0.2)
        if msg is not None:
            received.append(msg)
    pusher.join()
    node.stop()
    subscriber.close()
    publisher.close()

    assert [m.header["image_id"] for m in received] == [f"img{k}" for k in range(onsets.size)]
    assert all(m.topic == "embedding.s01" and m.space == "test:random:16" for m in received)
    expected, t_last = _offline_embeddings(model, meta, data, ts, onsets)
    got = np.stack([m.arrays[0] for m in received])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal([m.t_sample for m in received], t_last)
    for m in received:
        stages = [s for s, _ in m.trace]
        assert "decoder.encoded" in stages
        assert all(t >= m.t_sample for _, t in m.trace)
    assert node.windower.stats.dropped_windows == 0 and node.dropped_samples == 0


def test_a_promoted_standby_cuts_the_window_whose_marker_its_predecessor_relayed_before_dying(
    unique_name, tmp_path, checkpoint
):
    """The predecessor published the windows of onsets 0-1, relayed the marker of onset 2 and died before
    that window was complete: the standby publishes the windows of onsets 2-4 (offline-equal, from its
    buffer) and relays only the markers of 3-4."""
    ckpt_dir, model, meta = checkpoint
    data = np.random.default_rng(2).standard_normal((len(CH), int(5.0 * SFREQ))).astype(np.float32)
    sig_out, mrk_out = _outlets(unique_name)
    endpoint = f"ipc://{tmp_path}/bus"
    publisher = Publisher(endpoint, name="decoder", bind=True, heartbeat_interval=None)
    subscriber = Subscriber(endpoint, topics=("embedding.", "marker"))
    reader = StreamReader(unique_name, processing_flags=[], timeout=5.0)
    markers = MarkerReader(unique_name + "-markers", processing_flags=[], timeout=5.0)
    runtime = create_runtime(model, "onnxruntime", cache_dir=tmp_path / "onnx")
    node = DecoderNode(reader, runtime, meta, publisher, subject="s01", markers=markers)
    node.prepare()  # a standby: warm, reading, nothing decoded
    time.sleep(0.5)  # let the inlets connect before pushing: LSL drops what is pushed before
    ts = pylsl.local_clock() - 5.0 + np.arange(data.shape[1]) / SFREQ
    onsets = ts[[600, 1000, 1400, 1800, 2200]] + 0.0004
    sig_out.push_chunk(np.ascontiguousarray(data.T), list(ts))
    for k, onset in enumerate(onsets):
        mrk_out.push_sample([f"test/img{k}"], onset)
    deadline = time.monotonic() + 10
    while reader.buffer.n_written < data.shape[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the markers' inlet too
    node.published_until, node.markers_until, node.history_s = onsets[1], onsets[2], 5.0  # promoted
    node.start()
    embeddings, relayed = [], []
    deadline = time.monotonic() + 15
    while len(embeddings) < 3 and time.monotonic() < deadline:
        msg = subscriber.recv(timeout=0.2)
        if msg is not None:
            (relayed if msg.topic == "marker" else embeddings).append(msg)
    time.sleep(0.3)
    while (msg := subscriber.recv(timeout=0)) is not None:
        (relayed if msg.topic == "marker" else embeddings).append(msg)
    node.stop()
    subscriber.close()
    publisher.close()

    assert [m.header["image_id"] for m in embeddings] == ["img2", "img3", "img4"]
    expected, t_last = _offline_embeddings(model, meta, data, ts, onsets[2:])
    np.testing.assert_allclose(np.stack([m.arrays[0] for m in embeddings]), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal([m.t_sample for m in embeddings], t_last)
    np.testing.assert_allclose([m.t_sample for m in relayed], onsets[3:], atol=1e-6)


# ------------------------------------------------------------------------------------------ incremental mode
@pytest.fixture
def causal_checkpoint(tmp_path):
    import torch

    torch.manual_seed(0)
    pre = PreprocessingConfig(
        l_freq=1.0, h_freq=40.0, sfreq_out=120.0, robust_scale=False, clamp=None, baseline=None
    )
    n_times = 94  # 34 samples of receptive context + 60 aggregated frames (0.5 s)
    arch = {
        "name": "brain_module",
        "n_channels": 8,
        "n_times": n_times,
        "dim": 16,
        "spatial_channels": 8,
        "fourier_freqs": 4,
        "hidden": 16,
        "depth": 2,
        "out_channels": 16,
        "causal": True,
        "positions": np.random.default_rng(0).uniform(size=(8, 2)).tolist(),
    }
    model = build_encoder(arch).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics (folded in the ONNX forms)
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    meta = CheckpointMeta(
        arch=arch,
        ch_names=CH,
        positions=arch["positions"],
        sfreq=120.0,
        tmin=0.4 - n_times / 120.0,
        tmax=0.4,
        preprocessing=pre.model_dump(),
        space="test:causal:16",
        dim=16,
    )
    return save_checkpoint(tmp_path / "causal", model, meta), model, meta


def test_incremental_node_publishes_the_full_paths_embeddings_and_resets_at_a_gap(
    unique_name, tmp_path, causal_checkpoint
):
    """Two decoder nodes on one LSL stream, the same causal checkpoint: one computes each sliding window
    whole (ONNX Runtime), one incrementally (its default for a causal checkpoint). The stream has a 0.3 s
    gap. Both publish the offline windows' embeddings; none of a window over the gap."""
    import torch

    from brainstream.models.checkpoint import read_meta
    from brainstream.realtime.decoder.node import incremental_encoder, use_incremental
    from brainstream.realtime.pipeline_config import WindowingConfig

    ckpt_dir, model, meta = causal_checkpoint
    assert use_incremental(WindowingConfig(mode="sliding"), "auto", read_meta(ckpt_dir))
    assert not use_incremental(WindowingConfig(mode="event"), "auto", read_meta(ckpt_dir))
    encoder, meta = incremental_encoder(ckpt_dir, "onnxruntime")
    rng = np.random.default_rng(1)
    n_total = int(5.0 * SFREQ)
    data = rng.standard_normal((len(CH), n_total)).astype(np.float32)
    t0 = pylsl.local_clock() + 1.0
    ts = t0 + np.arange(n_total) / SFREQ
    keep = np.ones(n_total, bool)
    keep[1500:1680] = False  # 0.3 s that never arrive
    data, ts = data[:, keep], ts[keep]
    outlet = pylsl.StreamOutlet(make_stream_info(unique_name, "EEG", CH, SFREQ, source_id=unique_name))

    nodes, subscribers = {}, {}
    for kind in ("full", "incremental"):
        endpoint = f"ipc://{tmp_path}/bus-{kind}"
        publisher = Publisher(endpoint, name="decoder", bind=True, heartbeat_interval=None)
        subscribers[kind] = Subscriber(endpoint, topics=("embedding.",))
        reader = StreamReader(unique_name, processing_flags=[], timeout=5.0)
        if kind == "full":
            runtime = create_runtime(model, "onnxruntime", cache_dir=tmp_path / "onnx")
            nodes[kind] = DecoderNode(reader, runtime, meta, publisher, subject="s01", mode="sliding")
        else:
            nodes[kind] = DecoderNode(
                reader, None, meta, publisher, subject="s01", mode="sliding", incremental=encoder
            )
        nodes[kind].start()
    time.sleep(0.5)  # let the inlets connect before pushing: LSL drops what is pushed before

    def push():
        for i in range(0, ts.size, 6):
            while pylsl.local_clock() < ts[min(i + 5, ts.size - 1)]:
                time.sleep(0.0005)
            outlet.push_chunk(np.ascontiguousarray(data[:, i : i + 6].T), list(ts[i : i + 6]))

    pusher = threading.Thread(target=push)
    pusher.start()
    received: dict[str, dict[float, object]] = {"full": {}, "incremental": {}}
    deadline = time.monotonic() + 20
    while (pusher.is_alive() or pylsl.local_clock() < ts[-1] + 0.5) and time.monotonic() < deadline:
        for kind, sub in subscribers.items():
            msg = sub.recv(timeout=0.01)
            if msg is not None:
                received[kind][msg.t_sample] = msg
    pusher.join()
    for kind in nodes:
        nodes[kind].stop()
        subscribers[kind].close()
        nodes[kind].publisher.close()

    pre = PreprocessingConfig(**meta.preprocessing)
    x, x_ts = preprocess_recording(data, ts, CH, SFREQ, pre)
    offline = sliding_windows(x, x_ts, WindowSpec(meta.tmin, meta.tmax, meta.sfreq), stride=6)
    assert offline.counts()["missing"] >= 10  # the windows over the gap
    with torch.inference_mode():
        expected = dict(zip(offline.t_last.tolist(), model(torch.from_numpy(offline.X)).numpy(), strict=True))
    for kind, msgs in received.items():
        assert set(msgs) <= set(expected), f"{kind}: a window the offline path drops was published"
        for t, m in msgs.items():
            assert m.topic == "embedding.s01" and m.space == "test:causal:16"
            assert m.header["window"] == "sliding" and m.header["event"] is None
            assert "decoder.encoded" in [s for s, _ in m.trace] and all(tt >= t for _, tt in m.trace)
            np.testing.assert_allclose(
                m.arrays[0], expected[t], rtol=1e-4, atol=1e-4 * np.abs(expected[t]).max()
            )
    common = sorted(set(received["full"]) & set(received["incremental"]))
    assert len(common) >= 0.8 * len(expected)  # a loaded machine may make a node skip a few windows as late
    after_gap = [t for t in common if t > ts[1499] + 94 / 120.0]
    assert len(after_gap) >= 10  # the incremental state restarted after the gap
    for t in common:
        full, inc = received["full"][t].arrays[0], received["incremental"][t].arrays[0]
        np.testing.assert_allclose(inc, full, rtol=1e-4, atol=1e-4 * np.abs(full).max())
    status = nodes["incremental"].status()
    assert status["incremental"] and not nodes["full"].status()["incremental"]
    assert status["incremental_resets"] >= 1 and status["dropped_missing"] >= 1
    assert nodes["incremental"].dropped_samples == 0


def test_incremental_mode_choice(checkpoint, causal_checkpoint):
    from brainstream.realtime.decoder.node import use_incremental
    from brainstream.realtime.pipeline_config import WindowingConfig

    causal, padded = causal_checkpoint[2], checkpoint[2]
    sliding = WindowingConfig(mode="sliding")
    on, off = (
        WindowingConfig(mode="sliding", incremental=True),
        WindowingConfig(mode="sliding", incremental=False),
    )
    assert use_incremental(sliding, "onnxruntime", causal) and use_incremental(sliding, "torch", causal)
    assert not use_incremental(sliding, "auto", padded)  # default: on exactly for a causal checkpoint
    assert not use_incremental(off, "auto", causal)
    assert not use_incremental(sliding, "tensorrt", causal)  # a GPU runtime asked for: whole windows
    with pytest.raises(ValueError, match="needs a causal checkpoint"):
        use_incremental(on, "auto", padded)
    with pytest.raises(ValueError, match="torch or onnxruntime"):
        use_incremental(on, "tensorrt", causal)
    with pytest.raises(ValueError, match="sliding windows only"):
        WindowingConfig(mode="event", incremental=True)


def test_decode_cli_runs_a_causal_checkpoint_incrementally(unique_name, tmp_path, capsys, monkeypatch):
    """``brainstream decode`` on a sliding-window pipeline: incremental by default for a causal checkpoint,
    whole windows with ``--incremental off``."""
    import json

    import yaml

    from brainstream.cli import main as cli_main
    from brainstream.models.device_profile import load_device_profile

    monkeypatch.setenv("BRAINSTREAM_CACHE", str(tmp_path / "cache"))  # the whole-window ONNX export
    profile = load_device_profile("eeg64_1000hz")
    names = list(profile.channels)
    n_times = 34 + 50  # context + 0.5 s at 100 Hz
    arch = {"name": "brain_module", "n_channels": len(names), "n_times": n_times, "dim": 8, "causal": True,
            "spatial_channels": 8, "fourier_freqs": 4, "hidden": 8, "depth": 2, "out_channels": 8,
            "positions": np.random.default_rng(0).uniform(size=(len(names), 2)).tolist()}  # fmt: skip
    pre = PreprocessingConfig(l_freq=1.0, h_freq=40.0, sfreq_out=100.0, robust_scale=False, baseline=None)
    meta = CheckpointMeta(arch=arch, ch_names=names, positions=arch["positions"], sfreq=100.0,
                          tmin=0.5 - n_times / 100.0, tmax=0.5, preprocessing=pre.model_dump(),
                          space="test:causal:8", dim=8)  # fmt: skip
    save_checkpoint(tmp_path / "ckpt", build_encoder(arch).eval(), meta)
    config = {
        "name": "test-incremental",
        "input": {"signal": {"name": unique_name, "timeout_s": 5}, "device": "eeg64_1000hz"},
        "windowing": {"mode": "sliding", "stride_s": 0.05},
        "encoder": {"checkpoint": str(tmp_path / "ckpt"), "runtime": "onnxruntime"},
        "gallery": "demo",
        "bus": {"pub": f"ipc://{tmp_path}/pub", "sub": f"ipc://{tmp_path}/sub"},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    outlet = pylsl.StreamOutlet(make_stream_info(unique_name, "EEG", names, 1000.0, source_id=unique_name))
    stop = threading.Event()

    def push():  # a regular 1000 Hz grid in 10 ms chunks, paced by the clock
        rng = np.random.default_rng(2)
        t0, k = pylsl.local_clock(), 0
        while not stop.is_set():
            while pylsl.local_clock() < t0 + (k + 9) / 1000.0:
                time.sleep(0.0005)
            chunk = rng.standard_normal((10, len(names))).astype(np.float32)
            outlet.push_chunk(chunk, list(t0 + (k + np.arange(10)) / 1000.0))
            k += 10

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        summaries = []
        for flag in ([], ["--incremental", "off"]):
            rc = cli_main(["decode", "--config", str(tmp_path / "pipeline.yaml"), "--seconds", "3", "--json",
                           *flag])  # fmt: skip
            assert rc == 0
            summaries.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    finally:
        stop.set()
        pusher.join()
    incremental, whole = summaries
    assert incremental["incremental"] is True and incremental["windows"] >= 20
    assert incremental["dropped_missing"] == 0 and incremental["dropped_nan"] == 0
    assert whole["incremental"] is False and whole["windows"] >= 20
