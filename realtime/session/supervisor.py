"""Run the nodes of a session as separate processes and keep them running.

Each node is its own process so that a busy stage (the generator, the display) cannot starve acquisition.
A node that exits unexpectedly is restarted at once (up to ``max_restarts``) and the reason logged: how it
ended (exit code or signal) and its last error or exception line on stderr (not liblsl's INFO chatter).

Shutdown rules (every node verb follows them, see ``brainstream/cli/_shutdown.py``): a node stops on SIGINT
or SIGTERM alike, within 2 s, and prints its summary. :meth:`Supervisor.stop` stops the graph in phases of
``NodeSpec.stop_phase`` (sources and workers first, then the recorder so that it holds everything they
produced, then the broker): each phase gets SIGINT all at once, then SIGTERM, then SIGKILL, so the whole
graph is down within ``timeout`` (3 s) whether or not the terminal's SIGINT reached the children (a
supervisor started from a script, with ``nohup`` or ``&``, has SIGINT ignored).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
    stop_phase: int = 0  # stop order: lower phases first (sources, workers 0; recorder 1; broker 2)
    standby: bool = False  # keep a warm second process ready to take over at once (see Supervisor)


#: standbys warm up one at a time, in start order: each loads as much as its node did, and three at once
#: took both cores of a 2-core machine from the session for ~10 s (continuous demo: sample->image up to
#: 316 ms then, under 50 ms after; docs/benchmarks.md). A standby still not ready after this many seconds
#: no longer holds the next one back.
STANDBY_WARMUP_LIMIT_S = 120.0

#: set in a standby's environment: the node prepares everything, prints STANDBY_READY on stderr and waits
#: for SIGUSR1 (promotion) before it serves; SIGINT / SIGTERM stop it as any node
STANDBY_ENV = "BRAINSTREAM_STANDBY"
STANDBY_READY = "standby ready"
#: set in every supervised node's environment to the supervisor's pid: once it has stopped and printed its
#: summary, a node exits at once (``os._exit``) instead of finalising the interpreter, which can take seconds
#: on a loaded machine; and a node whose supervisor died stops itself (:func:`stop_when_orphaned`)
SUPERVISED_ENV = "BRAINSTREAM_SUPERVISED"
PROMOTE_SIGNAL = signal.SIGUSR1
ORPHAN_CHECK_S = 0.5


def stop_when_orphaned() -> threading.Thread | None:
    """In a supervised node: send ourselves SIGTERM (the node's clean stop) once the supervisor is gone.

    A supervisor killed with SIGKILL (or a test runner interrupted hard) cannot stop its nodes; without
    this they would run on, holding ports, stream names and cores. The node is re-parented when its
    supervisor dies, so a changed parent pid is the sign. Returns the watching thread, or None when this
    process is not a supervised node.
    """
    supervisor = os.environ.get(SUPERVISED_ENV, "")
    if not supervisor.isdigit():
        return None
    supervisor_pid = int(supervisor)
    if os.getppid() != supervisor_pid:
        try:
            os.kill(supervisor_pid, 0)
        except ProcessLookupError:  # the supervisor died before this node got here
            os.kill(os.getpid(), signal.SIGTERM)
        return None  # else: a process that a node started, which inherited the variable

    def watch() -> None:
        while os.getppid() == supervisor_pid:
            time.sleep(ORPHAN_CHECK_S)
        logger.warning("supervisor (pid %d) is gone: stopping", supervisor_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True, name="orphan-watch")
    thread.start()
    return thread


@dataclass
class _Standby:
    process: subprocess.Popen
    stderr_tail: collections.deque
    reader: threading.Thread
    ready: threading.Event
    started_at: float = field(default_factory=time.monotonic)

    def warming(self, limit_s: float) -> bool:
        """Still loading: alive, not yet ready, started less than ``limit_s`` seconds ago."""
        return (
            self.process.poll() is None
            and not self.ready.is_set()
            and time.monotonic() - self.started_at < limit_s
        )


@dataclass
class _NodeState:
    spec: NodeSpec
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    stderr_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    reader: threading.Thread | None = None
    failed: bool = False
    finished: bool = False  # a node that is not restarted ended on its own with exit code 0
    standby: _Standby | None = None
    standby_due: float | None = None  # monotonic time to start the next standby
    standby_failures: int = 0  # standbys that died before promotion; past max_restarts, no more are started


def brainstream_argv(verb: str, *args: str) -> list[str]:
    """Command line that runs ``brainstream <verb> args...`` with this interpreter."""
    return [sys.executable, "-m", "brainstream", verb, *args]


# liblsl's own log lines: "2026-01-01 10:00:00.000 (   1.234s) [thread] INFO| ..."
_LIBLSL_LINE = re.compile(r"\(\s*[\d.]+s\)\s*\[[^\]]*\]\s*\w+\|")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Fault)(:\s.*)?$")
_ERROR_WORD = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b|\berror:")


def last_error_line(lines: Sequence[str]) -> str | None:
    """The last line of a node's stderr that says what went wrong: an exception (a traceback's last line),
    a log record at ERROR/CRITICAL or a ``brainstream VERB: error: ...`` message; liblsl's lines are
    skipped. None when there is none."""
    found = None
    in_traceback = False
    for line in lines:
        text = line.rstrip()
        if not text.strip() or _LIBLSL_LINE.search(text):
            continue
        if text.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and not text[0].isspace():
            found, in_traceback = text.strip(), False  # the exception that ended the traceback
        elif not in_traceback and (_EXCEPTION_LINE.match(text.strip()) or _ERROR_WORD.search(text)):
            found = text.strip()
    return found


def exit_reason(code: int, stderr_lines: Sequence[str]) -> str:
    """How a child ended, in words: its exit code or the signal that killed it, and its last error line."""
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    error = last_error_line(stderr_lines)
    return f"{how}: {error}" if error else how


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM both raise KeyboardInterrupt in the main thread.

    For the process that runs a :class:`Supervisor` (``live``, ``demo``): started from a script or with
    ``nohup`` it has SIGINT ignored, and a SIGTERM would otherwise end it without stopping its nodes.
    Elsewhere than the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    interrupted = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        if not interrupted.is_set():  # once: a second Ctrl-C must not break off the stop it started
            interrupted.set()
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Supervisor:
    """Start, watch and stop a set of node processes.

    Parameters
    ----------
    nodes : sequence of NodeSpec
        The nodes, started in order.
    poll_interval : float
        Seconds between liveness checks.
    standby_delay : float
        Seconds after a node's (re)start before its standby is started (``NodeSpec.standby``), so that the
        two do not compete for the CPU while the first one starts. Standbys then warm up one at a time
        (:data:`STANDBY_WARMUP_LIMIT_S`).
    on_event : callable(node, kind, message) | None
        Told of every start, restart and stop (kinds ``started``, ``standby`` (a standby started or died),
        ``restarting`` (an exit, with its reason, and how it was replaced), ``failed`` (not restarted),
        ``finished`` (a node that is not restarted ended on its own, exit code 0: a display run for
        ``--seconds``), ``stopping``, ``stopped``), e.g. to publish them as session events for the recording.
        Called from the supervisor's threads; it must not raise (errors are logged and ignored).
    """

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        poll_interval: float = 0.05,
        on_event: Callable[[str, str, str], None] | None = None,
        standby_delay: float = 10.0,
    ) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        self._nodes = {n.name: _NodeState(n) for n in nodes}
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._on_event = on_event
        self._standby_delay = standby_delay
        self.events: list[tuple[float, str, str]] = []  # (time, node, what happened)
        self.stop_seconds: float | None = None  # how long the last stop() took

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> Supervisor:
        for state in self._nodes.values():
            self._spawn(state)
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()
        return self

    def stop(self, timeout: float = 3.0) -> dict[str, int | None]:
        """Stop every node within about ``timeout`` seconds and return each exit code.

        Phase by phase (``NodeSpec.stop_phase``, lowest first): SIGINT to all the phase's nodes at once, then
        SIGTERM to those still running, then SIGKILL. The first phase gets about half of ``timeout``, the
        others share the rest; within a phase SIGINT gets 65 % of its time, SIGTERM 20 %, SIGKILL 15 %.
        """
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        t0 = time.monotonic()
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=1)
        phases = sorted({s.spec.stop_phase for s in self._nodes.values()})
        for i, phase in enumerate(phases):
            states = [s for s in self._nodes.values() if s.spec.stop_phase == phase]
            share = 1.0 if len(phases) == 1 else (0.55 if i == 0 else 0.45 / (len(phases) - 1))
            self._stop_group(states, budget=share * timeout)
        self.stop_seconds = time.monotonic() - t0  # every process is gone: the rest is bookkeeping
        for s in self._nodes.values():
            if s.reader is not None:
                s.reader.join(timeout=1)
            if s.process is not None and s.process.returncode is not None and not s.failed:
                self._record(s.spec.name, "stopped", f"stopped ({exit_reason(s.process.returncode, [])})")
        return {name: (s.process.returncode if s.process else None) for name, s in self._nodes.items()}

    def end_node(self, name: str) -> bool:
        """Ask one node to end on its own (SIGINT, as a user's Ctrl-C), without waiting; ``False`` when it
        is not running. A node that is not restarted then ends as ``finished``; the demo ends its display
        so, when the session's seconds are over (the display's own timer started before the decoder was
        warm)."""
        if name not in self._nodes:
            raise ValueError(f"no node named {name!r}; nodes: {sorted(self._nodes)}")
        process = self._nodes[name].process
        if process is None or process.poll() is not None:
            return False
        process.send_signal(signal.SIGINT)
        return True

    def _stop_group(self, states: list[_NodeState], budget: float) -> None:
        for s in states:
            if s.process is not None and s.process.poll() is None:
                self._record(s.spec.name, "stopping", "stopping")
        procs = [s.process for s in states if s.process is not None]
        procs += [s.standby.process for s in states if s.standby is not None]
        live = [p for p in procs if p.poll() is None]
        for sig, share in ((signal.SIGINT, 0.65), (signal.SIGTERM, 0.2), (signal.SIGKILL, 0.15)):
            if not live:
                return
            for p in live:
                p.send_signal(sig)
            self._wait_exit(live, share * budget)
            live = [p for p in live if p.poll() is None]

    @staticmethod
    def _wait_exit(processes: list[subprocess.Popen], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(p.poll() is None for p in processes):
            time.sleep(0.02)

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
                "finished": s.finished,
                "pid": s.process.pid if s.process else None,
                "standby_ready": s.standby is not None and s.standby.ready.is_set(),
            }
        return out

    def pids(self) -> dict[str, int]:
        return {n: s.process.pid for n, s in self._nodes.items() if s.process and s.process.poll() is None}

    # -- internals ---------------------------------------------------------------------------------------
    def _popen(self, spec: NodeSpec, standby: bool) -> subprocess.Popen:
        env = dict(os.environ)
        env.update(spec.env or {})
        env.pop(STANDBY_ENV, None)
        env[SUPERVISED_ENV] = str(os.getpid())
        if standby:
            env[STANDBY_ENV] = "1"
        stdout = subprocess.DEVNULL
        if spec.log_dir is not None:
            Path(spec.log_dir).mkdir(parents=True, exist_ok=True)
            stdout = open(Path(spec.log_dir) / f"{spec.name}.log", "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(list(spec.argv), stdout=stdout, stderr=subprocess.PIPE, env=env)

    def _spawn(self, state: _NodeState) -> None:
        spec = state.spec
        state.process = self._popen(spec, standby=False)
        state.started_at = time.monotonic()
        state.reader = threading.Thread(
            target=self._drain, args=(state.spec, state.process, state.stderr_tail, None), daemon=True,
            name=f"log-{spec.name}",
        )  # fmt: skip
        state.reader.start()
        if spec.standby and state.standby is None:
            state.standby_due = time.monotonic() + self._standby_delay
        self._record(spec.name, "started", f"started pid {state.process.pid}")

    def _spawn_standby(self, state: _NodeState) -> None:
        spec = state.spec
        process = self._popen(spec, standby=True)
        tail: collections.deque = collections.deque(maxlen=200)
        ready = threading.Event()
        reader = threading.Thread(
            target=self._drain,
            args=(spec, process, tail, ready),
            daemon=True,
            name=f"log-{spec.name}-standby",
        )
        reader.start()
        state.standby = _Standby(process, tail, reader, ready)
        state.standby_due = None
        self._record(spec.name, "standby", f"standby started pid {process.pid}")

    def _promote(self, state: _NodeState) -> bool:
        """Make the ready standby the node's process (SIGUSR1); False when there is none ready."""
        standby, state.standby = state.standby, None
        if standby is None:
            return False
        if standby.process.poll() is not None or not standby.ready.is_set():
            self._discard(standby)
            return False
        standby.process.send_signal(PROMOTE_SIGNAL)
        state.process, state.stderr_tail, state.reader = standby.process, standby.stderr_tail, standby.reader
        state.started_at = time.monotonic()
        state.standby_due = time.monotonic() + self._standby_delay
        return True

    @staticmethod
    def _discard(standby: _Standby) -> None:
        if standby.process.poll() is None:
            standby.process.kill()
            standby.process.wait(timeout=5)

    def _drain(
        self,
        spec: NodeSpec,
        process: subprocess.Popen,
        tail: collections.deque,
        ready: threading.Event | None,
    ) -> None:
        log_file = None
        if spec.log_dir is not None:
            log_file = open(Path(spec.log_dir) / f"{spec.name}.err", "ab")  # noqa: SIM115
        try:
            for line in iter(process.stderr.readline, b""):
                text = line.decode(errors="replace").rstrip()
                tail.append(text)
                if ready is not None and text.endswith(STANDBY_READY):
                    ready.set()
                if log_file is not None:
                    log_file.write(line)
                    log_file.flush()
        finally:
            if log_file is not None:
                log_file.close()

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_interval):
            for state in self._nodes.values():
                self._keep_standby(state)
                code = state.process.poll() if state.process else None
                if code is None or state.failed or state.finished:
                    continue
                if self._stop.is_set():
                    return
                if code == 0 and not state.spec.restart:
                    state.finished = True
                    self._record(state.spec.name, "finished", "exited with code 0", level=logging.INFO)
                    continue
                if state.reader is not None:
                    state.reader.join(timeout=0.5)  # the last lines of stderr say why
                reason = exit_reason(code, list(state.stderr_tail))
                if state.spec.restart and state.restarts < state.spec.max_restarts:
                    state.restarts += 1
                    how = "standby promoted" if self._promote(state) else "restarting"
                    self._record(
                        state.spec.name,
                        "restarting",
                        f"{reason}; {how} ({state.restarts}/{state.spec.max_restarts})",
                        level=logging.WARNING,
                    )
                    if how == "restarting":
                        state.stderr_tail = collections.deque(maxlen=200)
                        self._spawn(state)
                else:
                    state.failed = True
                    self._record(state.spec.name, "failed", f"{reason}; not restarted", level=logging.ERROR)

    def _keep_standby(self, state: _NodeState) -> None:
        standby = state.standby
        if standby is not None and standby.process.poll() is not None:
            reason = exit_reason(standby.process.returncode, list(standby.stderr_tail))
            state.standby = None
            state.standby_failures += 1
            again = state.standby_failures <= state.spec.max_restarts
            self._record(
                state.spec.name, "standby", f"standby {reason}" + ("" if again else "; no more standbys"),
                level=logging.WARNING,
            )  # fmt: skip
            state.standby_due = time.monotonic() + self._standby_delay if again else None
        due = state.standby_due
        if due is None or time.monotonic() < due or state.failed or self._stop.is_set():
            return
        if not any(
            s.standby is not None and s.standby.warming(STANDBY_WARMUP_LIMIT_S) for s in self._nodes.values()
        ):
            self._spawn_standby(state)

    def _record(self, node: str, kind: str, what: str, level: int = logging.INFO) -> None:
        self.events.append((time.monotonic(), node, what))
        logger.log(level, "node %s %s", node, what)
        if self._on_event is not None:
            try:
                self._on_event(node, kind, what)
            except Exception:  # a session-event sink must not stop supervision
                logger.exception("supervisor event callback failed")
