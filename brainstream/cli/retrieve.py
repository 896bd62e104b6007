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
        "--dtype", default="float32", choices=("float32", "float16"), help="exact and faiss-ivf storage"
    )
    parser.add_argument(
        "--nlist", type=int, default=None, help="faiss-ivf lists (default sqrt(gallery size))"
    )
    parser.add_argument(
        "--nprobe",
        default="auto",
        help="faiss-ivf lists probed per query, or 'auto' (default): the fewest reaching --target-recall on "
        "validation queries (every list up to 100k images)",
    )
    parser.add_argument(
        "--target-recall", type=float, default=0.95, help="recall@k vs exact search for --nprobe auto"
    )
    parser.add_argument(
        "--validation-queries",
        default=None,
        metavar="NPY",
        help="(n, dim) decoded validation embeddings to tune --nprobe on (default: noisy gallery views)",
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
            index_options=_index_options(args),
            sub_endpoint=args.sub,
            pub_endpoint=args.pub,
            keys=args.keys,
        )
    except (GalleryError, ImportError, ValueError, OSError) as exc:
        raise UserFacingError(str(exc)) from None
    if node.retriever.tuning is not None:
        t = node.retriever.tuning
        print(
            f"retrieval node: nprobe {t['nprobe']} gives recall@{node.k} {t['recall']:.3f} on {t['queries']}"
        )
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


def _index_options(args: argparse.Namespace) -> dict:
    """The faiss-ivf settings of the command line, checked."""
    if args.nprobe != "auto" and not str(args.nprobe).isdigit():
        raise ValueError(f"--nprobe must be a positive integer or 'auto', got {args.nprobe!r}")
    options: dict = {"nlist": args.nlist, "target_recall": args.target_recall, "nprobe": args.nprobe}
    if args.nprobe != "auto":
        options["nprobe"] = int(args.nprobe)
    if args.validation_queries:
        import numpy as np

        options["validation_queries"] = np.load(args.validation_queries, allow_pickle=False)
    return options
