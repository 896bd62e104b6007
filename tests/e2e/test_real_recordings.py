"""Real recordings from other sites, replayed by `brainstream replay` over real liblsl and decoded by the real
decoder node (sliding windows) on a real ZeroMQ socket.

- ``tests/data/ctf/testdata_ctf_short_discontinuous.ds``: a CTF-275 system with the ``-4304`` suffix, 356
  channels (28 references, stim, EEG, misc), two of the THINGS profile's sensors absent; decoded with the
  shipped demo brain module on ``ctf275_things_meg``, which masks the absent and the bad sensors.
- ``tests/data/brainvision/test_NO.vhdr``: 65-channel EEG at 5 kHz without positions; decoded with a ridge
  encoder on a profile written by ``brainstream device from-recording``.

The replays loop, and nothing here needs the first samples of a file.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from brainstream.models.checkpoint import CheckpointMeta, save_checkpoint
from brainstream.models.encoders import build_encoder
from brainstream.models.preprocessing import PreprocessingConfig
from brainstream.realtime.bus import Publisher, Subscriber
from brainstream.realtime.decoder.node import build_decoder_node
from brainstream.realtime.pipeline_config import PipelineConfig

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
CTF_DS = DATA / "ctf" / "testdata_ctf_short_discontinuous.ds"
BRAINVISION = DATA / "brainvision" / "test_NO.vhdr"
DEMO_ENCODER = REPO / "realtime" / "session" / "assets" / "demo_encoder"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "brainstream", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _replay(path: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "brainstream", "replay", str(path), "--loop", "--name", name, "--no-markers"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err or ""


def _pipeline(stream: str, device: str, checkpoint: Path, **input_options) -> PipelineConfig:
    return PipelineConfig(
        name="real-recording",
        subject="site",
        input={"signal": {"name": stream, "timeout_s": 30.0}, "device": device, **input_options},
        windowing={"mode": "sliding", "stride_s": 0.1},
        encoder={"checkpoint": str(checkpoint), "runtime": "torch"},
        gallery="demo",
    )


def _collect(subscriber: Subscriber, received: list, n_windows: int, timeout: float = 30.0, until=None):
    deadline = time.monotonic() + timeout
    while (len(received) < n_windows or (until is not None and not until())) and time.monotonic() < deadline:
        msg = subscriber.recv(timeout=0.2)
        if msg is not None:
            received.append(msg)


def _decode(config: PipelineConfig, endpoint: str, n_windows: int, during=None):
    """Run the decoder node until ``n_windows`` embeddings came out, then ``during(node, subscriber,
    received)`` if given; returns (messages, node status)."""
    publisher = Publisher(endpoint, name="decoder", bind=True, heartbeat_interval=None)
    subscriber = Subscriber(endpoint, topics=("embedding.",))
    received = []
    control_endpoint = endpoint + "-control" if during is not None else False
    try:
        node = build_decoder_node(config, publisher=publisher, control_endpoint=control_endpoint)
        node.start()
        try:
            _collect(subscriber, received, n_windows)
            if during is not None:
                during(node, subscriber, received)
            status = node.status()
        finally:
            node.stop()
    finally:
        subscriber.close()
        publisher.close()
    return received, status


def test_a_real_ctf_275_recording_decodes_on_the_things_profile(unique_name, tmp_path, caplog):
    """...and a sensor marked bad live (a ``control.decoder`` request, as the display's key sends) is masked
    from then on while windows keep coming."""
    after_mark: list = []

    def mark_one_bad(node, subscriber, received):
        with Publisher(
            f"ipc://{tmp_path}/bus-control", name="display", bind=True, heartbeat_interval=None
        ) as ctl:
            deadline = time.monotonic() + 20
            while node.status()["channels_bad"] < 2 and time.monotonic() < deadline:
                ctl.publish(
                    "control.decoder", action="mark_bad", channels=["MRT11-4304"]
                )  # until it connects
                time.sleep(0.2)
        _collect(subscriber, after_mark, 3)

    replay = _replay(CTF_DS, unique_name)
    try:
        config = _pipeline(unique_name, "ctf275_things_meg", DEMO_ENCODER, bad_channels=["MLC11-4304"])
        with caplog.at_level(logging.WARNING):
            received, status = _decode(config, f"ipc://{tmp_path}/bus", n_windows=5, during=mark_one_bad)
    finally:
        err = _stop(replay)
    assert len(received) >= 5, f"no windows decoded; replay said: {err[-2000:]}"
    assert len(after_mark) >= 3 and status["channels_bad"] == 2 and status["channels_masked"] == 4
    live = [r.getMessage() for r in caplog.records if "marked bad live" in r.getMessage()]
    assert len(live) == 1 and "MRT11-1609" in live[0]
    assert all(m.get("window") == "sliding" and m.space.startswith("demo:") for m in received)
    embeddings = np.stack([m.arrays[0] for m in received])
    assert embeddings.shape[1] == 128 and np.all(np.isfinite(embeddings))
    assert status["channels_missing"] == 2 and status["channels_used"] == 268
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    missing = [w for w in warnings if "2 of the encoder's sensors" in w]
    assert len(missing) == 1 and "MRF66-1609" in missing[0] and "MRO52-1609" in missing[0]
    bad = [w for w in warnings if w.startswith("marked bad:")]
    assert len(bad) == 1 and "MLC11-1609" in bad[0]


def test_a_stream_lacking_too_many_sensors_is_refused_naming_them(unique_name, tmp_path):
    from brainstream.realtime.acquisition import StreamMismatchError

    replay = _replay(CTF_DS, unique_name)
    try:
        config = _pipeline(unique_name, "ctf275_things_meg", DEMO_ENCODER, max_missing_fraction=0.005)
        publisher = Publisher(f"ipc://{tmp_path}/bus", name="decoder", bind=True, heartbeat_interval=None)
        try:
            with pytest.raises(StreamMismatchError, match=r"lacks 2 of the 272 .*: MRF66-1609, MRO52-1609"):
                build_decoder_node(config, publisher=publisher, control_endpoint=False)
        finally:
            publisher.close()
    finally:
        _stop(replay)


def _ridge_checkpoint(folder: Path, profile_path: Path) -> Path:
    from brainstream.models.device_profile import load_device_profile

    profile = load_device_profile(profile_path)
    n_times, dim = 20, 8
    arch = {"name": "ridge", "n_channels": profile.n_channels, "n_times": n_times, "dim": dim}
    model = build_encoder(arch).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.weight.normal_()
    pre = PreprocessingConfig(l_freq=1.0, h_freq=40.0, sfreq_out=100.0, robust_scale=False, clamp=None)
    meta = CheckpointMeta(
        arch=arch,
        modality="eeg",
        ch_names=profile.channels,
        sfreq=100.0,
        tmin=0.0,
        tmax=n_times / 100.0,
        preprocessing=pre.model_dump(),
        space="test:random:8",
        dim=dim,
    )
    return save_checkpoint(folder, model, meta)


def test_a_real_eeg_recording_decodes_with_a_profile_written_from_it(unique_name, tmp_path):
    profile_path = tmp_path / "lab_eeg.yaml"
    made = _cli("device", "from-recording", str(BRAINVISION), "-o", str(profile_path), "--name", "lab-eeg")
    assert made.returncode == 0, made.stderr
    assert "spatial encoders" in made.stderr and "--montage" in made.stderr  # no positions in the file
    shown = _cli("config", "show", str(profile_path), "--kind", "devices")
    assert shown.returncode == 0, shown.stderr
    assert "lab-eeg" in shown.stdout and "5000.0" in shown.stdout
    ckpt = _ridge_checkpoint(tmp_path / "ridge", profile_path)
    replay = _replay(BRAINVISION, unique_name)
    try:
        # a bad sensor for an encoder that interpolates, on a profile without positions: refused, saying so
        bad = _pipeline(unique_name, str(profile_path), ckpt, bad_channels=["EMGleft"])
        with pytest.raises(ValueError, match="interpolating EMGleft needs sensor positions"):
            build_decoder_node(bad, control_endpoint=False)
        received, status = _decode(
            _pipeline(unique_name, str(profile_path), ckpt), f"ipc://{tmp_path}/bus", 5
        )
    finally:
        err = _stop(replay)
    assert len(received) >= 5, f"no windows decoded; replay said: {err[-2000:]}"
    embeddings = np.stack([m.arrays[0] for m in received])
    assert embeddings.shape[1] == 8 and np.all(np.isfinite(embeddings)) and np.ptp(embeddings) > 0
    assert status["channels_missing"] == 0 and status["channels_used"] == 65


def test_device_from_stream_keeps_the_meg_channels_of_a_live_stream(unique_name, tmp_path, capsys):
    """A live stream's labels, types and units (real liblsl): the MEG channels become the profile, the
    reference, stim and misc channels are left out; no positions over LSL, so a montage/layout is named."""
    import pylsl

    from brainstream.cli import main
    from brainstream.models.device_profile import load_device_profile
    from brainstream.realtime.lsl_info import make_stream_info

    names = ["UPPT001", "BG1-4304", "MLC11-4304", "MLC12-4304", "MRC11-4304", "SCLK01-177"]
    types = ["STIM", "REFMEG", "MEG", "MEG", "MEG", "MISC"]
    info = make_stream_info(
        unique_name, "MEG", names, 1200.0, ch_types=types, units=["", "T", "T", "T", "T", ""]
    )
    outlet = pylsl.StreamOutlet(info)
    try:
        out = tmp_path / "site.yaml"
        assert main(["device", "from-stream", unique_name, "-o", str(out), "--layout", "CTF-275"]) == 0
        profile = load_device_profile(out)
        assert profile.channels == ["MLC11-4304", "MLC12-4304", "MRC11-4304"]
        assert (profile.modality, profile.unit, profile.sfreq, profile.layout) == (
            "meg",
            "T",
            1200.0,
            "CTF-275",
        )
        assert profile.positions_2d.shape == (3, 2)
        capsys.readouterr()
        assert main(["device", "from-stream", unique_name, "-o", str(out)]) != 0
        assert "exists; pass --force" in capsys.readouterr().err
        assert (
            main(["device", "from-stream", unique_name + "-absent", "--timeout", "0.5", "-o", "x.yaml"]) != 0
        )
        assert unique_name + "-absent" in capsys.readouterr().err
    finally:
        del outlet
