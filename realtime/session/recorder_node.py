"""The session's recorder node: the LSL signal and marker streams, plus the decoder's outputs from the bus
(embeddings, retrievals, markers), into one crash-safe XDF file.

Run as ``python -m brainstream.realtime.session.recorder_node --config PIPELINE.yaml --out FILE.xdf``;
stops cleanly
on SIGINT / SIGTERM (footers written).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.recording import Recorder
    from brainstream.realtime.recording.bus_recorder import BusRecorder

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="XDF file to write")
    parser.add_argument(
        "--reconstructions", default=None, help="folder to keep reconstructions of known stimuli in"
    )
    parser.add_argument("--gallery", default=None, help="gallery of the seen images ('demo' or a folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    config = load_pipeline_config(args.config)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    keeper = contextlib.nullcontext()
    if args.reconstructions:
        from brainstream.realtime.session.reconstructions import ReconstructionKeeper

        keeper = ReconstructionKeeper(
            args.reconstructions, args.gallery, config.bus.sub, keys=config.bus.keys_dir
        )
    with Recorder(args.out, on_alarm=lambda m: logger.error("recording stopped: %s", m)) as recorder:
        with BusRecorder(recorder, config.bus.sub, keys=config.bus.keys_dir) as bus, keeper:
            for sel in (config.input.signal, config.input.markers):
                if sel is not None:
                    recorder.add_stream(
                        sel.name, stype=sel.type, source_id=sel.source_id, timeout=sel.timeout_s
                    )
            stop.wait()
        logger.info("recorded %d bus messages into %s", bus.n_messages, [str(p) for p in recorder.paths])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
