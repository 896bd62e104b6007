"""``brainstream config show FILE``: print a config file resolved and validated."""

from __future__ import annotations

import argparse

import yaml

from realtime.cli import UserFacingError
from realtime.cli._output import add_json_flag, print_json

HELP = "show a resolved, validated config file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="validate FILE and print the resolved config")
    show.add_argument("file", help="a YAML file under configs/ (path, or name within configs/<kind>/)")
    show.add_argument("--kind", default=None, help="config kind when FILE is outside configs/ (e.g. devices)")
    add_json_flag(show)


def run(args: argparse.Namespace) -> int:
    from models.config_base import ConfigError, load_config, resolve_config_path
    from models.config_registry import schema_for

    try:
        path = resolve_config_path(args.file, args.kind)
        schema = schema_for(path, args.kind)
        config = load_config(path, schema)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    resolved = config.model_dump(mode="json")
    if args.json:
        print_json({"file": str(path), "schema": schema.__name__, "config": resolved})
    else:
        print(f"# {path} ({schema.__name__})")
        print(yaml.safe_dump(resolved, sort_keys=False, default_flow_style=None, width=110), end="")
    return 0
