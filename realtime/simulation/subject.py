"""The virtual subject: continuous MEG/EEG that responds to images, generated chunk by chunk.

One generator serves offline simulation (FIF files) and live streaming (LSL): stimuli are scheduled with
:meth:`VirtualSubject.add_stimulus` (times in seconds on the subject's own clock, 0 at its first sample) and
:meth:`VirtualSubject.generate` returns the next samples. Output does not depend on how reads are chunked.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from brainstream.models.device_profile import DeviceProfile, load_device_profile
from brainstream.realtime.simulation.background import Background, BackgroundParams
from brainstream.realtime.simulation.forward import ForwardModel, load_forward
from brainstream.realtime.simulation.responses import ALPHA_ROIS_MM, ROIS_MM, ResponseModel, ResponseParams

logger = logging.getLogger(__name__)

# 2: subjects share a population code (ResponseParams.shared_fraction; 0 gives the subjects of version 1)
SIMULATION_VERSION = 2
# RMS of the single-trial image-specific signal (50-550 ms) over the 1-40 Hz background, all sensors.
# Tuned on MEG (ctf275_things_meg, subject 0, demo gallery; 800 training images seen once, 200 test images
# x 2, epochs 0-0.8 s at 120 Hz; `brainstream bench simulation --decoding`): single-trial 200-way top-5 is
# chance 2.5 %, ridge 10.5 %, ridge on epochs + 14-30 Hz log power 26.5 %, and a small dilated CNN trained
# with a CLIP+MSE loss on the same 640 trials 33.5 % (3.2x ridge): hard, possible, and nonlinear.
DEFAULT_SNR = 2.0
# RMS of the 1/f brain background at the sensors, by modality (SI units)
BRAIN_RMS = {"meg": 2e-13, "eeg": 1e-5}
ERD_DEPTH = 0.7


class GalleryLike(Protocol):
    embeddings: np.ndarray
    ids: list[str]
    space: str

    def index_of(self, image_id: str) -> int: ...


@dataclass
class SubjectStats:
    """Counters of what the subject generated."""

    samples: int = 0
    stimuli: int = 0
    late_stimuli: int = 0  # scheduled after their onset had already been generated (live lag)
    unknown_images: list[str] = field(default_factory=list)


@dataclass
class _Stimulus:
    """One presentation; its sensor-space responses are computed when first needed and dropped after use,
    so a long schedule costs almost no memory."""

    number: int
    image_index: int
    responses: list[np.ndarray | None] = field(default_factory=lambda: [None, None])
    computed: bool = False


@dataclass(order=True)
class _Pending:
    start: int
    length: int = field(compare=False)
    kind: str = field(compare=False)  # "on", "off" (responses) or "erd" (alpha suppression)
    stim: _Stimulus | None = field(compare=False, default=None)


class VirtualSubject:
    """A simulated MEG/EEG subject whose sensor data respond to images of a gallery.

    Parameters
    ----------
    profile : DeviceProfile | str
        Device profile (or its name under ``configs/devices``): channels, rate, modality, positions.
    gallery : Gallery | str | Path
        The stimulus gallery (``models.gallery.Gallery`` or its folder): image ids and embeddings.
    seed : int
        Subject identity: source positions, orientations, gains, latencies, alpha frequency, bad channel.
    snr : float
        RMS of the single-trial image-specific signal 50-550 ms after onset over the RMS of the 1-40 Hz
        background, across sensors (the image-independent P1/N1 comes on top). The default makes
        single-trial decoding hard but possible.
    line_freq : float
        Mains frequency (Hz).
    bad_channel : bool | None
        Whether one channel misbehaves; None lets the seed decide (about every other subject).
    block_s : float
        Length of the background's generation blocks (the unit of chunking invariance).
    shared_fraction : float | None
        Share of each feature direction drawn for the population (0: nothing shared, the subjects of
        simulator version 1; None: ``response_params``' value, by default
        :data:`~brainstream.realtime.simulation.responses.DEFAULT_SHARED_FRACTION`).
    response_params, background_params : dataclasses
        Model settings; defaults are the documented virtual subject.
    forward : ForwardModel | None
        A precomputed forward model (default: :func:`load_forward`, cached on disk).
    """

    def __init__(
        self,
        profile: DeviceProfile | str,
        gallery: GalleryLike | str | Path,
        seed: int = 0,
        snr: float = DEFAULT_SNR,
        *,
        line_freq: float = 50.0,
        bad_channel: bool | None = None,
        block_s: float = 1.0,
        shared_fraction: float | None = None,
        response_params: ResponseParams | None = None,
        background_params: BackgroundParams | None = None,
        forward: ForwardModel | None = None,
    ) -> None:
        self.profile = load_device_profile(profile) if isinstance(profile, str | Path) else profile
        if isinstance(gallery, str | Path):
            from brainstream.models.gallery import Gallery

            gallery = Gallery.load(gallery)
        if snr < 0 or not np.isfinite(snr):
            raise ValueError(f"snr must be a finite number >= 0, got {snr}")
        self.gallery = gallery
        self.seed = int(seed)
        self.snr = float(snr)
        self.line_freq = float(line_freq)
        self.sfreq = float(self.profile.sfreq)
        self.ch_names = list(self.profile.channels)
        self.forward = forward if forward is not None else load_forward(self.profile)
        if self.forward.gain.shape[0] != len(self.ch_names):
            raise ValueError(
                f"forward model has {self.forward.gain.shape[0]} channels but profile {self.profile.name} "
                f"has {len(self.ch_names)}; delete the forward cache ({self.forward.method}) and retry"
            )
        rng = np.random.default_rng([self.seed, 1])
        params = response_params or ResponseParams()
        if shared_fraction is not None:
            params = replace(params, shared_fraction=float(shared_fraction))
        self.responses = ResponseModel(gallery.embeddings, self.sfreq, rng, params)
        self.source_rois = self.responses.roi_names(rng)
        stim_idx = self._pick_sources(rng, [_roi_mm(r) for r in self.source_rois], jitter_mm=6.0)
        self.stim_mixing = self.forward.mixing(stim_idx, _orientations(rng, len(stim_idx)))
        self._stim_mixing32 = self.stim_mixing.astype(np.float32)
        alpha_centres = [(s * x, y, z) for (x, y, z) in ALPHA_ROIS_MM.values() for s in (1, -1)]
        alpha_idx = self._pick_sources(rng, alpha_centres, jitter_mm=4.0)
        alpha_mix = self.forward.mixing(alpha_idx, _orientations(rng, len(alpha_idx)))
        bp = background_params or BackgroundParams()
        noise_idx = rng.choice(self.forward.n_sources, bp.n_noise_sources, replace=False)
        noise_mix = self.forward.mixing(noise_idx, _orientations(rng, len(noise_idx)))
        brain_rms = BRAIN_RMS[self.profile.modality]
        unit_rms = np.sqrt(np.mean(np.sum(noise_mix.astype(np.float64) ** 2, axis=1) / bp.n_noise_sources))
        brain_scale = brain_rms / unit_rms
        if bad_channel is None:
            bad_channel = bool(rng.random() < 0.5)
        self.bad_channels = [self.ch_names[int(rng.integers(len(self.ch_names)))]] if bad_channel else []
        frontal = self._frontal_weight() if self.profile.modality == "eeg" else None
        self.block_len = max(1, int(round(block_s * self.sfreq)))
        self._bg_args = dict(
            n_channels=len(self.ch_names),
            sfreq=self.sfreq,
            noise_mixing=noise_mix,
            alpha_mixing=alpha_mix,
            brain_scale=brain_scale,
            sensor_rms=brain_rms,
            frontal_weight=frontal,
            line_freq=self.line_freq,
            block_len=self.block_len,
            params=bp,
        )
        bad_idx = self.ch_names.index(self.bad_channels[0]) if self.bad_channels else None
        self.background = Background(
            rng=np.random.default_rng([self.seed, 2]), seed=self.seed, bad_channel=bad_idx, **self._bg_args
        )
        with _OneBlasThread():
            self.stim_scale = self._calibrate_snr()
        self.stats = SubjectStats()
        self._pending: list[_Pending] = []
        self._bg_buf = np.zeros((len(self.ch_names), 0), dtype=np.float32)
        self._alpha_buf = np.zeros((len(self.ch_names), 0), dtype=np.float32)
        self._erd_kernel = self._make_erd_kernel()

    # ------------------------------------------------------------------ set-up helpers
    def _pick_sources(self, rng: np.random.Generator, centres_mm: list, jitter_mm: float) -> np.ndarray:
        """Nearest grid dipole to each (jittered) centre; distinct where the grid allows."""
        rr = self.forward.rr_mri
        chosen: list[int] = []
        for c in centres_mm:
            target = (np.asarray(c) + rng.normal(0, jitter_mm, 3)) / 1000.0
            order = np.argsort(np.linalg.norm(rr - target, axis=1))
            pick = next((int(i) for i in order[:8] if int(i) not in chosen), int(order[0]))
            chosen.append(pick)
        return np.array(chosen)

    def _frontal_weight(self) -> np.ndarray:
        """Blink topography: strongest at the most anterior, low sensors (Fp1/Fp2), fading backwards."""
        pos = self.forward.sensor_pos
        eyes = np.array([0.0, pos[:, 1].max() + 0.02, pos[:, 2].min() + 0.03])
        d = np.linalg.norm(pos - eyes, axis=1)
        return np.exp(-((d - d.min()) / 0.04))

    def _calibrate_snr(self) -> float:
        """Scale of the stimulus sources that gives the requested SNR (deterministic, from a few images)."""
        from scipy.signal import butter, sosfiltfilt

        probe = Background(
            rng=np.random.default_rng([self.seed, 3]),
            seed=self.seed + 10**6,
            bad_channel=None,
            **self._bg_args,
        )
        n_blocks = max(1, int(np.ceil(8.0 * self.sfreq / self.block_len)))
        blocks = [probe.next_block() for _ in range(n_blocks)]
        bg = np.concatenate([b + a for b, a in blocks], axis=1).astype(np.float64)
        sos = butter(4, [1.0, 40.0], btype="band", fs=self.sfreq, output="sos")
        bg_rms = float(
            np.sqrt(np.mean(sosfiltfilt(sos, bg, axis=1)[:, int(self.sfreq) : -int(self.sfreq)] ** 2))
        )
        rng = np.random.default_rng([self.seed, 4])
        n_img = min(64, len(self.gallery.ids))
        picks = rng.choice(len(self.gallery.ids), n_img, replace=False)
        t0, t1 = int(0.05 * self.sfreq), int(0.55 * self.sfreq)
        feat = slice(0, self.responses.n_feature_sources)  # the image-specific part defines the SNR
        power = []
        for i in picks:
            src = self.responses.trial(self.gallery.embeddings[i], rng)
            power.append(np.mean((self.stim_mixing[:, feat] @ src[feat, t0:t1]) ** 2))
        sig_rms = float(np.sqrt(np.mean(power)))
        return self.snr * bg_rms / max(sig_rms, 1e-30)

    def _make_erd_kernel(self) -> np.ndarray:
        """Alpha suppression after an onset: rises from 150 ms, full by 400 ms, gone by ~1.2 s."""
        t = np.arange(int(1.3 * self.sfreq)) / self.sfreq
        rise = np.clip((t - 0.15) / 0.25, 0, 1)
        fall = np.clip((1.3 - t) / 0.5, 0, 1)
        return (np.sin(np.pi / 2 * rise) * fall)[None, :]

    # ------------------------------------------------------------------ public API
    @property
    def n_channels(self) -> int:
        return len(self.ch_names)

    @property
    def n_generated(self) -> int:
        """Samples generated so far (the next sample's index)."""
        return self.stats.samples

    @property
    def space(self) -> str:
        return str(self.gallery.space)

    def add_stimulus(self, onset: float, offset: float, image_id: str) -> None:
        """Schedule an image shown from ``onset`` to ``offset`` (seconds on the subject's clock).

        Raises
        ------
        KeyError
            ``image_id`` is not in the gallery (the message says which gallery).
        """
        if offset < onset:
            raise ValueError(f"stimulus offset {offset} is before its onset {onset}")
        idx = self.gallery.index_of(image_id)
        on = int(round(onset * self.sfreq))
        off = int(round(offset * self.sfreq))
        if on < self.stats.samples:
            self.stats.late_stimuli += 1
        stim = _Stimulus(self.stats.stimuli, idx)
        self.stats.stimuli += 1
        n_len = self.responses.n_len
        bisect.insort(self._pending, _Pending(on, n_len, "on", stim))
        bisect.insort(self._pending, _Pending(off, n_len, "off", stim))
        bisect.insort(self._pending, _Pending(on, self._erd_kernel.shape[1], "erd"))

    def _responses(self, stim: _Stimulus) -> list[np.ndarray | None]:
        """Onset and offset responses at the sensors (scaled), from the stimulus' own generator."""
        if not stim.computed:
            rng = np.random.default_rng([self.seed, 5, stim.number])
            emb = self.gallery.embeddings[stim.image_index]
            scale = np.float32(self.stim_scale)
            for i, offset in enumerate((False, True)):
                src = self.responses.trial(emb, rng, offset=offset).astype(np.float32)
                stim.responses[i] = (self._stim_mixing32 @ src) * scale
            stim.computed = True
        return stim.responses

    def generate(self, n_samples: int) -> np.ndarray:
        """The next ``n_samples`` of sensor data: ``(n_channels, n_samples)`` float32, T (MEG) or V (EEG)."""
        n = int(n_samples)
        if n < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples}")
        with _OneBlasThread():
            return self._generate(n)

    def _generate(self, n: int) -> np.ndarray:
        while self._bg_buf.shape[1] < n:
            bg, alpha = self.background.next_block()
            self._bg_buf = np.concatenate([self._bg_buf, bg], axis=1)
            self._alpha_buf = np.concatenate([self._alpha_buf, alpha], axis=1)
        out = self._bg_buf[:, :n].copy()
        alpha = self._alpha_buf[:, :n]
        self._bg_buf = self._bg_buf[:, n:]
        self._alpha_buf = self._alpha_buf[:, n:]
        start, stop = self.stats.samples, self.stats.samples + n
        erd = np.zeros(n, dtype=np.float32)
        keep: list[_Pending] = []
        for item in self._pending:
            if item.start >= stop:
                keep.append(item)
                continue
            a, b = max(start, item.start), min(stop, item.start + item.length)
            done = item.start + item.length <= stop
            if item.kind == "erd":
                erd[a - start : b - start] += self._erd_kernel[0, a - item.start : b - item.start]
            else:
                which = 0 if item.kind == "on" else 1
                resp = self._responses(item.stim)
                if b > a:
                    out[:, a - start : b - start] += resp[which][:, a - item.start : b - item.start]
                if done:
                    resp[which] = None
            if not done:
                keep.append(item)
        self._pending = keep
        out += alpha * (1.0 - ERD_DEPTH * np.minimum(erd, 1.0))[None, :]
        self.stats.samples = stop
        return out

    def metadata(self, **extra: Any) -> dict[str, Any]:
        """What a recording must say about the subject to be reproduced and decoded."""
        root = getattr(self.gallery, "root", None)
        meta = {
            "generator": "brainstream.virtual_subject",
            "version": SIMULATION_VERSION,
            "profile": self.profile.name,
            "modality": self.profile.modality,
            "seed": self.seed,
            "snr": self.snr,
            "shared_fraction": self.responses.params.shared_fraction,
            "population_seed": self.responses.params.population_seed,
            "gallery": str(root) if root is not None else None,
            "space": self.space,
            "line_freq": self.line_freq,
            "alpha_freq": round(self.background.alpha_freq, 3),
            "bad_channels": self.bad_channels,
            "forward": self.forward.method,
        }
        meta.update(extra)
        return meta

    def metadata_json(self, **extra: Any) -> str:
        return json.dumps(self.metadata(**extra), sort_keys=True)


_BLAS_LOCK = threading.Lock()
_BLAS_CONTROLLER = None


class _OneBlasThread:
    """Run the small matrix products here on one BLAS thread (several threads fight for 2 cores and are ~5x
    slower). The limit is process-wide while held, so holders are serialised by a lock."""

    def __enter__(self) -> None:
        global _BLAS_CONTROLLER
        _BLAS_LOCK.acquire()
        try:
            if _BLAS_CONTROLLER is None:
                from threadpoolctl import ThreadpoolController

                _BLAS_CONTROLLER = ThreadpoolController()
            self._ctx = _BLAS_CONTROLLER.limit(limits=1, user_api="blas")
            self._ctx.__enter__()
        except BaseException:
            _BLAS_LOCK.release()
            raise

    def __exit__(self, *exc) -> None:
        try:
            self._ctx.__exit__(*exc)
        finally:
            _BLAS_LOCK.release()


def _roi_mm(name: str) -> tuple[float, float, float]:
    roi, hemi = name.rsplit("-", 1)
    x, y, z = ROIS_MM[roi]
    return (x if hemi == "L" else -x, y, z)


def _orientations(rng: np.random.Generator, n: int) -> np.ndarray:
    ori = rng.standard_normal((n, 3))
    return ori / np.linalg.norm(ori, axis=1, keepdims=True)
