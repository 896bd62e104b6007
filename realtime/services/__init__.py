"""Bus service nodes: retrieval (embedding → top-k gallery images) and generator (embedding → image).

From Python (in-process, e.g. tests and ``brainstream demo``)::

    from brainstream.realtime.services import GeneratorNode, RetrievalNode

    with RetrievalNode("demo", k=5), GeneratorNode("tiny"):   # default bus endpoints
        ...                                                  # embeddings in, retrieval / image out

As processes: ``brainstream retrieve --gallery DIR`` and ``brainstream generate --config FILE``.
"""

from brainstream.realtime.services.base import LatencyStats, ServiceNode
from brainstream.realtime.services.generator_node import GeneratorNode
from brainstream.realtime.services.retrieval_node import RetrievalNode

__all__ = ["GeneratorNode", "LatencyStats", "RetrievalNode", "ServiceNode"]
