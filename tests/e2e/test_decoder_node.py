"""The decoder node end to end over real liblsl (loopback) and a real ZeroMQ socket: the embeddings it
publishes equal the offline path (preprocess_recording + cut_epochs + the same encoder) on the same data."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest

from models.checkpoint import CheckpointMeta, save_checkpoint
from models.encoders import build_encoder
from models.preprocessing import PreprocessingConfig, preprocess_recording
from models.runtime import create_runtime
from models.windowing import WindowSpec, cut_epochs
from realtime.acquisition import MarkerReader, StreamReader
from realtime.bus import Publisher, Subscriber
from realtime.decoder.node import DecoderNode
from realtime.lsl_info import make_stream_info

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


def test_decoder_node_publishes_offline_equal_embeddings(unique_name, tmp_path, checkpoint):
    ckpt_dir, model, meta = checkpoint
    rng = np.random.default_rng(1)
    n_total = int(5.0 * SFREQ)
    data = rng.standard_normal((len(CH), n_total)).astype(np.float32)
    sig_info = make_stream_info(unique_name, "EEG", CH, SFREQ, source_id=unique_name + "-sig")
    mrk_info = make_stream_info(
        unique_name + "-markers",
        "Markers",
        ["marker"],
        0,
        channel_format="string",
        source_id=unique_name + "-mrk",
    )
    sig_out, mrk_out = pylsl.StreamOutlet(sig_info), pylsl.StreamOutlet(mrk_info)

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
    pre = PreprocessingConfig(**meta.preprocessing)
    x, x_ts = preprocess_recording(data, ts, CH, SFREQ, pre)
    epochs = cut_epochs(x, x_ts, onsets, WindowSpec(meta.tmin, meta.tmax, meta.sfreq), baseline=pre.baseline)
    import torch

    with torch.inference_mode():
        expected = model(torch.from_numpy(epochs.X)).numpy()
    got = np.stack([m.arrays[0] for m in received])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal([m.t_sample for m in received], epochs.t_last)
    for m in received:
        stages = [s for s, _ in m.trace]
        assert "decoder.encoded" in stages
        assert all(t >= m.t_sample for _, t in m.trace)
    assert node.windower.stats.dropped_windows == 0 and node.dropped_samples == 0
