"""Offline simulation: an RSVP session like THINGS written to a FIF file with image-id annotations.

Design (defaults as THINGS-MEG): training images are each shown once, test images ``test_repeats`` times, in
a shuffled order; each image stays ``image_s`` on screen, then a blank of ``isi_s`` ± ``isi_jitter_s``.
Annotations are the stimulus markers of :mod:`models.events` (``train/<id>``, ``test/<id>``) with the image
duration; ``raw.info['description']`` holds a JSON string (gallery folder, space, seed, SNR, design...).

The data are generated while mne writes the file (a lazily read ``Raw``), so memory stays at one buffer no
matter how long the session is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.events import format_stimulus_marker
from brainstream.realtime.simulation.subject import DEFAULT_SNR, VirtualSubject

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RSVPDesign:
    """Which images are shown, how often and with what timing (seconds)."""

    n_train_images: int = 600
    n_test_images: int = 50
    test_repeats: int = 4
    image_s: float = 0.5
    isi_s: float = 1.0
    isi_jitter_s: float = 0.2
    lead_in_s: float = 2.0
    tail_s: float = 2.0
    design_seed: int = 0

    def check(self, n_gallery: int) -> None:
        if self.n_train_images < 0 or self.n_test_images < 0 or self.test_repeats < 1:
            raise ValueError("image counts must be >= 0 and test_repeats >= 1")
        if self.n_train_images + self.n_test_images == 0:
            raise ValueError("nothing to show: n_train_images + n_test_images is 0")
        if self.n_train_images + self.n_test_images > n_gallery:
            raise ValueError(
                f"the design needs {self.n_train_images} train + {self.n_test_images} test distinct images "
                f"but the gallery has {n_gallery}; lower the counts or use a bigger gallery (--gallery DIR)"
            )
        if self.image_s <= 0 or self.isi_s < 0 or not 0 <= self.isi_jitter_s <= self.isi_s:
            raise ValueError("need image_s > 0 and 0 <= isi_jitter_s <= isi_s")


@dataclass(frozen=True)
class Trial:
    onset: float
    offset: float
    image_id: str
    split: str

    @property
    def marker(self) -> str:
        return format_stimulus_marker(self.split, self.image_id)


def make_rsvp_schedule(image_ids: Sequence[str], design: RSVPDesign) -> list[Trial]:
    """Trials of one session; the same ``design_seed`` and gallery give the same images and order.

    Test images are the first ``n_test_images`` of a seeded permutation of the gallery (so every subject
    simulated with the same design shares its test set, as in THINGS), training images the next ones.
    """
    design.check(len(image_ids))
    rng = np.random.default_rng([design.design_seed, 11])
    perm = rng.permutation(len(image_ids))
    test = [image_ids[i] for i in perm[: design.n_test_images]]
    train = [image_ids[i] for i in perm[design.n_test_images : design.n_test_images + design.n_train_images]]
    items = [("train", i) for i in train] + [("test", i) for i in test for _ in range(design.test_repeats)]
    order = rng.permutation(len(items))
    trials = []
    t = design.lead_in_s
    for k in order:
        split, image_id = items[k]
        trials.append(Trial(t, t + design.image_s, image_id, split))
        t += design.image_s + design.isi_s + rng.uniform(-design.isi_jitter_s, design.isi_jitter_s)
    return trials


@dataclass(frozen=True)
class SimulationResult:
    path: Path
    n_trials: int
    duration_s: float
    n_channels: int
    sfreq: float
    metadata: dict[str, Any]


def simulate_recording(
    out: str | Path,
    *,
    profile: str = "ctf275_things_meg",
    gallery: Any = None,
    seed: int = 0,
    snr: float = DEFAULT_SNR,
    design: RSVPDesign | None = None,
    line_freq: float = 50.0,
    overwrite: bool = False,
    progress: bool = True,
    subject_kwargs: dict[str, Any] | None = None,
) -> SimulationResult:
    """Simulate an RSVP session of one virtual subject and write it to ``out`` (``.fif``).

    Parameters
    ----------
    out : path
        Output file; must end in ``.fif`` or ``_raw.fif`` (mne's convention).
    profile : str
        Device profile name or path (``ctf275_things_meg``, ``eeg64_1000hz``, ``things_eeg2``...).
    gallery : Gallery | path | None
        Stimulus gallery; None uses the demo gallery (``models.demo_gallery.default_gallery_dir()``).
    seed : int
        Subject seed.
    snr : float
        Signal-to-noise ratio (see :class:`VirtualSubject`).
    design : RSVPDesign | None
        Session design; default 600 train images once + 50 test images × 4.
    line_freq : float
        Mains frequency (Hz).
    overwrite : bool
        Replace an existing file.
    progress : bool
        Show a tqdm progress bar.
    subject_kwargs : dict | None
        Extra arguments for :class:`VirtualSubject`.

    Returns
    -------
    SimulationResult
    """
    import mne

    from brainstream.models.gallery import Gallery

    out = Path(out).expanduser()
    if out.suffix != ".fif":
        raise ValueError(f"output must be a .fif file (e.g. sub-01_raw.fif), got {out}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) or choose another name")
    if gallery is None:
        from brainstream.models.demo_gallery import default_gallery_dir

        gallery = default_gallery_dir()
    if isinstance(gallery, str | Path):
        gallery = Gallery.load(gallery)
    design = design or RSVPDesign()
    trials = make_rsvp_schedule(gallery.ids, design)

    def make_subject() -> VirtualSubject:
        subject = VirtualSubject(
            profile, gallery, seed=seed, snr=snr, line_freq=line_freq, **(subject_kwargs or {})
        )
        for trial in trials:
            subject.add_stimulus(trial.onset, trial.offset, trial.image_id)
        return subject

    subject = make_subject()
    n_samples = int(np.ceil((trials[-1].offset + design.isi_s + design.tail_s) * subject.sfreq))
    info = _recording_info(subject)
    meta = subject.metadata(design=asdict(design), n_trials=len(trials), line_freq=line_freq)
    with info._unlock():
        info["description"] = json.dumps(meta, sort_keys=True)
        info["line_freq"] = line_freq
    raw = _GeneratedRaw(info, n_samples, subject, make_subject, progress=progress)
    raw.set_annotations(
        mne.Annotations(
            onset=[t.onset for t in trials],
            duration=[t.offset - t.onset for t in trials],
            description=[t.marker for t in trials],
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    raw.save(out, overwrite=overwrite, fmt="single", verbose=False)
    raw.close_progress()
    return SimulationResult(
        out, len(trials), n_samples / subject.sfreq, subject.n_channels, subject.sfreq, meta
    )


def _recording_info(subject: VirtualSubject):
    """``mne.Info`` with the profile's channels and sensor geometry (CTF helmet / 10-05 montage)."""
    from brainstream.realtime.simulation.forward import eeg_info, meg_info

    profile = subject.profile
    return meg_info(profile) if profile.modality == "meg" else eeg_info(profile)


def _lazy_raw_base():
    from mne.io import BaseRaw

    return BaseRaw


class _SequentialSource:
    """Feeds a ``Raw`` reader from a subject, in order; a backwards read regenerates from the start."""

    def __init__(self, subject: VirtualSubject, make_subject: Callable[[], VirtualSubject], bar) -> None:
        self.subject = subject
        self.make_subject = make_subject
        self.bar = bar

        self._last: tuple[int, np.ndarray] = (0, np.zeros((subject.n_channels, 0), dtype=np.float32))

    def read(self, start: int, stop: int) -> np.ndarray:
        last_start, last = self._last
        if last_start <= start < self.subject.n_generated:  # mne probes a sample, then reads from 0 again
            head = last[:, start - last_start : stop - last_start]
        else:
            if start < self.subject.n_generated:  # same seed and schedule give the same data
                self.subject = self.make_subject()
            if start > self.subject.n_generated:
                self.subject.generate(start - self.subject.n_generated)
            head = np.zeros((self.subject.n_channels, 0), dtype=np.float32)
        new = self.subject.generate(stop - start - head.shape[1])
        block = np.concatenate([head, new], axis=1) if head.shape[1] else new
        self._last = (start, block)
        if self.bar is not None:
            self.bar.update(new.shape[1])
        return block


class _GeneratedRaw(_lazy_raw_base()):  # type: ignore[misc]
    """A ``Raw`` whose samples are generated on demand, in order, while mne reads (writes) it."""

    def __init__(
        self,
        info,
        n_samples: int,
        subject: VirtualSubject,
        make_subject: Callable[[], VirtualSubject],
        progress: bool,
    ) -> None:
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_samples, unit="sample", unit_scale=True, desc="simulating")
        # mne hands _read_segment_file only ``_raw_extras``: the generator travels there
        super().__init__(
            info,
            preload=False,
            last_samps=(n_samples - 1,),
            orig_format="single",
            raw_extras=[{"source": _SequentialSource(subject, make_subject, bar)}],
            buffer_size_sec=10.0,
            verbose=False,
        )

    def _read_segment_file(self, data, idx, fi, start, stop, cals, mult):
        from mne._fiff.utils import _mult_cal_one

        block = self._raw_extras[fi]["source"].read(start, stop)
        _mult_cal_one(data, block, idx, cals, mult)

    def close_progress(self) -> None:
        source = self._raw_extras[0]["source"]
        if source.bar is not None:
            source.bar.close()
            source.bar = None
