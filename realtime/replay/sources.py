"""Recordings as sources of time-stamped blocks for the replay player.

A source describes its streams (:class:`StreamSpec`) and hands out :class:`Block` objects: for a span of
source time, the samples of every stream with their times in seconds from the start of the recording.
The player slices blocks into pushes; it never needs the whole file in memory.

- :class:`RawSource`: anything ``mne.io.read_raw`` reads (FIF, EDF, BDF, BrainVision, EEGLAB, CTF...),
  opened with ``preload=False`` and read block by block; annotations become string markers stamped at
  their sample, descriptions unchanged; when asked, so do the events of a stim channel (``mne.find_events``,
  the trigger value as text). A BIDS recording is opened through mne-bids, whose annotations come
  from ``events.tsv``.
- :class:`XdfSource`: every stream of an XDF file (pyxdf, clock-synchronised), relative timing kept.
  Files of 256 MB and more are streamed from disk instead by
  :class:`realtime.replay.xdf_stream.StreamingXdfSource`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from brainstream.realtime.replay.blocks import Block, StreamSpec, UnsupportedRecordingError

logger = logging.getLogger(__name__)

# largest recording read whole when reading it in blocks would change its values (see _block_reads_exact)
_WHOLE_READ_BYTES = 2 * 1024**3
# FIFF unit code -> LSL unit string
_FIFF_UNITS = {112: "T", 201: "T/m", 107: "V", 202: "Am", 108: "K"}


def supported_formats() -> list[str]:
    """File endings replay accepts (everything ``mne.io.read_raw`` reads, plus XDF and BIDS)."""
    from mne.io._read_raw import _get_supported

    return sorted({*_get_supported(), ".xdf", ".xdfz"})


class RawSource:
    """An ``mne.io.Raw`` read block by block (``preload=False``), its annotations as markers.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        An unloaded raw (the data stay on disk).
    name : str
        Signal outlet name; markers go to ``<name>-markers``.
    source_id : str
        Signal source id (markers: ``<source_id>-markers``).
    markers : bool
        Replay annotations as a marker stream.
    channel_format : str | None
        ``"float32"`` or ``"double64"``; default from the file's own sample format, so that values reach
        the stream unchanged (float32 for single-precision FIF, double64 otherwise).
    events_from_stim : str | None
        Also turn the events of a stim channel into markers: a channel name, or ``"auto"`` (see
        :func:`stim_channel`). A channel that never changes gives no markers and a warning.
    """

    def __init__(
        self,
        raw,
        *,
        name: str,
        source_id: str = "",
        markers: bool = True,
        channel_format: str | None = None,
        events_from_stim: str | None = None,
    ) -> None:
        from brainstream.realtime.lsl_info import MNE_TO_LSL_TYPE

        if not raw.preload and not _block_reads_exact(raw):
            size = raw.n_times * len(raw.ch_names) * 8
            if size <= _WHOLE_READ_BYTES:
                # EDF/BDF/GDF channels stored at lower rates are upsampled over what is read: only a whole
                # read gives the values mne gives for the file
                logger.info("%s: block reads differ from a whole read; reading it whole", _describe(raw))
                raw.load_data(verbose="error")
            else:
                logger.warning(
                    "%s: block reads change the values of its lower-rate channels slightly at block edges, "
                    "and it is too large (%.1f GB) to read whole", _describe(raw), size / 1e9
                )  # fmt: skip
        self.raw = raw
        self.sfreq = float(raw.info["sfreq"])
        self.n_samples = int(raw.n_times)
        self.duration = self.n_samples / self.sfreq
        if channel_format is None:
            channel_format = "float32" if getattr(raw, "orig_format", "double") == "single" else "double64"
        types = raw.get_channel_types()
        signal = StreamSpec(
            name=name,
            stype=_stream_type(types),
            ch_names=tuple(raw.ch_names),
            sfreq=self.sfreq,
            channel_format=channel_format,
            ch_types=tuple(MNE_TO_LSL_TYPE.get(t, "MISC") for t in types),
            units=tuple(_FIFF_UNITS.get(int(ch["unit"]), "") for ch in raw.info["chs"]),
            source_id=source_id,
        )
        self.streams = [signal]
        self._dtype = np.float32 if channel_format == "float32" else np.float64
        self.marker_samples, self.marker_values = _annotation_samples(raw)
        if events_from_stim is not None and markers:
            stim_samples, stim_values = stim_event_samples(raw, events_from_stim)
            samples = np.concatenate([self.marker_samples, stim_samples])
            order = np.argsort(samples, kind="stable")
            self.marker_samples = samples[order]
            self.marker_values = np.concatenate([self.marker_values, stim_values])[order]
        self.has_markers = markers and self.marker_samples.size > 0
        if markers and not self.has_markers:
            what = "annotations nor stim events" if events_from_stim is not None else "annotations"
            logger.warning("%s has no %s: no marker outlet", _describe(raw), what)
        if self.has_markers:
            mid = f"{source_id}-markers" if source_id else ""
            self.streams.append(
                StreamSpec(f"{name}-markers", "Markers", ("marker",), 0.0, "string", ("MARKERS",), ("",), mid)
            )

    def blocks(self, start: float, stop: float, block_s: float = 1.0) -> Iterator[Block]:
        """Blocks covering ``[start, stop)`` seconds; each is read from disk when asked for."""
        s0 = int(round(start * self.sfreq))
        s1 = min(self.n_samples, int(round(stop * self.sfreq)))
        step = max(1, int(round(block_s * self.sfreq)))
        for i0 in range(s0, s1, step):
            i1 = min(i0 + step, s1)
            data = self.raw.get_data(start=i0, stop=i1).astype(self._dtype, copy=False)
            values: list = [data]
            times = [np.arange(i0, i1) / self.sfreq]
            if self.has_markers:
                sel = (self.marker_samples >= i0) & (self.marker_samples < i1)
                values.append([[v] for v in self.marker_values[sel]])
                times.append(self.marker_samples[sel] / self.sfreq)
            yield Block(i0 / self.sfreq, i1 / self.sfreq, values, times)

    def close(self) -> None:
        self.raw.close()


class XdfSource:
    """Every stream of an XDF file, clock-synchronised by pyxdf, times relative to the earliest sample."""

    def __init__(
        self, path: str | Path, *, rename_first_signal: str | None = None, markers: bool = True
    ) -> None:
        import pyxdf

        streams, _ = pyxdf.load_xdf(str(path), verbose=False)
        streams = [s for s in streams if len(s["time_stamps"]) and (markers or _fmt(s) != "string")]
        if not streams:
            raise UnsupportedRecordingError(f"{path} holds no samples in any stream; nothing to replay")
        self.t_ref = min(float(s["time_stamps"][0]) for s in streams)
        self.streams: list[StreamSpec] = []
        self._values: list = []
        self._times: list[np.ndarray] = []
        renamed = False
        for s in streams:
            info = s["info"]
            fmt = _fmt(s)
            name = info["name"][0]
            sfreq = float(info["nominal_srate"][0])
            if rename_first_signal and not renamed and fmt != "string" and sfreq > 0:
                name, renamed = rename_first_signal, True
            n_ch = int(info["channel_count"][0])
            labels, types, units = _xdf_channels(info, n_ch)
            self.streams.append(
                StreamSpec(name, info["type"][0], labels, sfreq, fmt, types, units, _first(info, "source_id"))
            )
            t = np.asarray(s["time_stamps"], dtype=float) - self.t_ref
            order = np.argsort(t, kind="stable")
            self._times.append(t[order])
            if fmt == "string":
                self._values.append([list(s["time_series"][i]) for i in order])
            else:
                self._values.append(np.asarray(s["time_series"]).T[:, order])
        self.duration = max(float(t[-1]) for t in self._times) + max(
            (1.0 / sp.sfreq for sp in self.streams if sp.sfreq > 0), default=0.0
        )
        self.sfreq = max((sp.sfreq for sp in self.streams), default=0.0)
        self.has_markers = any(sp.is_markers for sp in self.streams)

    def blocks(self, start: float, stop: float, block_s: float = 1.0) -> Iterator[Block]:
        t = start
        while t < stop:
            t1 = min(t + block_s, stop)
            values, times = [], []
            for v, ts in zip(self._values, self._times, strict=True):
                a, b = np.searchsorted(ts, [t, t1], side="left")
                values.append(v[a:b] if isinstance(v, list) else v[:, a:b])
                times.append(ts[a:b])
            yield Block(t, t1, values, times)
            t = t1

    def close(self) -> None:
        pass


def open_recording(
    path: str | Path,
    *,
    name: str | None = None,
    source_id: str | None = None,
    markers: bool = True,
    events_from_stim: str | None = None,
) -> RawSource | XdfSource:
    """Open any supported recording as a replay source.

    ``name`` names the signal outlet (default: the file's stem; XDF streams keep their own names unless
    ``name`` is given, which renames the first regularly sampled stream). ``events_from_stim`` (a stim
    channel, or ``"auto"``) adds that channel's events to the markers; XDF files carry their markers as
    streams already and refuse it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no recording at {path}")
    suffixes = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() in (".xdf", ".xdfz") or suffixes == ".xdf.gz":
        if events_from_stim is not None:
            raise ValueError(
                f"events_from_stim applies to recordings with stim channels (FIF, CTF, EDF...), not to the "
                f"XDF file {path.name}, whose markers are streams of their own: leave it out"
            )
        from brainstream.realtime.replay.xdf_stream import (
            STREAMING_THRESHOLD_BYTES,
            NeedsFullLoadError,
            StreamingXdfSource,
        )

        if path.suffix.lower() == ".xdf" and path.stat().st_size >= STREAMING_THRESHOLD_BYTES:
            try:
                return StreamingXdfSource(path, rename_first_signal=name, markers=markers)
            except NeedsFullLoadError as exc:
                logger.warning("%s; loading the whole file with pyxdf instead", exc)
        try:
            return XdfSource(path, rename_first_signal=name, markers=markers)
        except UnsupportedRecordingError:
            raise
        except Exception as exc:
            raise UnsupportedRecordingError(
                f"{path} could not be read as XDF ({exc}). Replay reads XDF, BIDS recordings and every "
                f"format mne.io.read_raw reads: {', '.join(supported_formats())}"
            ) from exc
    raw = _read_raw(path)
    stem = path.name.split(".")[0]
    name = name or stem
    return RawSource(
        raw,
        name=name,
        source_id=source_id or f"brainstream-replay:{name}",
        markers=markers,
        events_from_stim=events_from_stim,
    )


def _read_raw(path: Path):
    import mne

    bids = _bids_path(path)
    try:
        if bids is not None:
            from mne_bids import read_raw_bids

            return read_raw_bids(bids, verbose="error")
        return mne.io.read_raw(path, preload=False, verbose="error")
    except Exception as exc:
        raise UnsupportedRecordingError(
            f"could not read {path} ({type(exc).__name__}: {exc}). Replay reads XDF, BIDS recordings and "
            f"every format mne.io.read_raw reads: {', '.join(supported_formats())}"
        ) from exc


def _bids_path(path: Path):
    """A ``BIDSPath`` when ``path`` is a recording inside a BIDS dataset, else None."""
    root = next((p for p in path.resolve().parents if (p / "dataset_description.json").is_file()), None)
    if root is None or not path.name.startswith("sub-"):
        return None
    from mne_bids import get_bids_path_from_fname

    try:
        bp = get_bids_path_from_fname(path, check=False, verbose=False)
    except Exception:
        return None
    bp.update(root=root)
    return bp


def _annotation_samples(raw) -> tuple[np.ndarray, np.ndarray]:
    """Sample index (0 = first sample of the data) and description of every annotation, by onset."""
    ann = raw.annotations
    if len(ann) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
    # mne's own conversion (events_from_annotations) handles orig_time and first_samp; ask for all of them
    import mne

    descriptions = sorted(set(ann.description))
    ids = {d: i + 1 for i, d in enumerate(descriptions)}
    events, _ = mne.events_from_annotations(
        raw, event_id=ids, regexp=None, use_rounding=True, verbose="error"
    )
    samples = events[:, 0] - raw.first_samp
    values = np.array([descriptions[c - 1] for c in events[:, 2]], dtype=object)
    keep = (samples >= 0) & (samples < raw.n_times)
    order = np.argsort(samples[keep], kind="stable")
    return samples[keep][order].astype(np.int64), values[keep][order]


def _block_reads_exact(raw, n: int = 64) -> bool:
    """Whether two adjacent reads give what one read of the same samples gives (not so where mne
    resamples channels stored at lower rates over each read, as in EDF files with mixed rates)."""
    n = min(n, raw.n_times)
    half = n // 2
    if half == 0:
        return True
    parts = np.concatenate([raw.get_data(start=0, stop=half), raw.get_data(start=half, stop=n)], axis=1)
    return bool(np.array_equal(raw.get_data(start=0, stop=n), parts, equal_nan=True))


# stim channels "auto" looks for, in order: Neuromag's combined and older trigger channels, the CTF parallel
# port (THINGS-MEG's triggers), BioSemi / EDF status channels
_STIM_NAMES = ("STI101", "STI 014", "UPPT001", "Status", "STATUS", "TRIGGER")


def stim_channel(raw, requested: str) -> str:
    """The stim channel ``requested`` names, or for ``"auto"`` the first of :data:`_STIM_NAMES` present,
    else the first channel of type stim. Raises ``ValueError`` naming the candidates when there is none."""
    stim = [raw.ch_names[i] for i, t in enumerate(raw.get_channel_types()) if t == "stim"]
    if requested != "auto":
        if requested not in raw.ch_names:
            raise ValueError(
                f"no channel {requested!r} in {_describe(raw)}; its stim channels are {stim or 'none'}: "
                "name one of them, or use 'auto'"
            )
        return requested
    found = next((n for n in _STIM_NAMES if n in raw.ch_names), None) or (stim[0] if stim else None)
    if found is None:
        raise ValueError(
            f"{_describe(raw)} has no stim channel (none of {', '.join(_STIM_NAMES)} and no channel of type "
            "stim): name the trigger channel explicitly, or replay without events from stim"
        )
    return found


def stim_event_samples(raw, requested: str) -> tuple[np.ndarray, np.ndarray]:
    """Sample index (0 = first sample of the data) and value (as text) of each event of a stim channel.

    Every change to a non-zero value is an event (``mne.find_events`` with ``consecutive=True``), one sample
    is long enough, and a channel already non-zero at the first sample starts with an event there.
    """
    import mne

    channel = stim_channel(raw, requested)
    events = mne.find_events(
        raw, stim_channel=channel, consecutive=True, shortest_event=1, initial_event=True, verbose="error"
    )
    if len(events) == 0:
        logger.warning(
            "stim channel %s of %s never changes: no events, so no markers from it", channel, _describe(raw)
        )
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
    samples = (events[:, 0] - raw.first_samp).astype(np.int64)
    values = np.array([str(int(v)) for v in events[:, 2]], dtype=object)
    logger.info("%d events from stim channel %s", len(events), channel)
    return samples, values


def _stream_type(types: list[str]) -> str:
    if any(t in ("mag", "grad") for t in types):
        return "MEG"
    if "eeg" in types:
        return "EEG"
    return "MISC"


def _describe(raw) -> str:
    return str(raw.filenames[0]) if raw.filenames and raw.filenames[0] else "the recording"


def _fmt(stream: dict) -> str:
    return stream["info"]["channel_format"][0]


def _first(info: dict, key: str) -> str:
    v = info.get(key)
    return v[0] if v and v[0] is not None else ""


def _xdf_channels(info: dict, n_ch: int) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    labels, types, units = [], [], []
    try:
        for ch in info["desc"][0]["channels"][0]["channel"]:
            labels.append((ch.get("label") or [""])[0] or "")
            types.append((ch.get("type") or [""])[0] or "")
            units.append((ch.get("unit") or [""])[0] or "")
    except (KeyError, IndexError, TypeError):
        pass
    if len(labels) != n_ch:
        stype = info["type"][0] or ""
        return tuple(str(i) for i in range(n_ch)), (stype,) * n_ch, ("",) * n_ch
    return tuple(labels), tuple(types), tuple(units)
