"""LSL clock offsets between the hosts of a split session.

Every trace time stays in the LSL clock (``pylsl.local_clock()``) of the host that stamped it. To compare two
stamps from different hosts, one is mapped into the other's clock with LSL's own clock-offset estimate
(``time_correction``, NTP-like probes, with an uncertainty of about half the best round trip). For that,
each host of a split session runs a :class:`ClockBeacon` (``brainstream live`` does): an LSL outlet that
never sends a sample, only answers time probes. :class:`HostClocks` finds the beacons of the other hosts and
keeps their offsets to this host current.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass

import pylsl

from brainstream.realtime.bus.host import host_name

logger = logging.getLogger(__name__)

CLOCK_STREAM_TYPE = "brainstream-clock"


class ClockBeacon:
    """An LSL outlet named after this host whose only job is to answer other hosts' clock probes."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or host_name()
        info = pylsl.StreamInfo(
            f"brainstream-clock-{self.host}",
            CLOCK_STREAM_TYPE,
            1,
            pylsl.IRREGULAR_RATE,
            pylsl.cf_int8,
            f"brainstream-clock@{self.host}",
        )
        info.desc().append_child_value("host", self.host)
        self._outlet: pylsl.StreamOutlet | None = pylsl.StreamOutlet(info)

    def close(self) -> None:
        self._outlet = None  # pylsl destroys the outlet with its last reference

    def __enter__(self) -> ClockBeacon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ClockOffset:
    """How to read one host's LSL times here: ``t_here = t_there + offset_s`` (± ``uncertainty_s``)."""

    host: str
    offset_s: float
    uncertainty_s: float
    n: int = 1

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "offset_ms": self.offset_s * 1e3,
            "uncertainty_ms": self.uncertainty_s * 1e3,
            "n": self.n,
        }


def elapsed_ms(
    clocks: HostClocks | None, host_a: str | None, t_a: float, host_b: str | None, t_b: float
) -> float | None:
    """``t_b - t_a`` in ms where each time is in the LSL clock of its host: directly within one host,
    else through both hosts' offsets to this one; None when a host or an offset is not known."""
    if host_a is not None and host_a == host_b:
        return (t_b - t_a) * 1e3
    if clocks is None or host_a is None or host_b is None:
        return None
    off_a, off_b = clocks.offset(host_a), clocks.offset(host_b)
    if off_a is None or off_b is None:
        return None
    return ((t_b + off_b.offset_s) - (t_a + off_a.offset_s)) * 1e3


def time_correction_ex(inlet: pylsl.StreamInlet, timeout: float) -> tuple[float, float]:
    """``(offset_s, uncertainty_s)`` of an inlet's source clock (liblsl's ``lsl_time_correction_ex``)."""
    fn = pylsl.util.lib.lsl_time_correction_ex
    fn.restype = ctypes.c_double
    remote, uncertainty, errcode = ctypes.c_double(), ctypes.c_double(), ctypes.c_int32()
    offset = fn(
        inlet.obj,
        ctypes.byref(remote),
        ctypes.byref(uncertainty),
        ctypes.c_double(timeout),
        ctypes.byref(errcode),
    )
    pylsl.util.handle_error(errcode)
    return float(offset), float(uncertainty.value)


class HostClocks:
    """Clock offsets of the other hosts' beacons to this host, refreshed in a background thread.

    Parameters
    ----------
    local_host : str | None
        This host's name (:func:`brainstream.realtime.bus.host.host_name` by default); its offset is
        exactly 0.
    period_s : float
        Seconds between refreshes (LSL keeps re-probing in between; a refresh also finds new hosts).
    """

    def __init__(self, local_host: str | None = None, period_s: float = 2.0) -> None:
        self.local_host = local_host or host_name()
        self.period_s = period_s
        self._inlets: dict[str, pylsl.StreamInlet] = {}
        self._offsets: dict[str, ClockOffset] = {}
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HostClocks:
        self._thread = threading.Thread(target=self._run, name="host-clocks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        self._inlets.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh(timeout=0.5)
            except Exception as exc:  # noqa: BLE001 - a flaky network must not end the thread
                logger.warning("clock offsets not refreshed: %s", exc)
            self._stop.wait(self.period_s)

    def refresh(self, timeout: float = 1.0) -> None:
        """Find new beacons and measure each known host's offset once more."""
        for info in pylsl.resolve_byprop("type", CLOCK_STREAM_TYPE, minimum=0, timeout=timeout):
            host = info.desc().child_value("host") or info.source_id().partition("@")[2]
            if host and host != self.local_host and host not in self._inlets:
                self._inlets[host] = pylsl.StreamInlet(info)
        for host, inlet in list(self._inlets.items()):
            try:
                offset, uncertainty = time_correction_ex(inlet, timeout)
            except (pylsl.util.TimeoutError, pylsl.util.LostError, TimeoutError) as exc:
                # one slow probe on a busy host is normal; say so when it keeps failing
                self._failures[host] = self._failures.get(host, 0) + 1
                if self._failures[host] == 3:
                    logger.warning("no clock offset for host %s (3 tries): %s", host, exc)
                continue
            self._failures[host] = 0
            with self._lock:
                n = self._offsets[host].n + 1 if host in self._offsets else 1
                self._offsets[host] = ClockOffset(host, offset, uncertainty, n)

    def offset(self, host: str) -> ClockOffset | None:
        """The offset of ``host`` to this one (exactly 0 for this host), None while unknown."""
        if host == self.local_host:
            return ClockOffset(host, 0.0, 0.0, 0)
        with self._lock:
            return self._offsets.get(host)

    def summary(self) -> dict[str, dict]:
        with self._lock:
            return {host: o.as_dict() for host, o in sorted(self._offsets.items())}
