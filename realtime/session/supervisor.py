"""Run the nodes of a session as separate processes and keep them running.

Each node is its own process so that a busy stage (the generator, the display) cannot starve acquisition.
A node that exits unexpectedly is restarted (up to ``max_restarts``) and the reason (exit code and the tail
of its stderr) is logged. :meth:`Supervisor.stop` interrupts every node, then terminates, then kills.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class NodeSpec:
    """How to start one node.

    Parameters
    ----------
    name : str
        Node name used in logs.
    argv : sequence of str
        Command line. ``brainstream <verb> ...`` nodes are started with the current interpreter.
    restart : bool
        Restart the node when it exits on its own.
    max_restarts : int
        Give up on a node after this many restarts.
    env : dict | None
        Extra environment variables.
    """

    name: str
    argv: Sequence[str]
    restart: bool = True
    max_restarts: int = 3
    env: dict[str, str] | None = None
    log_dir: Path | None = None


@dataclass
class _NodeState:
    spec: NodeSpec
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    stderr_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))
    reader: threading.Thread | None = None
    failed: bool = False


def brainstream_argv(verb: str, *args: str) -> list[str]:
    """Command line that runs ``brainstream <verb> args...`` with this interpreter."""
    return [sys.executable, "-m", "brainstream", verb, *args]


class Supervisor:
    """Start, watch and stop a set of node processes.

    Parameters
    ----------
    nodes : sequence of NodeSpec
        The nodes, started in order.
    poll_interval : float
        Seconds between liveness checks.
    """

    def __init__(self, nodes: Sequence[NodeSpec], poll_interval: float = 0.2) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        self._nodes = {n.name: _NodeState(n) for n in nodes}
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.events: list[tuple[float, str, str]] = []  # (time, node, what happened)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> Supervisor:
        for state in self._nodes.values():
            self._spawn(state)
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()
        return self

    def stop(self, timeout: float = 5.0) -> dict[str, int | None]:
        """Stop every node, consumers before sources: SIGINT to each node in reverse start order (waiting up
        to ``timeout`` for each), then SIGTERM, then SIGKILL to what is left. Returns each exit code."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)
        for s in reversed(list(self._nodes.values())):
            if s.process is not None and s.process.poll() is None:
                s.process.send_signal(signal.SIGINT)
                self._wait_exit([s], timeout)
        live = [s for s in self._nodes.values() if s.process is not None and s.process.poll() is None]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for s in live:
                s.process.send_signal(sig)
            self._wait_exit(live, 2.0)
            live = [s for s in live if s.process.poll() is None]
            if not live:
                break
        for s in self._nodes.values():
            if s.reader is not None:
                s.reader.join(timeout=1)
        return {name: (s.process.returncode if s.process else None) for name, s in self._nodes.items()}

    @staticmethod
    def _wait_exit(states: list[_NodeState], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(s.process.poll() is None for s in states):
            time.sleep(0.05)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- status ------------------------------------------------------------------------------------------
    def status(self) -> dict[str, dict]:
        out = {}
        for name, s in self._nodes.items():
            alive = s.process is not None and s.process.poll() is None
            out[name] = {
                "alive": alive,
                "restarts": s.restarts,
                "failed": s.failed,
                "pid": s.process.pid if s.process else None,
            }
        return out

    def pids(self) -> dict[str, int]:
        return {n: s.process.pid for n, s in self._nodes.items() if s.process and s.process.poll() is None}

    # -- internals ---------------------------------------------------------------------------------------
    def _spawn(self, state: _NodeState) -> None:
        spec = state.spec
        env = dict(os.environ)
        env.update(spec.env or {})
        stdout = subprocess.DEVNULL
        if spec.log_dir is not None:
            Path(spec.log_dir).mkdir(parents=True, exist_ok=True)
            stdout = open(Path(spec.log_dir) / f"{spec.name}.log", "ab")  # noqa: SIM115 - owned by the child
        state.process = subprocess.Popen(list(spec.argv), stdout=stdout, stderr=subprocess.PIPE, env=env)
        state.started_at = time.monotonic()
        state.reader = threading.Thread(
            target=self._drain, args=(state,), daemon=True, name=f"log-{spec.name}"
        )
        state.reader.start()
        self._record(spec.name, f"started pid {state.process.pid}")

    def _drain(self, state: _NodeState) -> None:
        process = state.process
        log_file = None
        if state.spec.log_dir is not None:
            log_file = open(Path(state.spec.log_dir) / f"{state.spec.name}.err", "ab")  # noqa: SIM115
        try:
            for line in iter(process.stderr.readline, b""):
                state.stderr_tail.append(line.decode(errors="replace").rstrip())
                if log_file is not None:
                    log_file.write(line)
                    log_file.flush()
        finally:
            if log_file is not None:
                log_file.close()

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_interval):
            for state in self._nodes.values():
                code = state.process.poll() if state.process else None
                if code is None or state.failed:
                    continue
                if state.reader is not None:
                    state.reader.join(timeout=1)
                tail = " | ".join(list(state.stderr_tail)[-3:])
                reason = f"exited with code {code}" + (f": {tail}" if tail else "")
                if self._stop.is_set():
                    return
                if state.spec.restart and state.restarts < state.spec.max_restarts:
                    state.restarts += 1
                    self._record(
                        state.spec.name,
                        f"{reason}; restarting ({state.restarts}/{state.spec.max_restarts})",
                        level=logging.WARNING,
                    )
                    state.stderr_tail.clear()
                    self._spawn(state)
                else:
                    state.failed = True
                    self._record(state.spec.name, f"{reason}; not restarted", level=logging.ERROR)

    def _record(self, node: str, what: str, level: int = logging.INFO) -> None:
        self.events.append((time.monotonic(), node, what))
        logger.log(level, "node %s %s", node, what)
