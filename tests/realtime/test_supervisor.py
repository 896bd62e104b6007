"""The supervisor runs real child processes: a crashing node is restarted, stop() ends everything."""

from __future__ import annotations

import sys
import time

from brainstream.realtime.session.supervisor import NodeSpec, Supervisor


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_crashed_node_is_restarted_with_reason(tmp_path):
    crash = [sys.executable, "-c", "import sys; print('boom: bad config', file=sys.stderr); sys.exit(3)"]
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    sup = Supervisor(
        [NodeSpec("crasher", crash, max_restarts=2), NodeSpec("sleeper", sleeper)], poll_interval=0.05
    )
    with sup:
        assert _wait(lambda: sup.status()["crasher"]["failed"])
        status = sup.status()
        assert status["crasher"]["restarts"] == 2
        assert status["sleeper"]["alive"]
    reasons = [what for _, node, what in sup.events if node == "crasher" and "exited" in what]
    assert len(reasons) == 3
    assert all("code 3" in r and "boom: bad config" in r for r in reasons)
    assert not sup.status()["sleeper"]["alive"]


def test_stop_interrupts_then_kills(tmp_path):
    # each child says when its handlers are in place: on a loaded machine interpreter start-up alone can take
    # longer than any fixed sleep, and a signal that comes before the handler tests nothing
    stubborn = [
        sys.executable,
        "-c",
        "import pathlib, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); pathlib.Path(sys.argv[1]).touch(); time.sleep(60)",
        str(tmp_path / "stubborn.ready"),
    ]
    polite = [
        sys.executable,
        "-c",
        "import pathlib, sys, time\ntry:\n    pathlib.Path(sys.argv[1]).touch()\n    time.sleep(60)\n"
        "except KeyboardInterrupt:\n    pass",
        str(tmp_path / "polite.ready"),
    ]
    sup = Supervisor([NodeSpec("stubborn", stubborn), NodeSpec("polite", polite)]).start()
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"{n}.ready").exists() for n in ("stubborn", "polite")):
        assert time.monotonic() < deadline, "the child processes did not start within 30 s"
        time.sleep(0.05)
    codes = sup.stop(timeout=2.0)
    assert codes["polite"] == 0  # ended cleanly on SIGINT
    assert codes["stubborn"] == -9  # ignored SIGINT and SIGTERM, was killed


def test_unique_names_required():
    import pytest

    with pytest.raises(ValueError, match="unique"):
        Supervisor([NodeSpec("a", ["true"]), NodeSpec("a", ["true"])])
