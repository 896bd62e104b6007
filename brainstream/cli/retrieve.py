"""``brainstream retrieve --gallery DIR [--k 5]``: the retrieval node."""

from __future__ import annotations

import argparse
import json

from brainstream.cli import UserFacingError
from brainstream.cli._shutdown import exit_if_supervised, serve

HELP = "retrieval node: answer embeddings on the bus with their top-k gallery images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from brainstream.realtime.bus import DEFAULT_PUB_ENDPOINT, DEFAULT_SUB_ENDPOINT

    parser.add_argument(
        "--gallery", required=True, help="gallery folder, or 'demo' for the built-in demo gallery"
    )
    parser.add_argument("--k", type=int, default=5, help="images per answer (default 5)")
    parser.add_argument(
        "--backend", default="exact", choices=("exact", "faiss-ivf", "faiss-hnsw"), help="search backend"
    )
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "float16"), help="exact-search storage"
    )
    parser.add_argument(
        "--test-images",
        default=None,
        metavar="FILE",
        help="the session's test image ids, one per line: answers also give the rank among them (N-way)",
    )
    parser.add_argument("--sub", default=DEFAULT_SUB_ENDPOINT, help="bus endpoint to read embeddings from")
    parser.add_argument("--pub", default=DEFAULT_PUB_ENDPOINT, help="bus endpoint to publish answers to")
    parser.add_argument("--keys", default=None, metavar="DIR", help="CURVE keys folder (brainstream keys)")


def run(args: argparse.Namespace) -> int:
    from brainstream.models.gallery import GalleryError, read_image_ids
    from brainstream.realtime.bus import InsecureBindError, KeysError
    from brainstream.realtime.services import RetrievalNode

    try:
        test_images = read_image_ids(args.test_images) if args.test_images else None
        node = RetrievalNode(
            args.gallery,
            test_images=test_images,
            k=args.k,
            backend=args.backend,
            dtype=args.dtype,
            sub_endpoint=args.sub,
            pub_endpoint=args.pub,
            keys=args.keys,
        )
    except (GalleryError, ImportError, ValueError) as exc:
        raise UserFacingError(str(exc)) from None
    ready = (
        f"retrieval node: {len(node.retriever.ids)} images in {node.space!r}, top {node.k}, "
        f"{args.backend}; embeddings from {args.sub}, answers to {args.pub}; Ctrl-C stops"
    )
    try:
        # SIGINT and SIGTERM alike; as a standby it answers nothing until promoted
        serve(node, on_ready=lambda: print(ready, flush=True))
    except (InsecureBindError, KeysError, OSError) as exc:
        raise UserFacingError(str(exc)) from None
    print("retrieval node stopped: " + json.dumps(node.stats, default=float), flush=True)
    return exit_if_supervised(0)
