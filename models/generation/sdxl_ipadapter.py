"""SDXL-Turbo + IP-Adapter (as in ATM): a decoded image embedding → an image in one UNet call.

Everything loads from LOCAL folders with ``local_files_only=True``; nothing is downloaded. Live, no
tokenizer or text encoder runs: the empty-prompt embeddings are computed once and stored as safetensors. The
embedding goes in as IP-Adapter image embeddings (one adapter, shape ``(1, 1, D)``), rescaled to the norm the
adapter was trained with; guidance 0, Euler with trailing timesteps (1 step by default), fixed initial noise
(stable frames), fp16 on GPU, optional ``torch.compile`` / torch-tensorrt of the UNet and decoder.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.generation.base import Generator, GeneratorError
from brainstream.models.generation.config import GeneratorConfig

log = logging.getLogger(__name__)

PROMPT_KEYS = ("prompt_embeds", "pooled_prompt_embeds")


def _torch():
    import torch

    return torch


def resolve_device_dtype(config: GeneratorConfig) -> tuple[Any, Any]:
    torch = _torch()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise GeneratorError("device: cuda requested but no CUDA GPU is visible; use device: auto or cpu")
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    if config.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, config.dtype)
    return device, dtype


def _need_dir(path: str | Path | None, what: str) -> Path:
    if path is None:
        raise GeneratorError(f"no {what} folder configured")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise GeneratorError(
            f"{what} folder not found: {folder}. Nothing is downloaded at run time: copy the weights there "
            "first (e.g. `huggingface-cli download ... --local-dir DIR` on a machine with network)"
        )
    return folder


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' load-time chatter (accelerate hints, image-encoder notice, dtype deprecations)."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        dlogging.set_verbosity(level)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore (process-wide setting: keep the span short)."""
    if n is None:
        yield
        return
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------- empty-prompt embeddings
def save_prompt_embeds(path: str | Path, prompt_embeds, pooled_prompt_embeds) -> None:
    from safetensors.torch import save_file

    tensors = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds}
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path))


def load_prompt_embeds(path: str | Path) -> tuple[Any, Any]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    missing = [k for k in PROMPT_KEYS if k not in tensors]
    if missing:
        raise GeneratorError(
            f"{path}: missing {missing}; delete it so it is recomputed from the text encoders"
        )
    return tensors["prompt_embeds"], tensors["pooled_prompt_embeds"]


def compute_empty_prompt_embeds(model_dir: Path, path: Path) -> None:
    """Run SDXL's two text encoders once on the empty prompt and store the result (setup, not live)."""
    torch = _torch()
    from diffusers import StableDiffusionXLPipeline

    log.info("computing the empty-prompt embeddings once from %s", model_dir)
    with quiet_diffusers():
        pipe = StableDiffusionXLPipeline.from_pretrained(
            model_dir, local_files_only=True, unet=None, vae=None, torch_dtype=torch.float32
        )
    with torch.inference_mode():
        prompt_embeds, _, pooled, _ = pipe.encode_prompt("", do_classifier_free_guidance=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_prompt_embeds(path, prompt_embeds, pooled)


# ------------------------------------------------------------------------------- loading
def load_local_pipeline(
    config: GeneratorConfig,
    *,
    model_dir: str | Path,
    ip_adapter_dir: str | Path,
    taesd_dir: str | Path | None,
    device,
    dtype,
):
    """StableDiffusionXLPipeline without text encoders, IP-Adapter loaded, from local folders only."""
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler, StableDiffusionXLPipeline

    model_dir = _need_dir(model_dir, "SDXL-Turbo model")
    ip_adapter_dir = _need_dir(ip_adapter_dir, "IP-Adapter")
    weight = ip_adapter_dir / config.ip_adapter_subfolder / config.ip_adapter_weight
    if not weight.is_file():
        raise GeneratorError(
            f"IP-Adapter weights not found: {weight}; check ip_adapter_subfolder/ip_adapter_weight"
        )
    components: dict[str, Any] = {
        "text_encoder": None,
        "text_encoder_2": None,
        "tokenizer": None,
        "tokenizer_2": None,
        "image_encoder": None,
        "feature_extractor": None,
    }
    with quiet_diffusers():
        if config.decoder == "taesdxl":
            components["vae"] = AutoencoderTiny.from_pretrained(
                _need_dir(taesd_dir, "TAESDXL"), local_files_only=True, torch_dtype=dtype
            )
        pipe = StableDiffusionXLPipeline.from_pretrained(
            model_dir, local_files_only=True, torch_dtype=dtype, **components
        )
        # deterministic Euler on trailing timesteps (SDXL-Turbo's ancestral sampler would add fresh noise)
        pipe.scheduler = EulerDiscreteScheduler.from_config(
            pipe.scheduler.config, timestep_spacing="trailing"
        )
        pipe.load_ip_adapter(
            str(ip_adapter_dir),
            subfolder=config.ip_adapter_subfolder,
            weight_name=config.ip_adapter_weight,
            image_encoder_folder=None,
            local_files_only=True,
        )
    pipe.set_ip_adapter_scale(config.ip_adapter_scale)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class IPAdapterTurboGenerator(Generator):
    """Embedding → image with an SDXL(-Turbo) pipeline whose IP-Adapter takes the embedding.

    Use :meth:`from_config` (production, local folders) or :func:`models.generation.tiny.build_tiny_generator`
    (random tiny weights, CPU tests). The pipeline object stays available as ``.pipe``.
    """

    def __init__(
        self, pipe, config: GeneratorConfig, prompt_embeds, pooled_prompt_embeds, device, dtype
    ) -> None:
        torch = _torch()
        self.pipe = pipe
        self.config = config
        self.space = config.space
        self.dim = config.embed_dim
        self.height, self.width = config.height, config.width
        self.steps = config.steps
        self.embed_norm = config.embed_norm
        self.device, self.dtype = device, dtype
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.scheduler = pipe.scheduler
        proj = self.unet.encoder_hid_proj.image_projection_layers[0]
        expected_dim = proj.image_embeds.in_features
        if expected_dim != self.dim:
            raise GeneratorError(
                f"the IP-Adapter takes {expected_dim}-d embeddings but embed_dim is {self.dim}"
            )
        self.prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)
        self.pooled = pooled_prompt_embeds.to(device=device, dtype=dtype)
        h, w = self.height, self.width
        self.time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=device, dtype=dtype)
        self.vae_scale_factor = pipe.vae_scale_factor
        self.latent_shape = (
            1,
            self.unet.config.in_channels,
            h // self.vae_scale_factor,
            w // self.vae_scale_factor,
        )
        noise_gen = torch.Generator("cpu").manual_seed(config.seed)
        self.noise = torch.randn(self.latent_shape, generator=noise_gen).to(device=device, dtype=dtype)
        # SDXL's full VAE overflows in fp16: decode it in fp32 (TAESDXL is fine in fp16)
        self.vae_dtype = dtype
        if getattr(self.vae.config, "force_upcast", False) and dtype == torch.float16:
            self.vae.to(torch.float32)
            self.vae_dtype = torch.float32
        self._compile(config.compile)

    @classmethod
    def from_config(cls, config: GeneratorConfig) -> IPAdapterTurboGenerator:
        """Production: SDXL-Turbo + IP-Adapter (+ TAESDXL) from the config's local folders."""
        device, dtype = resolve_device_dtype(config)
        model_dir = _need_dir(config.model_dir, "SDXL-Turbo model")
        prompt_path = Path(
            config.prompt_embeds or model_dir / "brainstream_empty_prompt.safetensors"
        ).expanduser()
        if not prompt_path.is_file():
            compute_empty_prompt_embeds(model_dir, prompt_path)
        pipe = load_local_pipeline(
            config,
            model_dir=model_dir,
            ip_adapter_dir=config.ip_adapter_dir,
            taesd_dir=config.taesd_dir,
            device=device,
            dtype=dtype,
        )
        return cls(pipe, config, *load_prompt_embeds(prompt_path), device, dtype)

    def _compile(self, mode: str) -> None:
        torch = _torch()
        if mode == "none":
            return
        if mode == "torch-tensorrt":
            try:
                import torch_tensorrt  # noqa: F401  (registers the backend)
            except ImportError:
                raise GeneratorError(
                    "compile: torch-tensorrt needs the gpu extra (pip install brainstream[gpu])"
                ) from None
            options = {
                "backend": "torch_tensorrt",
                "options": {"enabled_precisions": {self.dtype}},
                "dynamic": False,
            }
        else:
            options = {"mode": self.config.compile_mode, "fullgraph": False}
        self.unet = torch.compile(self.unet, **options)
        self.vae.decode = torch.compile(self.vae.decode, **options)

    def set_adapter_scale(self, scale: float) -> None:
        self.pipe.set_ip_adapter_scale(scale)

    def image_embeds(self, embedding: np.ndarray, space: str | None = None):
        """The ``(1, 1, D)`` tensor handed to IP-Adapter: checked and rescaled to ``embed_norm``."""
        torch = _torch()
        emb = self.check_embedding(embedding, space)
        if self.embed_norm is not None:
            emb = emb * (self.embed_norm / max(float(np.linalg.norm(emb)), 1e-12))
        return torch.from_numpy(emb).to(device=self.device, dtype=self.dtype).view(1, 1, -1)

    def latents(self, embedding: np.ndarray, space: str | None = None):
        """Denoised latents for one embedding (the UNet part)."""
        torch = _torch()
        image_embeds = self.image_embeds(embedding, space)
        added = {"text_embeds": self.pooled, "time_ids": self.time_ids, "image_embeds": [image_embeds]}
        with torch.inference_mode():
            self.scheduler.set_timesteps(self.steps, device=self.device)
            latents = self.noise * self.scheduler.init_noise_sigma
            for t in self.scheduler.timesteps:
                model_in = self.scheduler.scale_model_input(latents, t)
                eps = self.unet(
                    model_in,
                    t,
                    encoder_hidden_states=self.prompt_embeds,
                    added_cond_kwargs=added,
                    return_dict=False,
                )[0]
                latents = self.scheduler.step(eps, t, latents, return_dict=False)[0]
        return latents

    def decode(self, latents) -> np.ndarray:
        torch = _torch()
        with torch.inference_mode():
            scaled = latents.to(self.vae_dtype) / self.vae.config.scaling_factor
            image = self.vae.decode(scaled, return_dict=False)[0]
            image = ((image[0].float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            return image.permute(1, 2, 0).contiguous().cpu().numpy()

    def generate(self, embedding: np.ndarray, space: str | None = None) -> np.ndarray:
        with torch_threads(self.config.cpu_threads if self.device.type == "cpu" else None):
            return self.decode(self.latents(embedding, space))


def generator_from_folders(config: GeneratorConfig, paths: dict[str, Path]) -> IPAdapterTurboGenerator:
    """A generator from model folders written for it (random tiny or trained weights), loaded exactly as
    production loads SDXL-Turbo; ``paths`` names ``model_dir``, ``ip_adapter_dir``, ``taesd_dir`` and
    ``prompt_embeds``."""
    device, dtype = resolve_device_dtype(config)
    pipe = load_local_pipeline(
        config,
        model_dir=paths["model_dir"],
        ip_adapter_dir=paths["ip_adapter_dir"],
        taesd_dir=paths["taesd_dir"],
        device=device,
        dtype=dtype,
    )
    prompt_embeds, pooled = load_prompt_embeds(paths["prompt_embeds"])
    return IPAdapterTurboGenerator(pipe, config, prompt_embeds, pooled, device, dtype)
