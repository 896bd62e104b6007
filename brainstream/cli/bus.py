"""``brainstream bus``: run the message broker (XSUB for publishers, XPUB for subscribers)."""

from __future__ import annotations

import argparse
import json

from brainstream.cli import UserFacingError
from brainstream.cli._shutdown import exit_if_supervised, stop_on_signals

HELP = "run the bus broker (publishers connect to --frontend, subscribers to --backend)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from brainstream.realtime.bus._socket import DEFAULT_PUB_ENDPOINT, DEFAULT_SUB_ENDPOINT

    parser.add_argument(
        "--frontend", default=DEFAULT_PUB_ENDPOINT, help="XSUB endpoint publishers connect to"
    )
    parser.add_argument(
        "--backend", default=DEFAULT_SUB_ENDPOINT, help="XPUB endpoint subscribers connect to"
    )
    parser.add_argument(
        "--keys",
        default=None,
        metavar="DIR",
        help="CURVE keys folder (brainstream keys generate DIR); required to bind a non-loopback interface",
    )


def run(args: argparse.Namespace) -> int:
    from brainstream.realtime.bus import Broker, InsecureBindError, KeysError

    try:
        broker = Broker(args.frontend, args.backend, keys=args.keys)
        broker.start()
    except (InsecureBindError, KeysError, OSError, ValueError) as exc:
        raise UserFacingError(str(exc)) from None
    secured = " (CURVE, authorised clients only)" if args.keys else ""
    with stop_on_signals() as stopping:  # SIGINT and SIGTERM alike
        print(
            f"bus broker: publishers -> {args.frontend}, subscribers <- {args.backend}{secured}; "
            "Ctrl-C stops",
            flush=True,
        )
        while broker.running and not stopping.wait(0.1):
            pass
        broker.stop()
    print(
        "bus broker stopped: " + json.dumps({"frontend": args.frontend, "backend": args.backend}), flush=True
    )
    return exit_if_supervised(0)
