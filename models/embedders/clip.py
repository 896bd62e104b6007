"""A CLIP vision tower from a LOCAL folder (transformers ``CLIPVisionModelWithProjection``).

For instance the OpenCLIP ViT-H-14 image encoder that IP-Adapter ships (``models/image_encoder``: 1024-d
``image_embeds``, the space the production generator expects). Nothing is ever downloaded:
``local_files_only=True``. The folder does not say which training run its weights come from, so the space
id is given explicitly: the ``space`` argument, or a ``brainstream.yaml`` in the folder with a ``space`` key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from brainstream.models.embedders import check_images, l2_normalise

logger = logging.getLogger(__name__)

SPACE_FILE = "brainstream.yaml"
IP_ADAPTER_SPACE = "openclip:ViT-H-14:laion2b_s32b_b79k"


def _image_processor(model_dir: Path, image_size: int):
    """The folder's processor if it has one, else CLIP's standard one at the model's input size.

    The PIL implementation is used: transformers' default (fast) processor needs torchvision, which is not
    part of the install.
    """
    try:
        from transformers import CLIPImageProcessorPil as Processor  # transformers >= 5
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    if (model_dir / "preprocessor_config.json").is_file():
        return Processor.from_pretrained(str(model_dir), local_files_only=True)
    # IP-Adapter's image_encoder folder ships weights and config only: OpenAI CLIP mean/std (the defaults,
    # also what OpenCLIP ViT-H-14 uses), resize the short side then centre-crop to the model's input size
    return Processor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


def read_space_file(model_dir: Path) -> str | None:
    path = model_dir / SPACE_FILE
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("space"), str):
        raise ValueError(f"{path}: expected a mapping with a 'space' string, e.g. space: {IP_ADAPTER_SPACE}")
    return data["space"]


class ClipEmbedder:
    """``image_embeds`` of a local ``CLIPVisionModelWithProjection``, L2-normalised.

    Parameters
    ----------
    model_dir : path
        Folder with ``config.json`` + weights (``model.safetensors`` preferred), optionally
        ``preprocessor_config.json`` and ``brainstream.yaml`` (``space: ...``).
    space : str | None
        Space id; required unless the folder's ``brainstream.yaml`` gives it.
    device : str
        Torch device.
    batch_size : int
        Images per forward pass.
    """

    name = "clip"

    def __init__(
        self, model_dir: str | Path, space: str | None = None, device: str = "cpu", batch_size: int = 16
    ) -> None:
        import torch
        from transformers import CLIPVisionModelWithProjection

        self.model_dir = Path(model_dir).expanduser()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"no CLIP vision model at {self.model_dir} (config.json missing); point --model-dir to a "
                "local folder such as IP-Adapter's models/image_encoder (nothing is downloaded)"
            )
        self.space = space or read_space_file(self.model_dir)
        if not self.space:
            raise ValueError(
                f"the embedding space of {self.model_dir} is unknown: pass space=... (--space), e.g. "
                f"{IP_ADAPTER_SPACE!r} for IP-Adapter's image encoder, or write 'space: ...' in "
                f"{self.model_dir / SPACE_FILE}"
            )
        self.model = CLIPVisionModelWithProjection.from_pretrained(
            str(self.model_dir), local_files_only=True, use_safetensors=self._has_safetensors()
        )
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.dim = int(self.model.config.projection_dim)
        self.processor = _image_processor(self.model_dir, int(self.model.config.image_size))
        self.batch_size = int(batch_size)

    def _has_safetensors(self) -> bool | None:
        # refuse pickled weights when safetensors exist; None lets transformers pick (and it refuses
        # torch.load of .bin files itself unless they are safe to load)
        return True if any(self.model_dir.glob("*.safetensors")) else None

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(H, W, 3)`` uint8 images → ``(n, dim)`` float32, L2-normalised."""
        import torch

        images = check_images(images)
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pixels = self.processor(images=list(batch), return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                emb = self.model(pixel_values=pixels.to(self.device, self.model.dtype)).image_embeds
            out[start : start + len(batch)] = emb.float().cpu().numpy()
        return l2_normalise(out)

    def __repr__(self) -> str:
        return f"ClipEmbedder({str(self.model_dir)!r}, space={self.space!r}, dim={self.dim})"
