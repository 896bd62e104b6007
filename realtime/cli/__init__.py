"""``brainstream <verb>``: one module per verb under ``realtime/cli/``.

Each verb module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Verb
modules import heavy packages (torch, mne, Qt) inside ``run`` so that ``brainstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# verb -> module under realtime.cli (DESIGN §8)
VERBS: dict[str, str] = {
    "demo": "demo",
    "live": "live",
    "decode": "decode",
    "bus": "bus",
    "retrieve": "retrieve",
    "generate": "generate",
    "display": "display",
    "replay": "replay",
    "record": "record",
    "streams": "streams",
    "simulate": "simulate",
    "train": "train",
    "evaluate": "evaluate",
    "export": "export",
    "bench": "bench",
    "gallery": "gallery",
    "calibrate": "calibrate",
    "config": "config",
    "keys": "keys",
}


def _load_verb(verb: str):
    try:
        return importlib.import_module(f"realtime.cli.{VERBS[verb]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"realtime.cli.{VERBS[verb]}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainstream",
        description="Real-time decoding of visual perception from MEG/EEG over Lab Streaming Layer.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        module = _load_verb(verb)
        if module is None:
            continue
        verb_parser = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserFacingError as exc:
        print(f"brainstream {args.verb}: error: {exc}", file=sys.stderr)
        return 2


class UserFacingError(Exception):
    """An error whose message tells the user what went wrong and what to do; printed without a traceback."""


if __name__ == "__main__":
    sys.exit(main())
