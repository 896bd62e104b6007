"""``brainstream config show FILE`` and ``brainstream config list``: the configs and where each comes from."""

from __future__ import annotations

import argparse

import yaml

from brainstream.cli._output import add_json_flag, print_json

HELP = "list the available configs, or show one resolved and validated"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="validate FILE and print the resolved config")
    show.add_argument("file", help="a YAML path, or a config name (see `brainstream config list`)")
    show.add_argument(
        "--kind", default=None, help="config kind when FILE is outside a config folder (e.g. devices)"
    )
    add_json_flag(show)
    listing = sub.add_parser("list", help="every config by kind, and the folder it comes from")
    listing.add_argument("--kind", default=None, help="only this kind (devices, pipelines, ...)")
    add_json_flag(listing)


def run(args: argparse.Namespace) -> int:
    return _list(args) if args.action == "list" else _show(args)


def _show(args: argparse.Namespace) -> int:
    from brainstream.config_kinds import schema_for
    from brainstream.models.config_base import CONFIG_KINDS, ConfigError, load_config, resolve_config_path

    path = None
    if args.kind is None:  # a bare name: the first kind that has it
        for kind in CONFIG_KINDS:
            try:
                path, args.kind = resolve_config_path(args.file, kind), kind
                break
            except ConfigError:
                continue
    path = path or resolve_config_path(args.file, args.kind)
    schema = schema_for(path, args.kind)
    config = load_config(path, schema)
    resolved = config.model_dump(mode="json")
    if args.json:
        print_json({"file": str(path), "schema": schema.__name__, "config": resolved})
    else:
        print(f"# {path} ({schema.__name__})")
        print(yaml.safe_dump(resolved, sort_keys=False, default_flow_style=None, width=110), end="")
    return 0


def _list(args: argparse.Namespace) -> int:
    from brainstream.models.config_base import (
        CONFIG_KINDS,
        CONFIG_ROOT,
        ConfigError,
        config_search_path,
        iter_configs,
    )

    kinds = CONFIG_KINDS if args.kind is None else (args.kind,)
    if args.kind is not None and args.kind not in CONFIG_KINDS:
        raise ConfigError(f"unknown config kind '{args.kind}'; kinds are: {', '.join(CONFIG_KINDS)}")
    rows = [
        {"kind": kind, "name": name, "path": str(path), "origin": _origin(path, CONFIG_ROOT)}
        for kind in kinds
        for name, path in iter_configs(kind)
    ]
    if args.json:
        print_json({"search_path": [str(p) for p in config_search_path()], "configs": rows})
        return 0
    print("search path (first match wins): " + ", ".join(str(p) for p in config_search_path()))
    for kind in kinds:
        print(f"{kind}:")
        for row in (r for r in rows if r["kind"] == kind):
            print(f"  {row['name']:<28} {row['origin']:<8} {row['path']}")
    return 0


def _origin(path, shipped_root) -> str:
    return "shipped" if path.resolve().is_relative_to(shipped_root.resolve()) else "user"
