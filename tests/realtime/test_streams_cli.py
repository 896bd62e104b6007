"""``brainstream streams``: lists real loopback outlets, as a table and as one JSON object."""

from __future__ import annotations

import json
import socket

import pylsl

from brainstream.cli import main
from brainstream.realtime.lsl_info import make_stream_info


def test_streams_lists_outlets_json_and_table(unique_name, capsys):
    eeg = pylsl.StreamOutlet(
        make_stream_info(unique_name, "EEG", ["Fz", "Cz", "Pz"], 500.0, source_id=unique_name + "-src")
    )
    mk = pylsl.StreamOutlet(
        make_stream_info(unique_name + "-mk", "Markers", ["m"], 0.0, channel_format="string")
    )
    try:
        assert main(["streams", "--json", "--wait", "1.0"]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        doc = json.loads(out[-1])  # exactly one JSON object, last
        mine = {s["name"]: s for s in doc["streams"] if s["name"].startswith(unique_name)}
        assert doc["count"] == len(doc["streams"])
        assert set(mine) == {unique_name, unique_name + "-mk"}
        s = mine[unique_name]
        assert (s["type"], s["channels"], s["sfreq"], s["source_id"]) == (
            "EEG",
            3,
            500.0,
            unique_name + "-src",
        )
        assert s["host"] == socket.gethostname()
        assert mine[unique_name + "-mk"]["sfreq"] == 0.0
        assert mine[unique_name + "-mk"]["channel_format"] == "string"

        assert main(["streams", "--wait", "1.0", "--type", "Markers"]) == 0
        table = capsys.readouterr().out
        assert table.splitlines()[0].split()[:4] == ["NAME", "TYPE", "CH", "RATE"]
        assert unique_name + "-mk" in table and "irregular" in table
        assert f"{unique_name} " not in table  # the EEG stream is filtered out
    finally:
        del eeg, mk


def test_streams_bad_wait_is_a_user_error(capsys):
    assert main(["streams", "--wait", "0"]) == 2
    assert "--wait must be > 0" in capsys.readouterr().err
