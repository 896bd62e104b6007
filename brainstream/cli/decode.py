"""``brainstream decode --config configs/pipelines/FILE.yaml``: the decoder node on its own."""

from __future__ import annotations

import argparse
import json

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json
from brainstream.cli._shutdown import exit_if_supervised, is_standby, stop_on_signals, wait_for_promotion

HELP = "run the decoder node: LSL stream → windows → encoder → embeddings on the bus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="pipeline config (configs/pipelines/FILE.yaml)")
    parser.add_argument("--checkpoint", default=None, help="override the config's encoder checkpoint folder")
    parser.add_argument("--subject", default=None, help="override the config's subject id")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--incremental",
        choices=["auto", "on", "off"],
        default=None,
        help="sliding windows of a causal checkpoint: compute only each stride's new samples "
        "(default: the config's windowing.incremental; auto: on exactly when the checkpoint is causal)",
    )
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from brainstream.models.config_base import ConfigError
    from brainstream.realtime.acquisition import StreamResolveError
    from brainstream.realtime.decoder.node import build_decoder_node
    from brainstream.realtime.heap import freeze_startup_heap
    from brainstream.realtime.pipeline_config import load_pipeline_config

    try:
        config = load_pipeline_config(args.config)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    if args.subject:
        config = config.model_copy(update={"subject": args.subject})
    if args.incremental is not None:
        value = {"auto": None, "on": True, "off": False}[args.incremental]
        try:
            windowing = config.windowing.model_validate(
                {**config.windowing.model_dump(), "incremental": value}
            )
        except ValueError as exc:
            raise UserFacingError(f"--incremental {args.incremental}: {exc}") from None
        config = config.model_copy(update={"windowing": windowing})
    node = None
    standby = is_standby()

    def on_signal() -> None:
        if node is None:
            raise KeyboardInterrupt  # still loading: abandon start-up
        node.request_stop()  # running: the loop and the readers end within 2 s, then the summary

    with stop_on_signals(on_signal) as stopping:
        try:
            publisher = _publisher(config, heartbeats=not standby)
            node = build_decoder_node(config, checkpoint=args.checkpoint, publisher=publisher)
            node.prepare()  # the runtime warm, then the heap that outlives the session out of gc's reach
            freeze_startup_heap()
            if standby and not _stand_by(node, config, stopping):
                node.stop()
                node.publisher.close()
                return exit_if_supervised(0)
            node.start()
        except (StreamResolveError, ValueError, FileNotFoundError) as exc:
            if node is not None:
                node.publisher.close()
            raise UserFacingError(f"{exc}") from None
        except KeyboardInterrupt:
            if node is None:
                return 0
        try:
            node.wait(args.seconds)
        finally:
            node.stop()
            node.publisher.close()
    summary = node.status()
    if args.json:
        print_json(summary)
    else:
        print(json.dumps(summary, indent=1, default=float))
    return exit_if_supervised(0)


def _publisher(config, heartbeats: bool):
    from brainstream.realtime.bus import Publisher

    interval = 1.0 if heartbeats else None  # a standby stays silent until promoted
    return Publisher(config.bus.pub, name="decoder", keys=config.bus.keys_dir, heartbeat_interval=interval)


#: seconds of signal a promoted standby decodes from its buffer: the windows of markers that came while its
#: predecessor was dying, with the causal filters settled before them
STANDBY_HISTORY_S = 5.0


def _stand_by(node, config, stopping) -> bool:
    """A standby decoder: runtime warm and readers filling the ring buffer, watching what the active decoder
    publishes; on promotion it decodes from its buffer what the other did not publish. True if promoted."""
    from brainstream.realtime.bus import Subscriber

    node.prepare()
    seen = {"window": None, "marker": None}

    def note(msg) -> None:
        key, t = ("marker", msg.t_sample) if msg.topic == "marker" else ("window", msg.get("t_event"))
        if isinstance(t, int | float) and (seen[key] is None or t > seen[key]):
            seen[key] = float(t)

    with Subscriber(
        config.bus.sub, topics=(node.topic, "marker"), keys=config.bus.keys_dir, heartbeats=False
    ) as watch:

        def idle() -> None:
            if (msg := watch.recv(timeout=0.05)) is not None:
                note(msg)

        promoted = wait_for_promotion(stopping, idle)
        while promoted and (msg := watch.recv(timeout=0)) is not None:  # what came just before
            note(msg)
    node.published_until, node.markers_until = seen["window"], seen["marker"]
    node.history_s = STANDBY_HISTORY_S
    node.publisher.start_heartbeats()
    return promoted
