"""``brainstream streams [--json]``: list the LSL streams visible now."""

from __future__ import annotations

import argparse

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "list the LSL streams visible now (name, type, channels, rate, source_id, host)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long to listen for outlets (default 1.0; below 0.5 s some may be missed)",
    )
    parser.add_argument("--type", dest="stype", default=None, help="only streams of this LSL type (e.g. EEG)")
    add_json_flag(parser)


def _table(rows: list[dict]) -> str:
    cols = [
        ("name", "NAME"),
        ("type", "TYPE"),
        ("channels", "CH"),
        ("sfreq", "RATE"),
        ("channel_format", "FORMAT"),
        ("source_id", "SOURCE_ID"),
        ("host", "HOST"),
    ]

    def cell(row: dict, key: str) -> str:
        if key == "sfreq":
            return f"{row[key]:g} Hz" if row[key] > 0 else "irregular"
        return str(row[key])

    cells = [[title for _, title in cols]] + [[cell(r, k) for k, _ in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def run(args: argparse.Namespace) -> int:
    from brainstream.realtime.acquisition.resolve import list_streams

    if args.wait <= 0:
        raise UserFacingError(f"--wait must be > 0 seconds, got {args.wait}; try --wait 1")
    streams = list_streams(wait_time=args.wait)
    if args.stype:
        streams = [s for s in streams if s.type.lower() == args.stype.lower()]
    rows = [s.as_dict() for s in streams]
    if args.json:
        print_json({"count": len(rows), "streams": rows})
    elif rows:
        print(_table(rows))
    else:
        what = f" of type '{args.stype}'" if args.stype else ""
        print(
            f"no LSL streams{what} visible after {args.wait:g} s. Start an outlet (e.g. "
            "`brainstream simulate` or `brainstream replay`), or listen longer with --wait 3."
        )
    return 0
