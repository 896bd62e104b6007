"""``brainstream lsl-config --peers HOST...``: write liblsl's lsl_api.cfg (KnownPeers, SessionID)."""

from __future__ import annotations

import argparse

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "write liblsl's lsl_api.cfg so LSL finds the streams of the listed hosts (no multicast needed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peers",
        nargs="+",
        required=True,
        metavar="HOST",
        help="every host of the session (IP addresses or host names), this one included",
    )
    parser.add_argument(
        "--session-id",
        default="default",
        metavar="ID",
        help="LSL session id: hosts see each other's streams only with the same id (default: liblsl's "
        "'default')",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="file to write (default ~/lsl_api/lsl_api.cfg, which liblsl reads unless $LSLAPICFG is set)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing file (kept as PATH.bak)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from brainstream.realtime.lsl_config import default_config_path, write_lsl_api_config

    path = default_config_path() if args.out is None else args.out
    try:
        backup = write_lsl_api_config(path, args.peers, args.session_id, force=args.force)
    except (ValueError, OSError) as exc:
        raise UserFacingError(str(exc)) from None
    result = {"path": str(path), "peers": args.peers, "session_id": args.session_id, "backup": backup}
    if args.json:
        print_json({**result, "backup": str(backup) if backup else None})
        return 0
    print(f"wrote {path}: KnownPeers {', '.join(args.peers)}, SessionID {args.session_id}")
    if backup is not None:
        print(f"the previous file is kept as {backup}")
    if args.out is not None:
        print(f"liblsl reads it from here with: export LSLAPICFG={path}")
    print("write the same file on every host of the session, then restart the LSL programs")
    return 0
