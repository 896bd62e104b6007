"""``StreamReader``: one regular LSL stream into a :class:`~realtime.ringbuffer.RingBuffer`, watched."""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Iterable

import numpy as np
import pylsl

from brainstream.models.channels import DEFAULT_MAX_MISSING, match_channels
from brainstream.models.device_profile import DeviceProfile
from brainstream.realtime.acquisition._inlet import InletReader
from brainstream.realtime.acquisition.alarms import GAP, NONFINITE, STALLED
from brainstream.realtime.acquisition.stats import (
    COUNTER_GAP,
    RECONNECT_GAP,
    TIMESTAMP_GAP,
    AcquisitionStats,
    Gap,
    counter_gaps,
    timestamp_gaps,
)
from brainstream.realtime.lsl_info import LSL_TO_MNE_TYPE, channels_from_info
from brainstream.realtime.ringbuffer import RingBuffer

log = logging.getLogger(__name__)

DEFAULT_FLAGS = ("clocksync", "dejitter")
MIN_STALL_S = 0.5
STALL_CHUNKS = 5


class StreamMismatchError(ValueError):
    """The stream does not match the configured device profile (channel count, rate or names)."""


class StreamReader(InletReader):
    """Read one regular LSL stream into a ring buffer in a background thread.

    Parameters
    ----------
    name, stype, source_id : str | None
        Which stream to read (at least one). Exactly one stream must match within ``timeout``.
    profile : DeviceProfile | None
        Expected device: the stream must carry its channels (CTF names match without their system suffix;
        more channels are fine, at most ``max_missing`` of them may be absent); otherwise
        :class:`StreamMismatchError` at connect, naming the missing ones. A stream of unlabelled channels
        must have exactly the profile's count. Another rate than the profile's is logged (the decoder
        resamples).
    buffer_seconds : float
        Ring-buffer length in seconds of signal.
    processing_flags : int | sequence of str | None
        liblsl post-processing: names from ``clocksync``, ``dejitter``, ``monotonize``, ``threadsafe``
        (or ``"all"``), or a ``pylsl.proc_*`` int. Default clock sync + dejitter. Used exactly as given.
    counter_channel : str | None
        Name of a sample-counter channel; defaults to the profile's ``counter_channel``. Enables counter
        gap detection. The counter stays in the buffer (see :attr:`data_picks`).
    timeout : float
        Seconds to wait when resolving and opening the stream.
    stall_timeout : float | None
        Seconds without samples before the ``stalled`` alarm. Default: 0.8 x max(0.5 s, 5 chunk periods),
        with the chunk period learnt from the stream, so the alarm fires within max(0.5 s, 5 chunk periods).
    reconnect : bool
        Reconnect to a returning outlet with the same source_id (default True).
    max_buflen : int
        liblsl inlet buffer in seconds.
    dtype : numpy dtype
        Ring-buffer sample type (float32).
    max_missing : float
        Fraction of the profile's channels the stream may lack.

    Examples
    --------
    >>> with StreamReader(name="eeg", profile=load_device_profile("eeg64_1000hz")) as reader:
    ...     data, ts = reader.buffer.read_last(1000)
    """

    _thread_name = "stream-reader"

    def __init__(
        self,
        name: str | None = None,
        stype: str | None = None,
        source_id: str | None = None,
        profile: DeviceProfile | None = None,
        buffer_seconds: float = 10.0,
        processing_flags: int | str | Iterable[str] | None = DEFAULT_FLAGS,
        *,
        counter_channel: str | None = None,
        timeout: float = 5.0,
        stall_timeout: float | None = None,
        reconnect: bool = True,
        max_buflen: int = 30,
        dtype: np.dtype | type = np.float32,
        max_missing: float = DEFAULT_MAX_MISSING,
    ) -> None:
        super().__init__(
            name,
            stype,
            source_id,
            timeout=timeout,
            processing_flags=processing_flags,
            max_buflen=max_buflen,
            reconnect=reconnect,
        )
        if buffer_seconds <= 0:
            raise ValueError(f"buffer_seconds must be > 0, got {buffer_seconds}")
        if stall_timeout is not None and stall_timeout <= 0:
            raise ValueError(f"stall_timeout must be > 0 seconds, got {stall_timeout}")
        self.profile = profile
        self.max_missing = float(max_missing)
        self.buffer_seconds = float(buffer_seconds)
        self._counter_name = counter_channel or (profile.counter_channel if profile else None)
        self._stall_timeout_fixed = stall_timeout
        self._dtype = np.dtype(dtype)
        self.buffer: RingBuffer | None = None
        self._ch_names: list[str] = []
        self._ch_types: list[str] = []
        self._units: list[str] = []
        self._sfreq = 0.0
        self._counter_idx: int | None = None
        self._mne_info = None
        self._pull_buf: np.ndarray | None = None
        self._watchdog: threading.Thread | None = None
        self._returning: pylsl.StreamInfo | None = None
        self._gaps: deque[Gap] = deque(maxlen=10_000)
        self._gap_lock = threading.Lock()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._samples = 0
        self._chunks = 0
        self._n_gaps = 0
        self._missing = 0
        self._counter_gaps = 0
        self._regressions = 0
        self._ts_jumps = 0
        self._nan_samples = 0
        self._stalled = False
        self._stalls = 0
        self._last_ts: float | None = None
        self._last_counter: int | None = None
        self._last_receive = float("nan")
        self._started_at = pylsl.local_clock()
        self._samples_per_pull = 1.0
        self._rate_hist: deque[tuple[float, int]] = deque()

    # ------------------------------------------------------------------ description
    @property
    def ch_names(self) -> list[str]:
        """Channel names in stream order (counter channel included)."""
        self._require_info()
        return list(self._ch_names)

    @property
    def ch_types(self) -> list[str]:
        """LSL channel types (``"MEG"``, ``"EEG"``, ``"COUNTER"``...) in stream order."""
        self._require_info()
        return list(self._ch_types)

    @property
    def units(self) -> list[str]:
        self._require_info()
        return list(self._units)

    @property
    def sfreq(self) -> float:
        """Nominal sampling rate in Hz."""
        self._require_info()
        return self._sfreq

    @property
    def counter_index(self) -> int | None:
        """Row of the counter channel in the buffer, or None."""
        return self._counter_idx

    @property
    def data_picks(self) -> np.ndarray:
        """Rows of the signal channels (all but the counter channel)."""
        self._require_info()
        return np.array([i for i in range(len(self._ch_names)) if i != self._counter_idx], dtype=np.intp)

    @property
    def info(self):
        """An ``mne.Info`` with the stream's channel names, types and rate (built on first use)."""
        self._require_info()
        if self._mne_info is None:
            import mne

            types = [LSL_TO_MNE_TYPE.get(t.upper(), "misc") for t in self._ch_types]
            if self._counter_idx is not None:
                types[self._counter_idx] = "misc"
            self._mne_info = mne.create_info(list(self._ch_names), self._sfreq, types)
        return self._mne_info

    @property
    def gaps(self) -> list[Gap]:
        """Gaps recorded so far (most recent 10 000), oldest first."""
        with self._gap_lock:
            return list(self._gaps)

    @property
    def stall_timeout(self) -> float:
        """Seconds without samples before the ``stalled`` alarm."""
        if self._stall_timeout_fixed is not None:
            return self._stall_timeout_fixed
        chunk_period = self._samples_per_pull / self._sfreq if self._sfreq > 0 else 0.0
        return 0.8 * max(MIN_STALL_S, STALL_CHUNKS * chunk_period)

    @property
    def stats(self) -> AcquisitionStats:
        """A snapshot of the counters (see :class:`~realtime.acquisition.stats.AcquisitionStats`)."""
        now = pylsl.local_clock()
        return AcquisitionStats(
            samples=self._samples,
            chunks=self._chunks,
            effective_rate=self._effective_rate(),
            gaps=self._n_gaps,
            missing_samples=self._missing,
            counter_gaps=self._counter_gaps,
            timestamp_jumps=self._ts_jumps,
            timestamp_regressions=self._regressions,
            restamped_samples=self._deduced.restamped,
            nan_samples=self._nan_samples,
            stalled=self._stalled,
            stalls=self._stalls,
            lost=self._lost,
            reconnects=self._reconnects,
            time_since_last_sample=now - self._last_receive,
            clock_offset=self._clock_offset,
            last_timestamp=self._last_ts if self._last_ts is not None else float("nan"),
            stall_timeout=self.stall_timeout,
        )

    def _effective_rate(self) -> float:
        """Samples per second of arrival time over the last ~5 s."""
        if not self._rate_hist:
            return float("nan")
        t0, n0 = self._rate_hist[0]
        t1, n1 = self._last_receive, self._samples
        return (n1 - n0) / (t1 - t0) if t1 - t0 > 0.2 else float("nan")

    # ------------------------------------------------------------------ connect
    def _on_connect(self, full: pylsl.StreamInfo) -> None:
        sfreq = full.nominal_srate()
        if sfreq <= 0:
            raise ValueError(
                f"stream '{full.name()}' is irregular (rate 0); read marker/event streams with MarkerReader"
            )
        if full.channel_format() == pylsl.cf_string:
            raise ValueError(f"stream '{full.name()}' carries strings; read it with MarkerReader")
        desc = channels_from_info(full)
        names, types, units = list(desc.names), list(desc.types), list(desc.units)
        labelled = names != [str(i) for i in range(len(names))]
        if self.profile is not None:
            names, types, units = self._check_profile(full, names, types, units, labelled)
        counter_idx = None
        if self._counter_name is not None:
            if self._counter_name not in names:
                raise StreamMismatchError(
                    f"counter channel '{self._counter_name}' is not among the {len(names)} channels of "
                    f"stream '{full.name()}' (last ones: {names[-3:]}); fix counter_channel or the profile"
                )
            counter_idx = names.index(self._counter_name)
            types[counter_idx] = "COUNTER"
        n_ch = full.channel_count()
        capacity = max(1, math.ceil(self.buffer_seconds * sfreq))
        if self.buffer is None or self.buffer.n_channels != n_ch or self.buffer.capacity != capacity:
            self.buffer = RingBuffer(n_ch, capacity, dtype=self._dtype)
        self._ch_names, self._ch_types, self._units = names, types, units
        self._sfreq = float(sfreq)
        self._counter_idx = counter_idx
        self._mne_info = None
        self._lost = False
        # one pull takes at most 1 s of samples (enough to see a slow device's whole chunk, which the stall
        # threshold learns from); the loop pulls again at once if more are waiting
        max_chunk = max(32, math.ceil(sfreq))
        self._pull_buf = np.empty((max_chunk, n_ch), dtype=_numpy_dtype(full.channel_format()))
        self._started_at = pylsl.local_clock()

    def _check_profile(self, full, names, types, units, labelled):
        prof = self.profile
        expected = list(prof.channels)
        counter = self._counter_name
        n_expected = len(expected) + (1 if counter and counter not in expected else 0)
        what = f"device profile '{prof.name}' expects {n_expected} channels ({len(expected)} signal channels"
        what += f" + counter '{counter}')" if n_expected > len(expected) else ")"
        if not math.isclose(full.nominal_srate(), prof.sfreq, rel_tol=1e-9):
            # the decoder's causal preprocessor resamples to the model rate, or refuses a ratio it cannot
            log.warning(
                "stream '%s' runs at %g Hz, device profile '%s' at %g Hz: the decoder resamples",
                full.name(),
                full.nominal_srate(),
                prof.name,
                prof.sfreq,
            )
        if labelled:
            # a real acquisition streams more (references, stim, EEG, misc): the profile's channels are
            # picked by name downstream; here the stream only has to carry (nearly) all of them
            missing = match_channels(names, expected, max_missing=1.0).missing
            if len(missing) > self.max_missing * len(expected):
                shown = ", ".join(missing[:20]) + (f" … ({len(missing)} in all)" if len(missing) > 20 else "")
                raise StreamMismatchError(
                    f"stream '{full.name()}' ({len(names)} channels) lacks {len(missing)} of the "
                    f"{len(expected)} channels of device profile '{prof.name}' (at most "
                    f"{self.max_missing:.0%} may be missing): {shown}. Select the right stream or device "
                    "profile, or raise the allowed fraction of missing sensors."
                )
            return names, types, units
        if full.channel_count() != n_expected:
            raise StreamMismatchError(
                f"stream '{full.name()}' has {full.channel_count()} unlabelled channels but {what}. "
                "Select the right stream or device profile, or label the stream's channels."
            )
        # no labels in the stream: trust the profile's order (counter last) and say so
        log.warning(
            "stream '%s' has no channel labels; using device profile '%s' names", full.name(), prof.name
        )
        names = expected + ([counter] if n_expected > len(expected) else [])
        types = [prof.modality.upper()] * len(expected) + (["COUNTER"] if n_expected > len(expected) else [])
        units = [prof.unit] * len(expected) + ([""] if n_expected > len(expected) else [])
        return names, types, units

    # ------------------------------------------------------------------ pulling
    def _pull(self) -> bool:
        buf = self._pull_buf
        data, ts = self._inlet.pull_chunk(
            timeout=0.05, max_samples=buf.shape[0], dest_obj=buf, min_samples=1, as_numpy=True
        )
        if ts.shape[0] == 0:
            return False
        settled = self._settle_start(data, ts, self._sfreq)
        if settled is not None:
            self._ingest(*settled)
        return True

    def _ingest(self, data: np.ndarray, ts: np.ndarray) -> None:
        """Check one chunk (n, n_ch) for gaps and non-finite values, then write it to the buffer."""
        now = pylsl.local_clock()
        n = ts.shape[0]
        index0 = self.buffer.n_written
        found: dict[int, tuple[int, str]] = {}
        gap_pos, regress = timestamp_gaps(ts, self._last_ts, 1.0 / self._sfreq)
        self._ts_jumps += int(gap_pos.size)
        counter = None
        if self._counter_idx is not None:
            # the counter is the ground truth: a timestamp jump with a contiguous counter is timing jitter
            # (e.g. liblsl's dejitter settling), not lost data
            counter = data[:, self._counter_idx]
            cpos, cmiss = counter_gaps(counter, self._last_counter)
            for p, m in zip(cpos, cmiss, strict=True):
                found[int(p)] = (int(m), COUNTER_GAP)
        else:
            for p in gap_pos:
                t_before = self._last_ts if p == 0 else ts[p - 1]
                found[int(p)] = (round((ts[p] - t_before) * self._sfreq) - 1, TIMESTAMP_GAP)
        if self._reconnect_pending and self._last_ts is not None:
            # a continuing counter says exactly what was missed; a restarted one cannot
            miss = round((ts[0] - self._last_ts) * self._sfreq) - 1
            if counter is not None and self._last_counter is not None:
                by_counter = int(np.rint(counter[0])) - self._last_counter - 1
                miss = by_counter if by_counter >= 0 else miss
            found[0] = (miss, RECONNECT_GAP)
        self._reconnect_pending = False
        if found:
            self._counter_gaps += sum(kind == COUNTER_GAP for _, kind in found.values())
            self._record_gaps(found, index0, ts)
        self._regressions += int(regress.size)
        if data.dtype.kind == "f":
            finite = np.isfinite(data).all(axis=1)
            n_bad = n - int(np.count_nonzero(finite))
            if n_bad:
                self._nan_samples += n_bad
                self._alarms.raise_(
                    NONFINITE, f"{n_bad} samples with NaN/Inf in stream '{self.name}'", transient=True
                )
        self.buffer.write(data.T, ts)
        self._samples += n
        self._chunks += 1
        self._last_ts = float(ts[-1])
        if counter is not None:
            self._last_counter = int(np.rint(counter[-1]))
        self._last_receive = now
        # running mean over the first pulls, then an exponential average (the chunk size a device uses)
        self._samples_per_pull += max(0.05, 1.0 / self._chunks) * (n - self._samples_per_pull)
        if not self._rate_hist or now - self._rate_hist[-1][0] >= 0.25:
            # (arrival time, samples so far): the rate counts what arrived after that time
            self._rate_hist.append((now, self._samples))
            while now - self._rate_hist[0][0] > 5.0:
                self._rate_hist.popleft()
        if self._stalled:
            self._stalled = False
            self._alarms.clear(STALLED, f"stream '{self.name}' flowing again")

    def _record_gaps(self, found: dict[int, tuple[int, str]], index0: int, ts: np.ndarray) -> None:
        with self._gap_lock:
            for p in sorted(found):
                miss, kind = found[p]
                t_before = self._last_ts if p == 0 else float(ts[p - 1])
                if t_before is None:
                    continue
                self._gaps.append(Gap(index0 + p, t_before, float(ts[p]), int(miss), kind))
                self._n_gaps += 1
                self._missing += max(0, int(miss))
            if not self._gaps:
                return
            last = self._gaps[-1]
        self._alarms.raise_(
            GAP,
            f"{last.kind} gap in stream '{self.name}': {last.n_missing} samples missing before "
            f"t={last.t_after:.3f} (total {self._n_gaps} gaps)",
            transient=True,
        )

    # ------------------------------------------------------------------ watchdog
    def _start_extra_threads(self) -> None:
        self._last_receive = pylsl.local_clock()  # the stall clock starts at start()
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog:{self.name}", daemon=True)
        self._watchdog.start()

    def _threads(self) -> list[threading.Thread]:
        return super()._threads() + ([self._watchdog] if self._watchdog is not None else [])

    def _watch(self) -> None:
        """Raise ``stalled`` when no chunk has come for ``stall_timeout`` (not LSL's 15 s watchdog)."""
        while not self._stop.wait(max(0.01, self.stall_timeout / 8)):
            silent = pylsl.local_clock() - self._last_receive
            if silent > self.stall_timeout and not self._stalled:
                self._stalled = True
                self._stalls += 1
                self._alarms.raise_(
                    STALLED,
                    f"stream '{self.name}' stalled: no samples for {silent:.2f} s "
                    f"(threshold {self.stall_timeout:.2f} s)",
                )
            if self._stalled and self._inlet is not None and self._returning is None:
                # the silent outlet may have been replaced by a new one with the same source_id (a restarted
                # device on a host whose old connection has not broken yet); the reader thread switches
                self._returning = self._find_returning(require_new=True)

    def _on_idle(self, now: float) -> None:
        info, self._returning = self._returning, None
        if info is not None and self._stalled and self._inlet is not None:
            self._switch_to(info)

    def __repr__(self) -> str:
        state = "running" if self.running else ("connected" if self.connected else "not connected")
        return f"<StreamReader '{self.name}' {state}, {self._samples} samples>"


def _numpy_dtype(channel_format: int) -> np.dtype:
    return np.dtype(
        {
            pylsl.cf_float32: np.float32,
            pylsl.cf_double64: np.float64,
            pylsl.cf_int8: np.int8,
            pylsl.cf_int16: np.int16,
            pylsl.cf_int32: np.int32,
            pylsl.cf_int64: np.int64,
        }[channel_format]
    )
