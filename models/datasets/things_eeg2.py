"""THINGS-EEG2, preprocessed release → ``EpochsDataset``.

The release (Gifford et al. 2022) holds, per subject, ``sub-XX/preprocessed_eeg_training.npy`` and
``sub-XX/preprocessed_eeg_test.npy``: each a PICKLED dict ``{'preprocessed_eeg_data': (n_images,
n_repetitions, n_channels, n_times), 'ch_names': [...], 'times': (n_times,)}`` (16540 × 4 and 200 × 80
image conditions; 17 occipito-parietal channels at 100 Hz, or 63 at 250 Hz in the variant ATM uses),
written with ``np.save`` of a dict or with ``pickle.dump``. ``image_metadata.npy`` (shipped with the
images) is another pickled dict: ``train_img_concepts``, ``train_img_files``, ``test_img_concepts``,
``test_img_files``, in the order of the EEG arrays.

brainstream never unpickles while loading. A one-time, explicit conversion writes plain arrays + JSON next
to the originals::

    python -m brainstream.models.datasets.things_eeg2 convert ROOT [--image-metadata PATH]

It reads the pickles with a restricted unpickler that can only rebuild numpy arrays, dicts, lists and
strings (anything else, such as a function call hidden in a tampered file, is refused), and writes
``<name>_data.npy`` (float32, ``allow_pickle=False``), ``<name>_info.json`` and ``image_metadata.json``.

The release is already epoched and preprocessed offline (non-causal filters, multivariate noise
normalisation), so the online chain cannot be re-run on it: datasets from this loader carry
``info['train_serve_parity'] = False``; a model trained on them needs calibration before live use.
Image ids are file stems (``aardvark_01b``), as ``brainstream gallery build`` names them.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.datasets.common import positions_for, resolve_gallery
from brainstream.models.datasets.epochs import DatasetError, EpochsDataset

logger = logging.getLogger(__name__)

FILES = {"train": "preprocessed_eeg_training", "test": "preprocessed_eeg_test"}
METADATA = "image_metadata"
CONVERT_HINT = (
    "convert the release once with `python -m brainstream.models.datasets.things_eeg2 convert {root}`"
)


# --------------------------------------------------------------------------------------- safe conversion
class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; refuses every other global (no code can run)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: a THINGS-EEG2 file holds only arrays, lists and strings, "
            "so this file is not what it claims to be"
        )


def read_release_pickle(path: Path) -> Any:
    """Read a pickled release file (``np.save`` of a dict, or a bare pickle) with the restricted unpickler."""
    raw = path.read_bytes()
    stream = io.BytesIO(raw)
    if raw.startswith(b"\x93NUMPY"):
        version = np.lib.format.read_magic(stream)
        _, _, dtype = (
            np.lib.format.read_array_header_1_0(stream)
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0(stream)
        )
        if not dtype.hasobject:  # already a plain array: no pickle involved
            return np.load(path, allow_pickle=False)
    obj = _ArraysOnlyUnpickler(stream).load()
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        obj = obj.item()  # np.save of a dict wraps it in a 0-d object array
    return obj


def _plain_strings(values: Any) -> list[str]:
    return [str(v) for v in np.asarray(values).ravel().tolist()]


def convert_release(root: str | Path, image_metadata: str | Path | None = None) -> list[Path]:
    """Write the safe layout next to the pickled originals; returns the files written."""
    root = Path(root).expanduser()
    written: list[Path] = []
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        raise DatasetError(f"no sub-XX folders under {root}; pass the folder that holds sub-01, sub-02, ...")
    for sub in subjects:
        for stem in FILES.values():
            src = sub / f"{stem}.npy"
            if not src.is_file():
                continue
            content = read_release_pickle(src)
            if not isinstance(content, dict) or "preprocessed_eeg_data" not in content:
                raise DatasetError(
                    f"{src}: expected a dict with 'preprocessed_eeg_data', got {type(content).__name__}"
                )
            data = np.asarray(content["preprocessed_eeg_data"], dtype=np.float32)
            info = {
                "ch_names": _plain_strings(content.get("ch_names", [])),
                "times": [float(t) for t in np.asarray(content.get("times", [])).ravel()],
                "shape": list(data.shape),
                "source": src.name,
            }
            np.save(sub / f"{stem}_data.npy", data, allow_pickle=False)
            (sub / f"{stem}_info.json").write_text(json.dumps(info), encoding="utf-8")
            written += [sub / f"{stem}_data.npy", sub / f"{stem}_info.json"]
    meta_src = Path(image_metadata).expanduser() if image_metadata else root / f"{METADATA}.npy"
    if meta_src.is_file():
        meta = read_release_pickle(meta_src)
        keys = ("train_img_concepts", "train_img_files", "test_img_concepts", "test_img_files")
        if not isinstance(meta, dict) or any(k not in meta for k in keys):
            raise DatasetError(f"{meta_src}: expected a dict with keys {keys}")
        (root / f"{METADATA}.json").write_text(
            json.dumps({k: _plain_strings(meta[k]) for k in keys}), "utf-8"
        )
        written.append(root / f"{METADATA}.json")
    else:
        logger.warning("no %s found; pass --image-metadata (it ships with the THINGS-EEG2 images)", meta_src)
    return written


# --------------------------------------------------------------------------------------------- loading
def _subject_dir(root: Path, subject: str | int) -> tuple[Path, int]:
    text = str(subject).removeprefix("sub-")
    if not text.isdigit():
        raise DatasetError(f"THINGS-EEG2 subjects are numbers 1-10 (or 'sub-01'), got {subject!r}")
    folder = root / f"sub-{int(text):02d}"
    if not folder.is_dir():
        found = sorted(p.name for p in root.glob("sub-*"))
        raise DatasetError(f"no folder {folder}; subjects found under {root}: {found or 'none'}")
    return folder, int(text)


def _load_part(folder: Path, root: Path, stem: str) -> tuple[np.ndarray, dict]:
    data_path, info_path = folder / f"{stem}_data.npy", folder / f"{stem}_info.json"
    if not data_path.is_file() or not info_path.is_file():
        if (folder / f"{stem}.npy").is_file():
            raise DatasetError(
                f"{folder / (stem + '.npy')} is a pickled file, which brainstream does not load; "
                + CONVERT_HINT.format(root=root)
            )
        raise DatasetError(f"missing {data_path}: is {root} the THINGS-EEG2 preprocessed release?")
    data = np.load(data_path, allow_pickle=False, mmap_mode="r")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if data.ndim != 4:
        raise DatasetError(f"{data_path}: expected (images, repetitions, channels, times), got {data.shape}")
    if len(info.get("ch_names", [])) != data.shape[2] or len(info.get("times", [])) != data.shape[3]:
        raise DatasetError(f"{info_path}: ch_names/times do not match the data shape {data.shape}")
    return data, info


def _image_ids(root: Path, image_metadata: str | Path | None, split: str, n: int) -> list[str]:
    path = Path(image_metadata).expanduser() if image_metadata else root / f"{METADATA}.json"
    if not path.is_file():
        raise DatasetError(
            f"no image metadata at {path}: it names the image of each EEG row; "
            + CONVERT_HINT.format(root=root)
            + " --image-metadata PATH/image_metadata.npy"
        )
    meta = json.loads(path.read_text(encoding="utf-8"))
    files = meta[f"{split}_img_files"]
    if len(files) != n:
        raise DatasetError(f"{path} lists {len(files)} {split} images but the EEG has {n} image conditions")
    return [Path(f).stem for f in files]


def load_things_eeg2(
    root: str | Path,
    subject: str | int,
    *,
    gallery: Any = None,
    tmin: float | None = None,
    tmax: float | None = None,
    average_train: bool = False,
    image_metadata: str | Path | None = None,
    progress: bool = False,
) -> EpochsDataset:
    """Load one subject of the (converted) THINGS-EEG2 preprocessed release.

    Parameters
    ----------
    root : path
        Folder holding ``sub-01`` ... ``sub-10`` (and ``image_metadata.json`` after conversion).
    subject : int | str
        1-10, ``"01"`` or ``"sub-01"``.
    gallery : Gallery | path | None
        Embeddings of the THINGS-EEG2 images (``brainstream gallery build``); None: no targets.
    tmin, tmax : float | None
        Crop the epochs to ``[tmin, tmax)`` s (None: keep the release's window).
    average_train : bool
        Average the 4 training repetitions (the ATM recipe keeps them apart: False).
    image_metadata : path | None
        ``image_metadata.json`` elsewhere than ``root``.
    progress : bool
        Unused (the release is already epoched); kept for a uniform loader signature.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"THINGS-EEG2 root not found: {root}")
    folder, subject_id = _subject_dir(root, subject)
    gal = resolve_gallery(gallery, default=False)
    parts, ch_names, times = [], None, None
    for split, stem in FILES.items():
        data, info = _load_part(folder, root, stem)
        ids = _image_ids(root, image_metadata, split, data.shape[0])
        if gal is not None:
            gal.indices_of(sorted(set(ids)))
        if ch_names is not None and (info["ch_names"] != ch_names or info["times"] != times):
            raise DatasetError(f"{folder}: training and test files differ in channels or times")
        ch_names, times = info["ch_names"], info["times"]
        t = np.asarray(times)
        keep = np.ones(t.size, dtype=bool)
        eps = 1e-9
        if tmin is not None:
            keep &= t >= tmin - eps
        if tmax is not None:
            keep &= t < tmax - eps
        if not keep.any():
            raise DatasetError(
                f"window [{tmin}, {tmax}) s holds no sample of the release ({t[0]:g}..{t[-1]:g} s)"
            )
        n_img, n_rep = data.shape[:2]
        block = np.asarray(data[..., keep], dtype=np.float32)
        if split == "train" and average_train:
            block, reps = block.mean(axis=1, keepdims=True), np.full(n_img, n_rep)
        else:
            reps = np.ones(n_img * n_rep, dtype=np.int64)
        parts.append(
            (block.reshape(-1, *block.shape[2:]), np.repeat(ids, block.shape[1]).tolist(), split, reps)
        )
        kept_times = t[keep]
    sfreq = float(1.0 / np.median(np.diff(kept_times))) if kept_times.size > 1 else float("nan")
    return EpochsDataset(
        X=np.concatenate([p[0] for p in parts]),
        image_ids=[i for p in parts for i in p[1]],
        splits=np.concatenate([np.full(len(p[1]), p[2]) for p in parts]),
        subject_ids=np.full(sum(len(p[1]) for p in parts), subject_id),
        ch_names=list(ch_names),
        sfreq=round(sfreq, 6),
        tmin=float(kept_times[0]),
        space=getattr(gal, "space", None),
        gallery=gal,
        positions=positions_for(list(ch_names), "eeg"),
        modality="eeg",
        n_repetitions=np.concatenate([p[3] for p in parts]),
        info={
            "source": str(folder),
            "loader": "things_eeg2",
            "train_serve_parity": False,
            "preprocessing": "THINGS-EEG2 release (offline, non-causal; not brainstream's online chain)",
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m brainstream.models.datasets.things_eeg2",
        description="Convert the pickled THINGS-EEG2 release once into plain .npy + JSON "
        "(with a restricted unpickler that can only rebuild arrays).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    conv = sub.add_parser(
        "convert", help="write <name>_data.npy / <name>_info.json next to each pickled file"
    )
    conv.add_argument("root", help="folder holding sub-01 ... sub-10")
    conv.add_argument(
        "--image-metadata", default=None, help="image_metadata.npy (default: ROOT/image_metadata.npy)"
    )
    args = parser.parse_args(argv)
    try:
        written = convert_release(args.root, args.image_metadata)
    except (DatasetError, pickle.UnpicklingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
