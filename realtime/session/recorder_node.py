"""The session's recorder node: the LSL signal and marker streams, plus the decoder's outputs from the bus
(embeddings, retrievals, markers), into one crash-safe XDF file.

Run as ``python -m brainstream.realtime.session.recorder_node --config PIPELINE.yaml --out FILE.xdf``;
stops cleanly
on SIGINT / SIGTERM (footers written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.recording import Recorder
    from brainstream.realtime.recording.bus_recorder import BusRecorder
    from brainstream.realtime.session.supervisor import stop_when_orphaned

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
    stop_when_orphaned()
    out = _unused_path(Path(args.out))
    out.parent.mkdir(parents=True, exist_ok=True)
    keeper = contextlib.nullcontext()
    if args.reconstructions:
        from brainstream.realtime.session.reconstructions import ReconstructionKeeper

        keeper = ReconstructionKeeper(
            args.reconstructions, args.gallery, config.bus.sub, keys=config.bus.keys_dir
        )
    with Recorder(out, on_alarm=lambda m: logger.error("recording alarm: %s", m)) as recorder:
        with BusRecorder(recorder, config.bus.sub, keys=config.bus.keys_dir) as bus, keeper:
            for sel in (config.input.signal, config.input.markers):
                if sel is not None:
                    _add_when_there(recorder, sel, stop)
            stop.wait()
        logger.info("recorded %d bus messages into %s", bus.n_messages, [str(p) for p in recorder.paths])
    summary = {
        "paths": [str(p) for p in recorder.paths],
        "streams": recorder.stats["streams"],
        "bus_messages": bus.n_messages,
        "alarms": recorder.alarms,
        "events": recorder.events,
    }
    print("recorder stopped: " + json.dumps(summary, default=str), flush=True)
    return 0


def _add_when_there(recorder, sel, stop: threading.Event) -> None:
    """Record the stream as soon as it appears: the session's sources may start after the recorder (and a
    loaded machine may take longer than the stream's timeout); a recorder that gave up would have to be
    restarted into a second file."""
    waited = 0.0
    while not stop.is_set():
        try:
            recorder.add_stream(sel.name, stype=sel.type, source_id=sel.source_id, timeout=1.0)
            return
        except LookupError:
            waited += 1.0
            if waited >= sel.timeout_s and waited - 1.0 < sel.timeout_s:
                logger.error("no stream %r after %.0f s; still waiting for it", sel.name, waited)


def _unused_path(path: Path) -> Path:
    """``path``, or ``<stem>-2.xdf``, ``-3``... when it exists: a restarted recorder must not truncate the
    session's recording so far."""
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    if candidate != path:
        logger.warning("%s exists (a recorder before this one wrote it); recording to %s", path, candidate)
    return candidate


if __name__ == "__main__":
    import os
    import sys

    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the file is closed: no interpreter finalisation to outlast the supervisor's stop budget
