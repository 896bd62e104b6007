"""Sensor mixing for the virtual subject: an mne forward model from a grid of cortical dipoles to sensors.

Geometry comes from what mne ships offline (nothing is downloaded): fsaverage's inner-skull surface
(``mne/data/fsaverage``), the fsaverage head<->MRI transform, the CTF-275 helmet surface and 2-D layout, and
the standard 10-05 montages.

- MEG: a single-compartment BEM on fsaverage's inner skull (decimated to ico-3 so the solution takes seconds,
  not minutes); CTF axial gradiometers placed on the CTF-275 helmet along the directions of the CTF-275 layout
  (the layout is an azimuthal projection, so its radius maps back to a polar angle). No real sensor geometry
  is at hand here, so this is an approximation of a CTF system, good enough for realistic field spread.
- EEG: a 4-shell spherical head model fitted to the montage (fsaverage has no skull/scalp BEM in mne's data).

The gain of every grid dipole (three orientations) is cached under ``~/.cache/brainstream/`` keyed by
modality, profile and channel list, so only the first run pays for the forward computation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainstream.models.cache import cache_root
from brainstream.models.device_profile import DeviceProfile

logger = logging.getLogger(__name__)

FORWARD_VERSION = 2
BEM_ICO = 3  # 642 vertices: 3-4x faster than ico-4, fields within 3 % (checked), far below head-model error
GRID_SPACING_MM = 10.0
MINDIST_MM = 5.0


@dataclass(frozen=True)
class ForwardModel:
    """Gain from a grid of free-orientation dipoles to the profile's channels.

    Attributes
    ----------
    gain : ndarray, shape (n_channels, n_sources, 3)
        Field per unit dipole moment (T/(A·m) for MEG, V/(A·m) for EEG) along x, y, z (head coordinates).
    rr_mri : ndarray, shape (n_sources, 3)
        Dipole positions in fsaverage MRI coordinates, metres (x right, y anterior, z superior).
    sensor_pos : ndarray, shape (n_channels, 3)
        Sensor positions in head coordinates, metres.
    method : str
        ``"bem"`` (fsaverage inner skull) or ``"sphere"``.
    """

    gain: np.ndarray
    rr_mri: np.ndarray
    sensor_pos: np.ndarray
    method: str

    @property
    def n_sources(self) -> int:
        return self.rr_mri.shape[0]

    def mixing(self, idx: np.ndarray, orientations: np.ndarray) -> np.ndarray:
        """Fixed-orientation gain ``(n_channels, len(idx))`` of dipoles ``idx`` along ``orientations``."""
        ori = orientations / np.linalg.norm(orientations, axis=1, keepdims=True)
        return np.einsum("csk,sk->cs", self.gain[:, idx, :], ori)


def _mne_data() -> Path:
    import mne

    return Path(mne.__file__).parent / "data"


def _cache_key(profile: DeviceProfile) -> str:
    import mne

    blob = "|".join([profile.modality, profile.channel_type, profile.montage or "", profile.layout or ""])
    blob += "|" + ",".join(profile.channels) + f"|v{FORWARD_VERSION}|mne{mne.__version__}"
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def load_forward(profile: DeviceProfile, *, use_cache: bool = True) -> ForwardModel:
    """Return the forward model for ``profile``, computing and caching it on first use.

    Parameters
    ----------
    profile : DeviceProfile
        The device whose channels receive the field (MEG needs a ``layout``, EEG a ``montage``).
    use_cache : bool
        Read/write ``<cache_dir>/forward-<modality>-<profile>-<key>.npz``.
    """
    path = cache_root() / f"forward-{profile.modality}-{profile.name}-{_cache_key(profile)}.npz"
    if use_cache and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return ForwardModel(z["gain"], z["rr_mri"], z["sensor_pos"], str(z["method"]))
        except (OSError, ValueError, KeyError) as exc:  # a torn cache file is recomputed, not fatal
            logger.warning("ignoring unreadable forward cache %s (%s)", path, exc)
    fwd = compute_forward(profile)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename so a concurrent reader never sees half a file
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, gain=fwd.gain, rr_mri=fwd.rr_mri, sensor_pos=fwd.sensor_pos, method=fwd.method)
        os.replace(tmp.name, path)
    return fwd


def compute_forward(profile: DeviceProfile) -> ForwardModel:
    """Compute the forward model (seconds to a minute); :func:`load_forward` caches it."""
    import mne

    if profile.modality == "meg":
        if not profile.layout:
            raise ValueError(f"profile {profile.name}: an MEG profile needs a 'layout' to place its sensors")
        info = meg_info(profile)
    else:
        if not profile.montage:
            raise ValueError(f"profile {profile.name}: an EEG profile needs a 'montage' for sensor positions")
        info = eeg_info(profile)
    trans = mne.read_trans(_mne_data() / "fsaverage" / "fsaverage-trans.fif")
    surfs = _inner_skull_bem_surfaces()
    inner = surfs[0]
    rr_mri = _grid_inside(inner["rr"], inner["tris"], GRID_SPACING_MM / 1000.0, MINDIST_MM / 1000.0)
    if profile.modality == "meg":
        bem = mne.make_bem_solution(surfs, verbose=False)
        method = "bem"
    else:
        bem = mne.make_sphere_model("auto", "auto", info, verbose=False)
        head_t = mne.transforms.invert_transform(trans)  # MRI -> head
        rr_head = mne.transforms.apply_trans(head_t, rr_mri)
        inner_r = bem["layers"][0]["rad"]
        keep = np.linalg.norm(rr_head - bem["r0"], axis=1) < inner_r - MINDIST_MM / 1000.0
        rr_mri = rr_mri[keep]
        method = "sphere"
    src = mne.setup_volume_source_space(
        pos={"rr": rr_mri, "nn": np.tile([0.0, 0.0, 1.0], (len(rr_mri), 1))}, verbose=False
    )
    fwd = mne.make_forward_solution(
        info,
        trans,
        src,
        bem,
        meg=profile.modality == "meg",
        eeg=profile.modality == "eeg",
        mindist=0.0,
        n_jobs=1,
        verbose=False,
    )
    kept = fwd["src"][0]["rr"][fwd["src"][0]["vertno"]]
    gain = fwd["sol"]["data"].reshape(len(info.ch_names), -1, 3).astype(np.float32)
    # forward channel order equals info's (profile order); positions of sensors for diagnostics
    sensor_pos = np.array([ch["loc"][:3] for ch in info["chs"]])
    logger.info("forward %s/%s: %d sources, method %s", profile.modality, profile.name, len(kept), method)
    return ForwardModel(gain, kept.astype(np.float64), sensor_pos, method)


def eeg_info(profile: DeviceProfile):
    """``mne.Info`` of an EEG profile with its standard montage."""
    import mne

    info = mne.create_info(list(profile.channels), profile.sfreq, "eeg")
    try:
        info.set_montage(profile.montage, on_missing="raise")
    except ValueError as exc:
        raise ValueError(
            f"profile {profile.name}: montage {profile.montage!r} lacks some channels ({exc}); "
            "fix the profile's channel names or choose a montage that has them"
        ) from exc
    return info


def meg_info(profile: DeviceProfile):
    """``mne.Info`` with CTF axial gradiometers on the CTF-275 helmet, head == device coordinates."""
    import mne
    from mne.io.constants import FIFF

    pos, normals = _helmet_sensor_positions(profile)
    info = mne.create_info(list(profile.channels), profile.sfreq, "mag")
    with info._unlock():
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", np.eye(4))
    for ch, r, ez in zip(info["chs"], pos, normals, strict=True):
        ex = np.cross([0.0, 0.0, 1.0], ez)
        if np.linalg.norm(ex) < 1e-6:
            ex = np.array([1.0, 0.0, 0.0])
        ex /= np.linalg.norm(ex)
        ey = np.cross(ez, ex)
        ch["loc"][:] = np.concatenate([r, ex, ey, ez])
        ch["coil_type"] = FIFF.FIFFV_COIL_CTF_GRAD
        ch["unit"] = FIFF.FIFF_UNIT_T
    return info


def _helmet_sensor_positions(profile: DeviceProfile) -> tuple[np.ndarray, np.ndarray]:
    """Sensor positions and outward normals (head coordinates) from the layout's directions and the helmet."""
    import mne

    layout = mne.channels.read_layout(profile.layout)
    by_base = {n.split("-")[0]: i for i, n in enumerate(layout.names)}
    missing = [c for c in profile.channels if c.split("-")[0] not in by_base]
    if missing:
        raise ValueError(
            f"profile {profile.name}: channels not in layout {profile.layout}: {missing[:5]}; "
            "use the layout's channel names"
        )
    xy_all = layout.pos[:, :2] + layout.pos[:, 2:4] / 2
    centre = (xy_all.max(0) + xy_all.min(0)) / 2
    xy = np.array([xy_all[by_base[c.split("-")[0]]] for c in profile.channels]) - centre
    radius = np.linalg.norm(xy_all - centre, axis=1).max()
    # layouts are azimuthal-equidistant projections: radius ~ polar angle; CTF coverage reaches ~115 deg
    polar = np.linalg.norm(xy, axis=1) / radius * np.deg2rad(115.0)
    azim = np.arctan2(xy[:, 1], xy[:, 0])
    dirs = np.stack([np.sin(polar) * np.cos(azim), np.sin(polar) * np.sin(azim), np.cos(polar)], axis=1)

    helmet = mne.read_bem_surfaces(_mne_data() / "helmets" / "CTF_275.fif.gz", verbose=False)[0]["rr"]
    inner = _inner_skull_surface()["rr"]
    trans = mne.read_trans(_mne_data() / "fsaverage" / "fsaverage-trans.fif")
    inner_head = mne.transforms.apply_trans(mne.transforms.invert_transform(trans), inner)
    # seat the head in the helmet: centred left-right, top and back 25 mm inside the helmet
    shift = np.array(
        [
            inner_head[:, 0].mean() - (helmet[:, 0].max() + helmet[:, 0].min()) / 2,
            inner_head[:, 1].min() - 0.025 - helmet[:, 1].min(),
            inner_head[:, 2].max() + 0.025 - helmet[:, 2].max(),
        ]
    )
    helmet = helmet + shift
    centre3 = np.array([inner_head[:, 0].mean(), inner_head[:, 1].mean(), inner_head[:, 2].mean()])
    rel = helmet - centre3
    dist = np.linalg.norm(rel, axis=1)
    unit = rel / dist[:, None]
    # each sensor sits 10 mm outside the helmet vertex closest to its direction
    nearest = np.argmax(dirs @ unit.T, axis=1)
    pos = centre3 + dirs * (dist[nearest] + 0.010)[:, None]
    return pos, dirs


def _inner_skull_surface() -> dict:
    import mne

    return mne.read_bem_surfaces(_mne_data() / "fsaverage" / "fsaverage-inner_skull-bem.fif", verbose=False)[
        0
    ]


def _inner_skull_bem_surfaces() -> list[dict]:
    """fsaverage's inner skull as a single-layer BEM surface, decimated to ico-``BEM_ICO``.

    Uses mne's private ``_surfaces_to_bem`` (what ``make_bem_model`` calls after reading FreeSurfer files):
    writing the surface back out for the public path would need nibabel. The full 10242-vertex surface
    takes minutes to solve; the decimated one takes seconds.
    """
    import mne
    from mne.bem import _surfaces_to_bem
    from mne.io.constants import FIFF

    surf = _inner_skull_surface()
    surf = {"rr": surf["rr"] * 1000.0, "tris": surf["tris"]}
    with mne.utils.use_log_level("warning"):
        return _surfaces_to_bem([surf], [FIFF.FIFFV_BEM_SURF_ID_BRAIN], [0.3], ico=BEM_ICO)


def _grid_inside(rr: np.ndarray, tris: np.ndarray, spacing: float, mindist: float) -> np.ndarray:
    """Points of a regular grid inside the convex hull of a surface and at least ``mindist`` from it.

    The inner skull is nearly convex; the few points in its concavities are dropped by mne's forward
    computation (BEM) or by the sphere-radius test (EEG).
    """
    from scipy.spatial import Delaunay, cKDTree

    lo, hi = rr.min(0), rr.max(0)
    axes = [np.arange(a + spacing / 2, b, spacing) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[Delaunay(rr).find_simplex(grid) >= 0]
    d, _ = cKDTree(rr).query(grid)
    return grid[d >= mindist]
