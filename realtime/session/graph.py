"""The process graph of a session (docs/architecture.md §4): which nodes run, with which command lines.

``brainstream live`` and ``brainstream demo`` both start the graph this module describes, so what the demo
shows is what a lab session runs.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from brainstream.realtime.pipeline_config import PipelineConfig
from brainstream.realtime.session.supervisor import NodeSpec, brainstream_argv

#: bus topic of the supervisor's events (node started, exited, restarting, stopped); the session recorder
#: writes them into the recording's ``session-events`` stream
SESSION_EVENT_TOPIC = "session.event"
# stop phases (NodeSpec.stop_phase): everything that produces first, then the recorder, which must still be
# there to record what the others produced while stopping, then the broker that carries it
RECORDER_STOP_PHASE = 1
BROKER_STOP_PHASE = 2


@dataclass
class SessionPlan:
    """Where a session writes its outputs and which optional nodes it runs."""

    run_dir: Path
    config_path: Path
    checkpoint: Path | None = None  # overrides the config's encoder (a subject profile's adapted encoder)
    gallery: Path | None = None  # overrides the config's gallery (resolved 'demo')
    display: bool = True
    screenshot: Path | None = None
    screenshot_after: float = 5.0
    display_seconds: float | None = None
    extra_nodes: list[NodeSpec] = field(default_factory=list)
    only: Collection[str] | None = None  # this host's part of a split session (``live --nodes``)
    test_images: Path | None = None  # the session's test image ids (N-way retrieval, 2-way identification)

    @property
    def recording(self) -> Path:
        return self.run_dir / "session.xdf"

    @property
    def reconstructions(self) -> Path:
        return self.run_dir / "reconstructions"

    @property
    def display_summary(self) -> Path:
        return self.run_dir / "display_summary.json"


def is_split(config: PipelineConfig, plan: SessionPlan) -> bool:
    """Whether this host runs only part of the session (``--nodes``, or a bus on a named host): stamps of
    other hosts' clocks then need their offsets (realtime/session/clocks.py)."""
    return plan.only is not None or config.bus.host is not None


def session_nodes(config: PipelineConfig, plan: SessionPlan) -> list[NodeSpec]:
    """Node specs in start order: broker, extra sources, decoder, services, recorder, display last; only
    those named in ``plan.only`` when it is given (this host's part of a split session)."""
    nodes = _all_nodes(config, plan)
    return nodes if plan.only is None else select_nodes(nodes, plan.only, config)


#: every node a pipeline can run, in start order (extra sources start right after the bus)
NODE_NAMES = ("bus", "decoder", "retrieval", "generator", "recorder", "display")


def select_nodes(nodes: list[NodeSpec], names: Collection[str], config: PipelineConfig) -> list[NodeSpec]:
    """The named nodes only, in start order; raises ValueError naming what cannot be run here."""
    names = list(dict.fromkeys(names))
    known = NODE_NAMES + tuple(n.name for n in nodes if n.name not in NODE_NAMES)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown node(s) {', '.join(unknown)}; a session's nodes are {', '.join(known)}")
    if not names:
        raise ValueError(f"name at least one node to run on this host, from {', '.join(known)}")
    present = {n.name for n in nodes}
    off = [n for n in names if n not in present]
    if off:
        raise ValueError(
            f"node(s) {', '.join(off)} are switched off in pipeline {config.name!r} (nodes: / generator: in "
            "the config, or --no-display); switch them on or leave them out of --nodes"
        )
    return [n for n in nodes if n.name in names]


def _all_nodes(config: PipelineConfig, plan: SessionPlan) -> list[NodeSpec]:
    logs = plan.run_dir / "logs"
    keys = ["--keys", config.bus.keys_dir] if config.bus.keys_dir else []
    bus = ["--sub", config.bus.sub, "--pub", config.bus.pub, *keys]
    nodes = [
        NodeSpec(
            "bus",
            brainstream_argv("bus", "--frontend", config.bus.pub, "--backend", config.bus.sub, *keys),
            log_dir=logs,
            stop_phase=BROKER_STOP_PHASE,
        )
    ]
    nodes.extend(plan.extra_nodes)  # signal sources start right after the broker and stop last
    decode = ["--config", str(plan.config_path), "--subject", config.subject]
    if plan.checkpoint is not None:
        decode += ["--checkpoint", str(plan.checkpoint)]
    # decoder, retrieval and generator keep a warm standby: a crash costs a promotion, not a start-up
    nodes.append(NodeSpec("decoder", brainstream_argv("decode", *decode), log_dir=logs, standby=True))
    gallery = str(plan.gallery) if plan.gallery is not None else config.gallery
    tests = ["--test-images", str(plan.test_images)] if plan.test_images is not None else []
    if config.nodes.retrieval:
        nodes.append(
            NodeSpec(
                "retrieval",
                brainstream_argv(
                    "retrieve",
                    "--gallery",
                    gallery,
                    "--k",
                    str(config.top_k),
                    *_index_argv(config, plan),
                    *tests,
                    *bus,
                ),  # fmt: skip
                log_dir=logs,
                standby=True,
            )
        )
    if config.nodes.generator and config.generator:
        generate = ["--config", config.generator, *tests, *(["--gallery", gallery] if tests else []), *bus]
        if config.windowing.mode == "event":
            # one image per stimulus onset: the generator idles between onsets, it is not the session's bulk
            # consumer, and at a lower priority every other process pre-empted its one render (demo
            # sample->image p99 153 ms at nice 10 against 68 ms at 0, decoder and display tails no worse:
            # docs/benchmarks.md)
            generate += ["--nice", "0"]
        nodes.append(
            NodeSpec("generator", brainstream_argv("generate", *generate), log_dir=logs, standby=True)
        )
    if config.nodes.recorder:
        argv = [
            sys.executable,
            "-m",
            "brainstream.realtime.session.recorder_node",
            "--config",
            str(plan.config_path),
            "--out",
            str(plan.recording),
        ]
        if config.nodes.generator and config.generator:
            argv += ["--reconstructions", str(plan.reconstructions), "--gallery", gallery]
        nodes.append(NodeSpec("recorder", argv, log_dir=logs, stop_phase=RECORDER_STOP_PHASE))
    if config.nodes.display and plan.display:
        display = [
            "--bus",
            config.bus.sub,
            "--publish",
            config.bus.pub,
            *keys,
            "--summary",
            str(plan.display_summary),
        ]
        if gallery != "demo":
            display += ["--gallery", gallery]
        if plan.screenshot is not None:
            display += ["--screenshot", str(plan.screenshot), "--after", str(plan.screenshot_after)]
        if plan.display_seconds is not None:
            display += ["--seconds", str(plan.display_seconds)]
        if is_split(config, plan):
            display.append("--clock-offsets")
        nodes.append(
            NodeSpec(
                "display",
                brainstream_argv("display", *display),
                log_dir=logs,
                restart=plan.screenshot is None,
            )
        )
    return nodes


def _index_argv(config: PipelineConfig, plan: SessionPlan) -> list[str]:
    """The retrieval node's index settings (``retrieval:`` of the pipeline config) as ``retrieve`` options."""
    r = config.retrieval
    argv = ["--backend", r.index, "--dtype", r.dtype, "--nprobe", str(r.nprobe)]
    argv += ["--target-recall", str(r.target_recall)]
    if r.nlist is not None:
        argv += ["--nlist", str(r.nlist)]
    if r.validation_queries is not None:
        argv += [
            "--validation-queries",
            str(config.resolve_path(r.validation_queries, plan.config_path.parent)),
        ]
    return argv


class SessionEvents:
    """The supervisor's ``on_event``: publishes each event on the bus (``session.event``, with ``node``,
    ``kind`` and ``message``) so that the session recording holds restarts beside its own gaps and losses.

    Parameters
    ----------
    config : PipelineConfig
        Where the bus is (``bus.pub``) and its keys.
    """

    def __init__(self, config: PipelineConfig) -> None:
        from brainstream.realtime.bus import Publisher

        self.publisher = Publisher(config.bus.pub, name="supervisor", keys=config.bus.keys_dir)

    def __call__(self, node: str, kind: str, message: str) -> None:
        import pylsl

        self.publisher.publish(
            SESSION_EVENT_TOPIC, t_sample=pylsl.local_clock(), node=node, kind=kind, message=message
        )

    def close(self) -> None:
        self.publisher.close()
