"""Keep the cyclic garbage collector off a long-lived node's start-up heap.

A node that has loaded torch, mne, Qt or a model holds a few hundred thousand objects that live as long as
it does. A full (generation-2) collection walks all of them: about 100 ms on this project's CPU, a stall
that lands on whatever window or frame is in flight. Freezing the heap once start-up is over
(``gc.freeze``) moves those objects out of the collector's reach; collections then walk only what the
session itself allocates.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect what start-up left as garbage, then freeze every surviving object. Returns how many objects
    are frozen. Call it once, in a node's own process, after the node is warm and before it runs."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
