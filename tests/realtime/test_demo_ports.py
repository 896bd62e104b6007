"""A second demo on one machine: it sees the first one's bus ports taken and runs on ports of its own."""

from __future__ import annotations

import socket

from brainstream.models.config_base import resolve_config_path
from brainstream.realtime.pipeline_config import load_pipeline_config
from brainstream.realtime.session.demo_session import DEMO_CONFIG, bus_addresses_in_use, demo_config_path


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.partition("://")[2].rpartition(":")
    return host, int(port)


def test_a_demo_whose_bus_ports_are_held_runs_on_an_isolated_copy(tmp_path):
    shipped = resolve_config_path(DEMO_CONFIG, "pipelines")
    pipeline = load_pipeline_config(shipped)
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # another session's broker
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(_host_port(pipeline.bus.pub))
        held.listen()
        assert bus_addresses_in_use(pipeline) == [pipeline.bus.pub]
        path = demo_config_path(tmp_path, DEMO_CONFIG, isolated=False)
    finally:
        held.close()
    assert path == tmp_path / "pipeline.yaml"
    mine = load_pipeline_config(path)
    assert {mine.bus.pub, mine.bus.sub}.isdisjoint({pipeline.bus.pub, pipeline.bus.sub})
    assert mine.input.signal.name != pipeline.input.signal.name
    # once the other session is gone, the demo keeps its own config
    assert bus_addresses_in_use(pipeline) == []
    assert demo_config_path(tmp_path / "again", DEMO_CONFIG, isolated=False) == shipped
