"""``brainstream bench NAME``: benchmarks, each comparing against a baseline measured in the same run."""

from __future__ import annotations

import argparse
import importlib

from brainstream.cli._output import add_json_flag, print_json

HELP = "run a benchmark (ringbuffer, acquisition, replay, encoder, decode, services, latency, soak, growth)"

# name -> module under realtime.benchmarks; each defines HELP, add_arguments(parser), run(args) -> dict
BENCHMARKS: dict[str, str] = {
    "ringbuffer": "ringbuffer",
    "acquisition": "acquisition",
    "replay": "replay",
    "encoder": "encoder",
    "decode": "decode",
    "services": "services",
    "latency": "latency",
    "simulation": "simulation",
    "soak": "soak",
    "growth": "growth",
}


def _modules():
    for name, module in BENCHMARKS.items():
        try:
            yield name, importlib.import_module(f"brainstream.realtime.benchmarks.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"brainstream.realtime.benchmarks.{module}":
                raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="NAME")
    sub.required = True
    for name, module in _modules():
        bench_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(bench_parser)
        add_json_flag(bench_parser)
        bench_parser.set_defaults(_bench=module)


def run(args: argparse.Namespace) -> int:
    result = args._bench.run(args)
    if args.json:
        print_json(result)
    return 0
