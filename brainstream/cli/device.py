"""``brainstream device from-recording FILE`` and ``brainstream device from-stream NAME``: a device profile
(``configs/devices/`` format) from what a lab has."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from brainstream.cli import UserFacingError

HELP = "write a device profile from a recording or a live LSL stream"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    rec = sub.add_parser("from-recording", help="profile of a recording's data channels (any mne format)")
    rec.add_argument(
        "file", metavar="FILE", help="recording (FIF, CTF .ds, EDF, BDF, BrainVision, EEGLAB...)"
    )
    stream = sub.add_parser("from-stream", help="profile of a live LSL stream's data channels")
    stream.add_argument("stream", metavar="NAME", help="LSL stream name")
    stream.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to find it")
    for p in (rec, stream):
        p.add_argument(
            "-o", "--output", default=None, metavar="YAML", help="where to write (default NAME.yaml)"
        )
        p.add_argument("--name", default=None, help="profile name (default: from the file / stream name)")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--montage", default=None, help="mne built-in montage for EEG positions")
        where.add_argument(
            "--layout", default=None, help="mne built-in layout for MEG 2-D positions (CTF-275)"
        )
        p.add_argument("--force", action="store_true", help="overwrite an existing output file")


def run(args: argparse.Namespace) -> int:
    from brainstream.models.device_profile import profile_from_info, write_device_profile

    if args.action == "from-recording":
        info, source, default_name = _recording_info(Path(args.file))
        units = None
    else:
        info, units, source, default_name = _stream_info(args.stream, args.timeout)
    name = args.name or default_name
    output = Path(args.output or f"{_file_stem(name)}.yaml")
    if output.exists() and not args.force:
        raise UserFacingError(f"{output} exists; pass --force to overwrite it or -o another path")
    try:
        profile, warnings = profile_from_info(info, name, units, layout=args.layout, montage=args.montage)
    except ValueError as exc:
        raise UserFacingError(f"{source}: {exc}") from None
    for warning in warnings:
        logger.warning(warning)
    write_device_profile(
        profile, output, header=f"Device profile written by `brainstream device` from {source}."
    )
    where = "3-D positions" if profile.positions else (profile.montage or profile.layout or "no positions")
    print(
        f"wrote {output}: {profile.name}, {profile.modality} {profile.channel_type}, {profile.n_channels} "
        f"channels at {profile.sfreq:g} Hz in {profile.unit}, {where}"
        + (f", {len(profile.bad_channels)} bad" if profile.bad_channels else "")
    )
    print(f"check it with: brainstream config show {output} --kind devices")
    return 0


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "device"


def _recording_info(path: Path):
    import mne

    if not path.exists():
        raise UserFacingError(f"recording not found: {path}; give the path of a recording file or .ds folder")
    try:
        raw = mne.io.read_raw(path, preload=False, verbose="error")
    except (ValueError, RuntimeError, OSError) as exc:
        raise UserFacingError(
            f"cannot read {path} with mne.io.read_raw ({exc}); an XDF file: replay it "
            "(brainstream replay FILE) and use `brainstream device from-stream NAME`"
        ) from None
    stem = path.name.removesuffix(".ds").split(".")[0]
    return raw.info, f"recording {path}", stem


def _stream_info(name: str, timeout: float):
    from brainstream.realtime.acquisition import StreamReader

    try:
        reader = StreamReader(name=name, timeout=timeout).connect()
    except (LookupError, ValueError, RuntimeError) as exc:
        raise UserFacingError(f"stream {name!r}: {exc}") from None
    try:
        return reader.info, reader.units, f"LSL stream '{name}'", name
    finally:
        reader.stop()
