"""One shutdown rule for every node verb: SIGINT and SIGTERM both stop the node cleanly.

A node started by a supervisor that was itself started from a script (``nohup``, ``&``) inherits SIGINT
*ignored*, and Python then never raises KeyboardInterrupt; a supervisor that escalates to SIGTERM would kill
a node without a handler before it printed its summary. So each node verb installs handlers for both
signals explicitly (which also overrides an inherited "ignore") and stops within 2 s.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(on_stop: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """Within the block, SIGINT and SIGTERM set the yielded event and call ``on_stop`` (once).

    ``on_stop`` runs in the main thread inside the signal handler: keep it short and non-blocking (set a
    flag, call a node's ``stop`` that only sets events). The previous handlers come back on exit. Only the
    main thread may install signal handlers; elsewhere this yields an event that no signal sets.
    """
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        first = not stop.is_set()
        stop.set()
        if first and on_stop is not None:
            on_stop()

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def is_standby() -> bool:
    """Whether the supervisor started this node as a standby (see ``realtime/session/supervisor.py``)."""
    from brainstream.realtime.session.supervisor import STANDBY_ENV

    return bool(os.environ.get(STANDBY_ENV))


def wait_for_promotion(stop: threading.Event, idle: Callable[[], None] | None = None) -> bool:
    """A standby's wait: say it is ready (on stderr, where the supervisor reads it), then block until
    promoted (SIGUSR1) or stopped. ``idle()`` is called between checks (at least every 50 ms: keep it
    short, e.g. one ``recv`` with a timeout). Returns True when promoted."""
    from brainstream.realtime.session.supervisor import PROMOTE_SIGNAL, STANDBY_READY

    promoted = threading.Event()
    # kept installed afterwards: SIGUSR1's default action would end the process
    signal.signal(PROMOTE_SIGNAL, lambda *_: promoted.set())
    print(STANDBY_READY, file=sys.stderr, flush=True)
    while not (promoted.is_set() or stop.is_set()):
        if idle is not None:
            idle()
        else:
            promoted.wait(0.05)
    return promoted.is_set() and not stop.is_set()


def serve(node, on_ready: Callable[[], None] | None = None) -> None:
    """Run a bus service node (retrieval, generator) under the shutdown rules: SIGINT / SIGTERM stop it;
    as a standby it loads, connects and waits for promotion before it answers anything."""
    from brainstream.realtime.heap import freeze_startup_heap

    with stop_on_signals(node.request_stop) as stopping:
        if is_standby():
            node.standby_gate = threading.Event()
            node.start()
            if not wait_for_promotion(stopping):
                node.stop()
                return
            node.standby_gate.set()
        else:
            node.start()
        if stopping.is_set():  # asked while starting (start() clears the node's own stop flag)
            node.request_stop()
        freeze_startup_heap()  # loaded and warm: a full collection would stall an answer ~100 ms
        if on_ready is not None:
            on_ready()
        node.run()


def exit_if_supervised(code: int = 0) -> int:
    """After a node has stopped and printed its summary: under a supervisor, leave at once (``os._exit``:
    no interpreter finalisation, whose thread joins and library teardowns can outlast the supervisor's
    stop budget and get the node killed after its clean stop); otherwise return ``code``."""
    from brainstream.realtime.session.supervisor import SUPERVISED_ENV

    if os.environ.get(SUPERVISED_ENV):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
