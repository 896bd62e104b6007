"""``brainstream <verb>``: one module per verb under ``brainstream/cli/``.

Each verb module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Verb
modules import heavy packages (torch, mne, Qt) inside ``run`` so that ``brainstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# verb -> module under brainstream.cli (docs/architecture.md, "Command line")
VERBS: dict[str, str] = {
    "demo": "demo",
    "live": "live",
    "decode": "decode",
    "bus": "bus",
    "retrieve": "retrieve",
    "generate": "generate",
    "generator": "generator",
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
    "device": "device",
    "lsl-config": "lsl_config",
}


def _load_verb(verb: str):
    try:
        return importlib.import_module(f"brainstream.cli.{VERBS[verb]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"brainstream.cli.{VERBS[verb]}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainstream",
        description="Real-time decoding of visual perception from MEG/EEG over Lab Streaming Layer.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"brainstream {_version()}")
    parser.add_argument(
        "--config-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of your own configs (DIR/<kind>/NAME.yaml), searched before the shipped ones; "
        "repeatable; adds to $BRAINSTREAM_CONFIG_PATH",
    )
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


def _version() -> str:
    from brainstream import __version__

    return __version__


def _use_config_dirs(dirs: list[str]) -> None:
    from brainstream.models.config_base import CONFIG_PATH_ENV

    for folder in dirs:
        if not os.path.isdir(folder):
            raise UserFacingError(
                f"--config-dir {folder}: no such folder; give a folder holding <kind>/NAME.yaml"
            )
    if dirs:
        # through the environment, so the nodes a session starts search the same folders
        known = [p for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
        os.environ[CONFIG_PATH_ENV] = os.pathsep.join([*(os.path.abspath(d) for d in dirs), *known])


def main(argv: Sequence[str] | None = None) -> int:
    from brainstream.models.config_base import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from brainstream.realtime.session.supervisor import stop_when_orphaned

    stop_when_orphaned()  # a node whose supervisor was killed stops instead of running on
    try:
        _use_config_dirs(args.config_dir)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserFacingError, ConfigError) as exc:
        # a mistake the user can fix: one paragraph, no traceback; --json still ends with one object
        print(f"brainstream {args.verb}: error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):
            from brainstream.cli._output import print_json

            print_json({"error": str(exc), "verb": args.verb})
        return 2


class UserFacingError(Exception):
    """An error whose message tells the user what went wrong and what to do; printed without a traceback."""


if __name__ == "__main__":
    sys.exit(main())
