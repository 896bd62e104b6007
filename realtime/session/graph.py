"""The process graph of a session (docs/architecture.md §4): which nodes run, with which command lines.

``brainstream live`` and ``brainstream demo`` both start the graph this module describes, so what the demo
shows is what a lab session runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from brainstream.realtime.pipeline_config import PipelineConfig
from brainstream.realtime.session.supervisor import NodeSpec, brainstream_argv


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


def session_nodes(config: PipelineConfig, plan: SessionPlan) -> list[NodeSpec]:
    """Node specs in start order: broker, extra sources, decoder, services, recorder, display last."""
    logs = plan.run_dir / "logs"
    keys = ["--keys", config.bus.keys_dir] if config.bus.keys_dir else []
    bus = ["--sub", config.bus.sub, "--pub", config.bus.pub, *keys]
    nodes = [
        NodeSpec(
            "bus",
            brainstream_argv("bus", "--frontend", config.bus.pub, "--backend", config.bus.sub, *keys),
            log_dir=logs,
        )
    ]
    nodes.extend(plan.extra_nodes)  # signal sources start right after the broker and stop last
    decode = ["--config", str(plan.config_path), "--subject", config.subject]
    if plan.checkpoint is not None:
        decode += ["--checkpoint", str(plan.checkpoint)]
    nodes.append(NodeSpec("decoder", brainstream_argv("decode", *decode), log_dir=logs))
    gallery = str(plan.gallery) if plan.gallery is not None else config.gallery
    tests = ["--test-images", str(plan.test_images)] if plan.test_images is not None else []
    if config.nodes.retrieval:
        nodes.append(
            NodeSpec(
                "retrieval",
                brainstream_argv("retrieve", "--gallery", gallery, "--k", str(config.top_k), *tests, *bus),
                log_dir=logs,
            )
        )
    if config.nodes.generator and config.generator:
        generate = ["--config", config.generator, *tests, *(["--gallery", gallery] if tests else []), *bus]
        nodes.append(NodeSpec("generator", brainstream_argv("generate", *generate), log_dir=logs))
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
        nodes.append(NodeSpec("recorder", argv, log_dir=logs))
    if config.nodes.display and plan.display:
        display = [
            "--bus",
            config.bus.sub,
            "--publish",
            config.bus.pub,
            "--summary",
            str(plan.display_summary),
        ]
        if gallery != "demo":
            display += ["--gallery", gallery]
        if plan.screenshot is not None:
            display += ["--screenshot", str(plan.screenshot), "--after", str(plan.screenshot_after)]
        if plan.display_seconds is not None:
            display += ["--seconds", str(plan.display_seconds)]
        nodes.append(
            NodeSpec(
                "display",
                brainstream_argv("display", *display),
                log_dir=logs,
                restart=plan.screenshot is None,
            )
        )
    return nodes
