"""The demo stimulus set: natural images that scikit-image ships plus procedural images.

Nothing is downloaded. The procedural images vary in shape, colour, texture, size and position, and each is a
pure function of ``(seed, index)``, so the same seed always gives the same set, pixel for pixel. The set is
stored as a gallery folder by :mod:`brainstream.models.demo_gallery`, cached and built on first use.
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

logger = logging.getLogger(__name__)

# Bump when rendering changes: the version is part of the cache key and of the demo embedder's space.
STIMULI_VERSION = "v1"
IMAGE_SIZE = 128

# skimage.data images that ship inside the wheel (others are fetched with pooch, which needs a network).
NATURAL_IMAGES: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "checkerboard",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)

SHAPES = (
    "circle",
    "ellipse",
    "square",
    "triangle",
    "diamond",
    "pentagon",
    "hexagon",
    "star",
    "ring",
    "cross",
)
TEXTURES = ("plain", "stripes", "checker", "dots", "noise", "radial")
BACKGROUNDS = ("solid", "gradient", "noise")


@dataclass(frozen=True)
class ProceduralSpec:
    """The attributes of one procedural image (what it shows, in words and numbers)."""

    shape: str
    texture: str
    background: str
    hue: float
    saturation: float
    value: float
    bg_hue: float
    bg_value: float
    x: float
    y: float
    size: float
    rotation: float
    texture_freq: float
    texture_angle: float


def procedural_spec(seed: int, index: int) -> ProceduralSpec:
    """Draw the attributes of procedural image ``index`` of set ``seed``.

    Shape and texture cycle through all combinations so every 60 consecutive images cover each pair once;
    the continuous attributes come from a generator keyed on ``(seed, index)``.
    """
    rng = np.random.default_rng([int(seed), int(index), 0x5713])
    combo = (index + int(seed) * 7) % (len(SHAPES) * len(TEXTURES))
    return ProceduralSpec(
        shape=SHAPES[combo % len(SHAPES)],
        texture=TEXTURES[combo // len(SHAPES)],
        background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        hue=float(rng.random()),
        saturation=float(rng.uniform(0.45, 1.0)),
        value=float(rng.uniform(0.55, 1.0)),
        bg_hue=float(rng.random()),
        bg_value=float(rng.uniform(0.1, 0.9)),
        x=float(rng.uniform(0.3, 0.7)),
        y=float(rng.uniform(0.3, 0.7)),
        size=float(rng.uniform(0.14, 0.32)),
        rotation=float(rng.uniform(0, 2 * np.pi)),
        texture_freq=float(rng.uniform(3.0, 10.0)),
        texture_angle=float(rng.uniform(0, np.pi)),
    )


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _radius_profile(shape: str, theta: np.ndarray) -> np.ndarray:
    """Boundary radius (relative) of a shape at polar angle ``theta`` (already rotated)."""
    if shape in ("circle", "ring", "ellipse"):
        return np.ones_like(theta)
    if shape in ("square", "diamond", "triangle", "pentagon", "hexagon"):
        k = {"square": 4, "diamond": 4, "triangle": 3, "pentagon": 5, "hexagon": 6}[shape]
        offset = np.pi / 4 if shape == "diamond" else 0.0
        sector = 2 * np.pi / k
        phi = np.mod(theta + offset, sector) - sector / 2
        return np.cos(np.pi / k) / np.cos(phi)
    if shape == "star":
        # five points: radius alternates between 1 and 0.45 linearly in angle
        phase = np.mod(theta, 2 * np.pi / 5) / (2 * np.pi / 5)
        return 0.45 + 0.55 * np.abs(1 - 2 * phase)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _shape_mask(spec: ProceduralSpec, xx: np.ndarray, yy: np.ndarray, px: float) -> np.ndarray:
    dx, dy = xx - spec.x, yy - spec.y
    cos, sin = np.cos(spec.rotation), np.sin(spec.rotation)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    if spec.shape == "ellipse":
        v = v * 2.0
    if spec.shape == "cross":
        arm = spec.size * 0.3
        inside = np.minimum(
            np.maximum(np.abs(u) - spec.size, np.abs(v) - arm),
            np.maximum(np.abs(v) - spec.size, np.abs(u) - arm),
        )
        return np.clip(0.5 - inside / px, 0.0, 1.0)
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    edge = spec.size * _radius_profile(spec.shape, theta)
    mask = np.clip(0.5 + (edge - r) / px, 0.0, 1.0)  # one-pixel soft edge: no aliasing
    if spec.shape == "ring":
        mask = mask * np.clip(0.5 + (r - 0.55 * spec.size) / px, 0.0, 1.0)
    return mask


def _texture(spec: ProceduralSpec, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Luminance modulation in [0, 1] of the foreground."""
    f = spec.texture_freq * 2 * np.pi / max(spec.size, 1e-3) * 0.15
    u = np.cos(spec.texture_angle) * xx + np.sin(spec.texture_angle) * yy
    v = -np.sin(spec.texture_angle) * xx + np.cos(spec.texture_angle) * yy
    if spec.texture == "plain":
        return np.ones_like(xx)
    if spec.texture == "stripes":
        return 0.5 + 0.5 * (np.sin(f * u) > 0)
    if spec.texture == "checker":
        return 0.4 + 0.6 * ((np.sin(f * u) > 0) ^ (np.sin(f * v) > 0))
    if spec.texture == "dots":
        return 0.35 + 0.65 * ((np.sin(f * u) * np.sin(f * v)) > 0.35)
    if spec.texture == "radial":
        r = np.hypot(xx - spec.x, yy - spec.y)
        return 0.5 + 0.5 * (np.sin(f * r) > 0)
    if spec.texture == "noise":
        n = rng.random((8, 8)).astype(np.float32)
        reps = int(np.ceil(xx.shape[0] / 8))
        return 0.45 + 0.55 * np.kron(n, np.ones((reps, reps), dtype=np.float32))[: xx.shape[0], : xx.shape[1]]
    raise ValueError(f"unknown texture {spec.texture!r}; expected one of {TEXTURES}")


def render_procedural(
    spec: ProceduralSpec, size: int = IMAGE_SIZE, seed: int = 0, index: int = 0
) -> np.ndarray:
    """Render one procedural image as ``(size, size, 3)`` uint8."""
    rng = np.random.default_rng([int(seed), int(index), 0xBEEF])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = np.meshgrid(coords, coords)
    bg_rgb = _hsv(spec.bg_hue, 0.35, spec.bg_value)
    if spec.background == "solid":
        background = np.broadcast_to(bg_rgb, (size, size, 3))
    elif spec.background == "gradient":
        ramp = (0.6 + 0.8 * (np.cos(spec.texture_angle) * xx + np.sin(spec.texture_angle) * yy))[..., None]
        background = np.clip(bg_rgb * ramp / 1.2, 0, 1)
    else:
        cells = -(-size // 4)
        grain = rng.normal(0, 0.08, (cells, cells)).astype(np.float32)
        grain = np.kron(grain, np.ones((4, 4), dtype=np.float32))[:size, :size, None]
        background = np.clip(bg_rgb + grain, 0, 1)
    fg = _hsv(spec.hue, spec.saturation, spec.value) * _texture(spec, xx, yy, rng)[..., None]
    mask = _shape_mask(spec, xx, yy, px=1.0 / size)[..., None]
    image = mask * fg + (1 - mask) * background
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any grey / RGB / RGBA / bool / float image → ``(H, W, 3)`` uint8."""
    img = np.asarray(image)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = np.asarray(img, dtype=np.float64)
        scale = 255.0 if img.max(initial=0.0) <= 1.0 else 1.0
        img = np.clip(img * scale + 0.5, 0, 255).astype(np.uint8)  # round, not truncate
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:  # composite on white so transparent logos stay visible
        alpha = img[..., 3:4].astype(np.float32) / 255.0
        img = (img[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(img)


def square_thumbnail(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` px (antialiased), as ``(size, size, 3)`` uint8."""
    from PIL import Image

    img = to_rgb_uint8(image)
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = img[top : top + side, left : left + side]
    if side == size:
        return crop.copy()
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def natural_images(size: int = IMAGE_SIZE) -> Iterator[tuple[str, np.ndarray]]:
    """``(id, image)`` for each bundled scikit-image picture that loads without a network."""
    import skimage.data

    for name in NATURAL_IMAGES:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            continue
        try:
            image = loader()
        except Exception as exc:  # a packaging change must not break the demo: skip and say so
            logger.warning("skipping skimage.data.%s: %s", name, exc)
            continue
        yield f"nat-{name.replace('_', '-')}", square_thumbnail(image, size)


def procedural_images(
    n: int, seed: int = 0, size: int = IMAGE_SIZE
) -> Iterator[tuple[str, np.ndarray, ProceduralSpec]]:
    """``(id, image, spec)`` for procedural images ``0 .. n-1`` of set ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for index in range(n):
        spec = procedural_spec(seed, index)
        yield f"proc-{index:05d}", render_procedural(spec, size, seed, index), spec


def demo_stimuli(
    n_procedural: int = 1000, seed: int = 0, size: int = IMAGE_SIZE
) -> tuple[list[str], list[np.ndarray], dict]:
    """All demo images in gallery order, natural first: ``(ids, images, attributes)``."""
    ids: list[str] = []
    images: list[np.ndarray] = []
    attributes: dict[str, dict] = {}
    for image_id, image in natural_images(size):
        ids.append(image_id)
        images.append(image)
        attributes[image_id] = {"kind": "natural"}
    for image_id, image, spec in procedural_images(n_procedural, seed, size):
        ids.append(image_id)
        images.append(image)
        attributes[image_id] = {"kind": "procedural", **asdict(spec)}
    return ids, images, attributes
