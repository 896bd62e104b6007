"""The live display: what the experimenter watches during a session.

``DisplayState`` (pure Python, thread-safe) holds the newest message per topic, signal previews, latency
statistics, accuracy and alarms; ``BusThread`` fills it from the bus; ``DisplayWindow`` draws each new
retrieval / image the moment it arrives and the traces at up to 30 frames/s (see its module for why the GUI
work is cut into short pieces). ``run_display`` wires the three together (the ``brainstream display``
verb).

In-process, from the main thread (Qt's rule); blocks until the window closes::

    from brainstream.realtime.display import run_display
    summary = run_display("tcp://127.0.0.1:5702", seconds=30, screenshot="shot.png", after=20)
    summary["sample_to_display"]["retrieval"]["p50_ms"]   # draw time - t_sample, whole run
    summary["draw_records"]                              # one row per drawn retrieval / image

As a process (SIGTERM or SIGINT close it cleanly; the summary is still written)::

    brainstream display --bus tcp://127.0.0.1:5702 --summary out.json --json [--screenshot s.png --after 20]

While it runs, the display publishes ``status.display`` once a second with ``stats`` such as
``retrieval_to_display_p50_ms`` / ``_p99_ms``, ``image_to_display_p50_ms``, ``fps``, ``dropped_*``, ``top1``.
"""

from brainstream.realtime.display.app import run_display
from brainstream.realtime.display.state import DisplayState

__all__ = ["DisplayState", "run_display"]
