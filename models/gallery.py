"""A gallery: the images a decoder can retrieve, with their embeddings in one named space
(docs/architecture.md §7).

Folder layout::

    gallery.yaml      space, embedder, n, dim, dtype (+ free-form extras)
    embeddings.npy    (n, dim) float32 or float16, rows L2-normalised; read with allow_pickle=False
    ids.json          list of n image ids (str, unique, no '/')
    images/<id>.png   thumbnails (<= 128 px), optional

Every consumer checks the space: :meth:`Gallery.check_space` refuses a mismatch with an error naming both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

THUMBNAIL_SIZE = 128
NORM_TOLERANCE = 1e-2  # float16 storage rounds norms to about 1e-3


class GalleryError(ValueError):
    """A gallery folder is missing, incomplete or inconsistent."""


class SpaceMismatchError(ValueError):
    """Two artefacts live in different embedding spaces."""


def check_same_space(expected: str, actual: str, what: str = "gallery", hint: str = "") -> None:
    """Raise :class:`SpaceMismatchError` naming both spaces when they differ."""
    if expected != actual:
        raise SpaceMismatchError(
            f"embedding space mismatch: expected {expected!r} but the {what} is in {actual!r}; "
            + (
                hint
                or "use a gallery built with the same embedder (brainstream gallery build --embedder ...)"
            )
        )


def _check_ids(ids: Sequence[str]) -> list[str]:
    ids = [str(i) for i in ids]
    bad = [i for i in ids if not i or "/" in i or i.startswith(".")]
    if bad:
        raise GalleryError(f"image ids must be non-empty, contain no '/' and not start with '.': {bad[:5]}")
    seen: set[str] = set()
    dups = sorted({i for i in ids if i in seen or seen.add(i)})
    if dups:
        raise GalleryError(f"duplicate image ids: {dups[:10]}")
    return ids


def _check_embeddings(embeddings: np.ndarray, n_ids: int, source: str) -> None:
    if embeddings.ndim != 2 or embeddings.shape[0] != n_ids:
        raise GalleryError(
            f"{source}: expected embeddings of shape ({n_ids}, dim) to match {n_ids} ids, "
            f"got {embeddings.shape}"
        )
    if embeddings.dtype not in (np.float32, np.float16):
        raise GalleryError(f"{source}: embeddings must be float32 or float16, got {embeddings.dtype}")
    if not np.all(np.isfinite(embeddings)):
        raise GalleryError(f"{source}: embeddings contain NaN or Inf")
    norms = np.linalg.norm(embeddings.astype(np.float32), axis=1)
    if n_ids and np.max(np.abs(norms - 1.0)) > NORM_TOLERANCE:
        raise GalleryError(
            f"{source}: embeddings must be L2-normalised (row norms between {norms.min():.3f} and "
            f"{norms.max():.3f}); normalise them (models.embedders.l2_normalise) before saving"
        )


class Gallery:
    """Image ids + L2-normalised embeddings in one space, optionally with thumbnails on disk.

    Parameters
    ----------
    embeddings : array, shape (n, dim)
        Rows of unit norm (float32 or float16; kept as float32 in memory).
    ids : list of str
        One unique id per row.
    space : str
        Embedding-space id (docs/architecture.md §6).
    embedder : str
        Name of the embedder that made the embeddings.
    root : path | None
        The folder it was loaded from (thumbnails live under ``root/images``).
    meta : dict
        Everything else ``gallery.yaml`` holds.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        ids: Sequence[str],
        space: str,
        embedder: str = "unknown",
        root: str | Path | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not space or not isinstance(space, str):
            raise GalleryError(f"a gallery needs a space id string, got {space!r}")
        self.ids = _check_ids(ids)
        embeddings = np.asarray(embeddings)
        _check_embeddings(embeddings, len(self.ids), source="gallery")
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.space = space
        self.embedder = embedder
        self.root = Path(root) if root is not None else None
        self.meta = dict(meta or {})
        self._index = {image_id: i for i, image_id in enumerate(self.ids)}

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    def __repr__(self) -> str:
        return f"Gallery(n={len(self)}, dim={self.dim}, space={self.space!r}, root={self.root})"

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    # ------------------------------------------------------------------ lookups
    def index_of(self, image_id: str) -> int:
        """Row of ``image_id``; a clear error when the gallery does not know it."""
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(
                f"image id {image_id!r} is not in the gallery ({len(self)} images, space {self.space!r}"
                f"{', at ' + str(self.root) if self.root else ''}); use the gallery the stimuli came from"
            ) from None

    def indices_of(self, image_ids: Sequence[str]) -> np.ndarray:
        """Rows of many ids; the error lists every unknown id (up to 10)."""
        missing = [i for i in image_ids if i not in self._index]
        if missing:
            raise KeyError(
                f"{len(missing)} image id(s) unknown to the gallery ({len(self)} images, space {self.space!r}"
                f"{', at ' + str(self.root) if self.root else ''}): {sorted(set(missing))[:10]}; "
                "use the gallery the stimuli came from (the recording's metadata names it)"
            )
        return np.array([self._index[i] for i in image_ids], dtype=np.int64)

    def embeddings_for(self, image_ids: Sequence[str]) -> np.ndarray:
        """``(len(image_ids), dim)`` float32 embeddings, in the given order."""
        return self.embeddings[self.indices_of(list(image_ids))]

    def image_path(self, image_id: str) -> Path:
        """Path of the thumbnail of ``image_id`` (raises if the gallery has no folder or no such image)."""
        self.index_of(image_id)
        if self.root is None:
            raise GalleryError("this gallery was not loaded from a folder, so it has no image files")
        path = self.root / "images" / f"{image_id}.png"
        if not path.is_file():
            raise GalleryError(
                f"no thumbnail for {image_id!r} at {path}; rebuild the gallery with its images"
            )
        return path

    def load_image(self, image_id: str) -> np.ndarray:
        """The thumbnail of ``image_id`` as ``(H, W, 3)`` uint8."""
        from PIL import Image

        with Image.open(self.image_path(image_id)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)

    def check_space(self, space: str, what: str = "gallery") -> None:
        """Refuse a consumer in another space (e.g. a checkpoint's)."""
        check_same_space(space, self.space, what=what)

    def subset(self, image_ids: Sequence[str]) -> Gallery:
        """A gallery of only ``image_ids`` (same folder, same space)."""
        rows = self.indices_of(list(image_ids))
        return Gallery(
            self.embeddings[rows], list(image_ids), self.space, self.embedder, self.root, self.meta
        )

    # ------------------------------------------------------------------ disk
    @classmethod
    def load(cls, directory: str | Path, space: str | None = None, mmap: bool = False) -> Gallery:
        """Load a gallery folder; with ``space``, refuse a gallery from another space.

        Never unpickles: ``np.load(allow_pickle=False)``, ``json``, ``yaml.safe_load``.
        """
        root = Path(directory).expanduser()
        if not root.is_dir():
            raise GalleryError(
                f"gallery folder not found: {root}; build one with `brainstream gallery build IMAGES_DIR "
                "--embedder NAME --out DIR` or `brainstream gallery demo --out DIR`"
            )
        paths = {name: root / name for name in ("gallery.yaml", "embeddings.npy", "ids.json")}
        missing = [name for name, path in paths.items() if not path.is_file()]
        if missing:
            raise GalleryError(f"{root} is not a complete gallery: missing {', '.join(missing)}; rebuild it")
        try:
            meta = yaml.safe_load(paths["gallery.yaml"].read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise GalleryError(f"{paths['gallery.yaml']}: not valid YAML: {exc}") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("space"), str):
            raise GalleryError(f"{paths['gallery.yaml']}: expected a mapping with a 'space' string")
        try:
            ids = json.loads(paths["ids.json"].read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise GalleryError(f"{paths['ids.json']}: not valid JSON: {exc}") from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise GalleryError(f"{paths['ids.json']}: expected a JSON list of strings")
        try:
            embeddings = np.load(paths["embeddings.npy"], allow_pickle=False, mmap_mode="r" if mmap else None)
        except (ValueError, OSError) as exc:
            raise GalleryError(f"{paths['embeddings.npy']}: not a plain numeric .npy array ({exc})") from None
        _check_embeddings(np.asarray(embeddings), len(ids), source=str(paths["embeddings.npy"]))
        for key, value in (("n", len(ids)), ("dim", embeddings.shape[1])):
            if key in meta and int(meta[key]) != value:
                raise GalleryError(
                    f"{paths['gallery.yaml']}: says {key}={meta[key]} but the files hold {value}"
                )
        if space is not None:
            check_same_space(space, meta["space"], what=f"gallery at {root}")
        extras = {k: v for k, v in meta.items() if k not in ("space", "embedder")}
        return cls(embeddings, ids, meta["space"], meta.get("embedder", "unknown"), root, extras)

    @classmethod
    def save(
        cls,
        directory: str | Path,
        *,
        embeddings: np.ndarray,
        ids: Sequence[str],
        space: str,
        embedder: str = "unknown",
        images: Sequence[np.ndarray] | None = None,
        extra: Mapping[str, Any] | None = None,
        dtype: str = "float32",
        progress: bool = False,
    ) -> Gallery:
        """Write a gallery folder and return it loaded.

        ``images`` (same order as ``ids``) are stored as PNG thumbnails of at most 128 px. ``dtype`` is
        ``float32`` or ``float16`` for ``embeddings.npy``. The folder must not exist or be empty.
        """
        from tqdm.auto import tqdm

        root = Path(directory).expanduser()
        if root.exists() and any(root.iterdir()):
            raise GalleryError(f"{root} exists and is not empty; choose a new --out folder or delete it")
        if dtype not in ("float32", "float16"):
            raise GalleryError(f"dtype must be float32 or float16, got {dtype!r}")
        gallery = cls(embeddings, ids, space, embedder)  # validates before anything is written
        if images is not None and len(images) != len(gallery):
            raise GalleryError(f"got {len(images)} images for {len(gallery)} ids")
        root.mkdir(parents=True, exist_ok=True)
        if images is not None:
            from PIL import Image

            from brainstream.models.stimuli import to_rgb_uint8

            (root / "images").mkdir()
            for image_id, image in tqdm(
                zip(gallery.ids, images, strict=True),
                total=len(gallery),
                desc="thumbnails",
                disable=not progress,
            ):
                thumb = Image.fromarray(to_rgb_uint8(image))
                thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
                thumb.save(root / "images" / f"{image_id}.png", optimize=False)
        np.save(root / "embeddings.npy", gallery.embeddings.astype(dtype), allow_pickle=False)
        (root / "ids.json").write_text(json.dumps(gallery.ids), encoding="utf-8")
        meta = {
            "space": space,
            "embedder": embedder,
            "n": len(gallery),
            "dim": gallery.dim,
            "dtype": dtype,
            "has_images": images is not None,
            **dict(extra or {}),
        }
        # gallery.yaml last, through a rename: its presence marks a complete folder
        tmp = root / ".gallery.yaml.tmp"
        tmp.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        os.replace(tmp, root / "gallery.yaml")
        return cls.load(root)


def read_image_ids(path: str | Path) -> list[str]:
    """Image ids from a text file, one per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"image id list not found: {path}; write one image id per line")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]
