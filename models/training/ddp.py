"""Multi-GPU (or multi-process CPU) training with ``torchrun`` + DistributedDataParallel.

Usage::

    torchrun --nproc_per_node 4 -m models.training.ddp --config things_meg_brain_module --out runs/meg

Every rank loads the same data and shuffles with the same seed, then takes a disjoint slice of each batch;
DDP averages the gradients, so all ranks hold identical weights and take identical early-stopping
decisions without extra communication. The CLIP loss uses each rank's local batch as negatives (batch
size per rank = ``optim.batch_size / world_size``). Rank 0 evaluates and writes the checkpoint. The backend
is NCCL on GPUs and gloo on CPU (tested with 2 CPU processes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.distributed as torch_dist


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all parameters and buffers (to check that ranks agree)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", nargs="+", default=None, help="replaces the config's data.paths")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--digest-dir", default=None, help="write each rank's parameter digest here (tests)")
    args = parser.parse_args(argv)

    from brainstream.models.training.config import load_training_config
    from brainstream.models.training.loading import load_data
    from brainstream.models.training.trainer import DistContext, train

    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        config = load_training_config(args.config)
        updates = {"device": "cuda" if use_cuda else "cpu"}
        if args.data:
            updates["data"] = config.data.model_copy(update={"paths": list(args.data)})
        if args.max_epochs is not None:
            updates["optim"] = config.optim.model_copy(update={"max_epochs": args.max_epochs})
        config = config.model_copy(update=updates)
        data = load_data(config, progress=rank == 0)
        result = train(config, args.out, data=data, progress=rank == 0, dist=DistContext(rank, world))
        if args.digest_dir:
            Path(args.digest_dir).mkdir(parents=True, exist_ok=True)
            record = {"rank": rank, "world_size": world, "digest": parameter_digest(result.model)}
            (Path(args.digest_dir) / f"rank{rank}.json").write_text(json.dumps(record))
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
