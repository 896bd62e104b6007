"""Find LSL streams by name / type / source_id, with errors that list what was found instead."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pylsl


class StreamResolveError(LookupError):
    """No stream, or more than one, matched a selection. The message lists the streams visible."""


class StreamNotFoundError(StreamResolveError):
    """No stream matched within the timeout."""


class AmbiguousStreamError(StreamResolveError):
    """Several streams matched; the selection must be narrowed (e.g. by source_id)."""


@dataclass(frozen=True)
class StreamSummary:
    """One visible stream, as ``brainstream streams`` prints it."""

    name: str
    type: str
    channels: int
    sfreq: float
    channel_format: str
    source_id: str
    host: str
    uid: str

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        rate = f"{self.sfreq:g} Hz" if self.sfreq > 0 else "irregular"
        return (
            f"'{self.name}' (type '{self.type}', {self.channels} ch, {rate}, "
            f"source_id '{self.source_id}', host {self.host})"
        )


_FORMATS = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int32: "int32",
    pylsl.cf_int16: "int16",
    pylsl.cf_int8: "int8",
    pylsl.cf_int64: "int64",
}


def summarize(info: pylsl.StreamInfo) -> StreamSummary:
    """A plain summary of a stream info."""
    return StreamSummary(
        name=info.name(),
        type=info.type(),
        channels=info.channel_count(),
        sfreq=float(info.nominal_srate()),
        channel_format=_FORMATS.get(info.channel_format(), str(info.channel_format())),
        source_id=info.source_id(),
        host=info.hostname(),
        uid=info.uid(),
    )


def list_streams(wait_time: float = 1.0) -> list[StreamSummary]:
    """All streams visible now, sorted by name then source_id."""
    found = {i.uid(): summarize(i) for i in pylsl.resolve_streams(wait_time=wait_time)}
    return sorted(found.values(), key=lambda s: (s.name, s.source_id, s.uid))


def _literal(value: str) -> str:
    # XPath 1.0 has no escape inside string literals: pick the quote the value does not contain
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"stream selector {value!r} contains both quote characters; LSL cannot query it")


def predicate(name: str | None = None, stype: str | None = None, source_id: str | None = None) -> str:
    """The XPath predicate LSL resolves with, e.g. ``name='X' and type='EEG'``."""
    pairs = [(key, val) for key, val in (("name", name), ("type", stype), ("source_id", source_id)) if val]
    if not pairs:
        raise ValueError("give at least one of name, stype, source_id to select a stream")
    return " and ".join(f"{key}={_literal(val)}" for key, val in pairs)


def describe_selection(name: str | None, stype: str | None, source_id: str | None) -> str:
    sel = [f"{k}={v!r}" for k, v in (("name", name), ("type", stype), ("source_id", source_id)) if v]
    return ", ".join(sel)


def resolve_stream(
    name: str | None = None,
    stype: str | None = None,
    source_id: str | None = None,
    timeout: float = 5.0,
) -> pylsl.StreamInfo:
    """Resolve exactly one stream.

    Parameters
    ----------
    name, stype, source_id : str | None
        What the stream must match (at least one).
    timeout : float
        Seconds to wait for a matching stream.

    Raises
    ------
    StreamNotFoundError
        Nothing matched; the message lists the streams that are visible.
    AmbiguousStreamError
        Several matched; the message lists them and suggests narrowing by source_id.
    """
    pred = predicate(name, stype, source_id)
    what = describe_selection(name, stype, source_id)
    found = {i.uid(): i for i in pylsl.resolve_bypred(pred, minimum=1, timeout=timeout)}
    if found:
        # the first answer ends the wait; give other outlets with the same properties a moment to answer
        for i in pylsl.resolve_bypred(pred, minimum=len(found) + 1, timeout=min(0.2, timeout)):
            found.setdefault(i.uid(), i)
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        visible = list_streams(wait_time=min(1.0, max(0.2, timeout)))
        listing = "\n".join(f"  - {s}" for s in visible) or "  (none)"
        raise StreamNotFoundError(
            f"no LSL stream with {what} appeared within {timeout:g} s. Streams visible now:\n{listing}\n"
            "Start the device/replay outlet, or fix the selection (see `brainstream streams`)."
        )
    listing = "\n".join(f"  - {summarize(i)}" for i in found.values())
    raise AmbiguousStreamError(
        f"{len(found)} LSL streams match {what}:\n{listing}\n"
        "Select one by its source_id (or stop the duplicate outlet)."
    )
