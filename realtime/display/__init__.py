"""The live display (issue 8): what the experimenter watches during a session.

``DisplayState`` (pure Python, thread-safe) holds the newest message per topic, signal previews, latency
statistics, accuracy and alarms; ``BusThread`` fills it from the bus; ``DisplayWindow`` draws it at 60 fps.
``run_display`` wires the three together (the ``brainstream display`` verb).

In-process, from the main thread::

    from realtime.display import run_display
    summary = run_display(endpoint="tcp://127.0.0.1:5702", seconds=30, screenshot="shot.png", after=20)
    summary["sample_to_display"]["retrieval"]["p50_ms"]
"""

from realtime.display.app import run_display
from realtime.display.state import DisplayState

__all__ = ["DisplayState", "run_display"]
