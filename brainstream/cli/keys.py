"""``brainstream keys generate DIR``: CURVE keys for a bus reachable from other machines."""

from __future__ import annotations

import argparse

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "generate CURVE keys so the bus can bind a network interface safely"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    gen = sub.add_parser("generate", help="create server + client key pairs in DIR and authorise the clients")
    gen.add_argument("directory", metavar="DIR", help="keys folder (created; existing keys are kept)")
    gen.add_argument(
        "--client",
        action="append",
        dest="clients",
        metavar="NAME",
        help="client key name (repeatable; default: client). Copy DIR/server.key + NAME.key* to that host",
    )
    add_json_flag(gen)


def run(args: argparse.Namespace) -> int:
    from brainstream.realtime.bus.security import AUTHORIZED_DIR, KeysError, generate_keys

    clients = tuple(args.clients or ("client",))
    try:
        keys = generate_keys(args.directory, clients)
    except (KeysError, OSError) as exc:
        raise UserFacingError(f"{exc}") from None
    authorized = sorted(p.stem for p in (keys.directory / AUTHORIZED_DIR).glob("*.key"))
    if args.json:
        print_json({"directory": str(keys.directory), "clients": list(clients), "authorized": authorized})
    else:
        pairs = ", ".join(f"{c}.key(_secret)" for c in clients)
        print(f"keys in {keys.directory}: server.key(_secret), {pairs}")
        print(f"authorised clients: {', '.join(authorized)} (remove DIR/{AUTHORIZED_DIR}/NAME.key to revoke)")
        print(
            "the broker host uses --keys DIR; every other host needs DIR/server.key + its NAME.key(_secret)"
        )
    return 0
