"""Freezing a node's start-up heap: the collector's full collections no longer walk it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
import numpy, brainstream.realtime.decoder.node  # a node's imports: a heap of many objects
from brainstream.realtime.heap import freeze_startup_heap
before = len(gc.get_objects())
frozen = freeze_startup_heap()
tracked = len(gc.get_objects())
print(json.dumps({"before": before, "frozen": frozen, "tracked": tracked}))
"""


def test_freezing_moves_the_startup_heap_out_of_the_collectors_walk():
    # in a process of its own: freezing is process-wide and would hold the test session's heap too
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["before"] > 10_000
    assert counts["frozen"] >= 0.9 * counts["before"]
    assert counts["tracked"] < 0.01 * counts["before"]  # what a full collection walks from now on
