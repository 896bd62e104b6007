"""``brainstream gallery``: build image galleries (embeddings + thumbnails in one named space).

``brainstream gallery build IMAGES_DIR --embedder demo|clip --out DIR`` embeds every image under
IMAGES_DIR (id = file name without extension); ``brainstream gallery demo --out DIR`` builds the demo
stimulus set; ``brainstream gallery info DIR`` describes a gallery.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "build or inspect image galleries (embeddings in one named space)"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    build = sub.add_parser("build", help="embed a folder of images into a gallery")
    build.add_argument("images_dir", help="folder of images (searched recursively); id = file name stem")
    build.add_argument("--embedder", required=True, choices=("demo", "clip"), help="image embedder")
    build.add_argument("--out", required=True, help="gallery folder to create (must not exist or be empty)")
    build.add_argument("--model-dir", default=None, help="clip: local CLIPVisionModelWithProjection folder")
    build.add_argument(
        "--space", default=None, help="clip: embedding-space id, e.g. openclip:ViT-H-14:laion2b_s32b_b79k"
    )
    build.add_argument("--dim", type=int, default=128, help="demo: embedding size (default 128)")
    build.add_argument("--device", default="cpu", help="clip: torch device (default cpu)")
    build.add_argument("--batch-size", type=int, default=32, help="images per embedding batch")
    build.add_argument("--float16", action="store_true", help="store embeddings as float16 (half the size)")
    add_json_flag(build)
    demo = sub.add_parser("demo", help="build the demo stimulus set (skimage images + procedural images)")
    demo.add_argument("--out", required=True, help="gallery folder to create")
    demo.add_argument("--n-procedural", type=int, default=1000, help="number of procedural images")
    demo.add_argument("--seed", type=int, default=0, help="seed of the procedural images")
    add_json_flag(demo)
    info = sub.add_parser("info", help="describe a gallery folder")
    info.add_argument("dir", help="gallery folder")
    add_json_flag(info)


def find_images(images_dir: Path) -> list[tuple[str, Path]]:
    """``(id, path)`` for every image file under ``images_dir``, sorted; ids are file stems and unique."""
    if not images_dir.is_dir():
        raise UserFacingError(f"image folder not found: {images_dir}; pass a folder of .png/.jpg files")
    files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserFacingError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) under {images_dir}; check the folder and file types"
        )
    by_id: dict[str, Path] = {}
    for path in files:
        image_id = path.stem
        if image_id in by_id:
            raise UserFacingError(
                f"two images would get the id {image_id!r}: {by_id[image_id]} and {path}; ids are file names "
                "without extension, so rename one of them"
            )
        if image_id.startswith("."):
            continue
        by_id[image_id] = path
    return list(by_id.items())


def _read_image(path: Path):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserFacingError(f"cannot read image {path}: {exc}; remove or replace the file") from None


class _LazyImages(Sequence):
    """Images read from disk on access, so a large folder never sits in memory at once."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [_read_image(p) for p in self.paths[index]]
        return _read_image(self.paths[index])


def _build(args: argparse.Namespace) -> dict:
    from brainstream.models.embedders import embed_images, get_embedder
    from brainstream.models.gallery import Gallery, GalleryError

    out = Path(args.out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise UserFacingError(f"{out} exists and is not empty; choose a new --out folder or delete it")
    if args.embedder == "clip" and not args.model_dir:
        raise UserFacingError("--embedder clip needs --model-dir (a local CLIP vision model folder)")
    items = find_images(Path(args.images_dir).expanduser())
    try:
        if args.embedder == "clip":
            embedder = get_embedder("clip", model_dir=args.model_dir, space=args.space, device=args.device)
        else:
            embedder = get_embedder("demo", dim=args.dim)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UserFacingError(str(exc)) from None
    images = _LazyImages([path for _, path in items])
    t0 = time.perf_counter()
    embeddings = embed_images(embedder, images, batch_size=args.batch_size, progress=True)
    try:
        gallery = Gallery.save(
            out,
            embeddings=embeddings,
            ids=[image_id for image_id, _ in items],
            space=embedder.space,
            embedder=args.embedder,
            images=images,
            extra={"source": str(Path(args.images_dir).expanduser().resolve())},
            dtype="float16" if args.float16 else "float32",
            progress=True,
        )
    except GalleryError as exc:
        raise UserFacingError(str(exc)) from None
    return _describe(gallery) | {"seconds": round(time.perf_counter() - t0, 2)}


def _describe(gallery) -> dict:
    return {
        "dir": str(gallery.root),
        "space": gallery.space,
        "embedder": gallery.embedder,
        "n": len(gallery),
        "dim": gallery.dim,
        "has_images": bool(gallery.meta.get("has_images", False)),
    }


def run(args: argparse.Namespace) -> int:
    from brainstream.models.gallery import Gallery, GalleryError

    if args.action == "build":
        result = _build(args)
    elif args.action == "demo":
        from brainstream.models.demo_gallery import build_demo_gallery

        out = Path(args.out).expanduser()
        if out.exists() and any(out.iterdir()):
            raise UserFacingError(f"{out} exists and is not empty; choose a new --out folder or delete it")
        t0 = time.perf_counter()
        gallery = build_demo_gallery(out, n_procedural=args.n_procedural, seed=args.seed)
        result = _describe(gallery) | {"seconds": round(time.perf_counter() - t0, 2)}
    else:
        try:
            result = _describe(Gallery.load(args.dir))
        except GalleryError as exc:
            raise UserFacingError(str(exc)) from None
    if args.json:
        print_json(result)
    else:
        print(
            f"gallery {result['dir']}: {result['n']} images, {result['dim']}-d, space {result['space']}"
            + (f" (built in {result['seconds']} s)" if "seconds" in result else "")
        )
    return 0
