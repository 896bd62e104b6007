"""The supervisor runs real child processes: a crashing node is restarted, stop() ends everything."""

from __future__ import annotations

import sys
import time

from realtime.session.supervisor import NodeSpec, Supervisor


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
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
    ]
    polite = [
        sys.executable,
        "-c",
        "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    pass",
    ]
    sup = Supervisor([NodeSpec("stubborn", stubborn), NodeSpec("polite", polite)]).start()
    time.sleep(0.5)
    codes = sup.stop(timeout=0.5)
    assert codes["polite"] == 0  # ended cleanly on SIGINT
    assert codes["stubborn"] == -9  # ignored SIGINT and SIGTERM, was killed


def test_unique_names_required():
    import pytest

    with pytest.raises(ValueError, match="unique"):
        Supervisor([NodeSpec("a", ["true"]), NodeSpec("a", ["true"])])
