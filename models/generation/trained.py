"""The generator trained in the repo: a small SDXL-style UNet + IP-Adapter + TAESD-style decoder.

One safetensors file holds everything (``unet.*``, ``vae.*``, the IP-Adapter in the released layout under
``ip.*``, the fixed prompt embeddings under ``prompt.*``) and its metadata records the embedding space, the
sizes and the fingerprint of the data and recipe it was trained with. Loading writes the parts as diffusers
folders into a temporary folder and goes through exactly the local-folder path production uses
(:func:`brainstream.models.generation.sdxl_ipadapter.load_local_pipeline`), as the tiny test generator does.

The UNet predicts the clean latent (``prediction_type: sample``) at the timesteps a 1-4 step trailing Euler
sampler visits (:mod:`brainstream.models.generation.training` says why).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from brainstream.models.generation.base import GeneratorError
from brainstream.models.generation.config import GeneratorConfig, TrainedSizes

FORMAT = "brainstream-generator"
FORMAT_VERSION = 1
IP_ADAPTER_TOKENS = 4  # plain IP-Adapter: the embedding becomes 4 cross-attention tokens
SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


# ------------------------------------------------------------------------------------------- modules
def sdxl_style_unet(
    block_out_channels: tuple[int, ...],
    cross_attention_dim: int,
    pooled_dim: int,
    addition_time_embed_dim: int,
    layers_per_block: int = 1,
    sample_size: int = 8,
):
    """A UNet2DConditionModel with SDXL's conditioning (text + pooled text + size ids), any size."""
    from diffusers import UNet2DConditionModel

    n = len(block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        attention_head_dim=tuple(max(1, c // 8) for c in block_out_channels),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        projection_class_embeddings_input_dim=6 * addition_time_embed_dim + pooled_dim,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=8,
    )


def build_unet(sizes: TrainedSizes, height: int):
    return sdxl_style_unet(
        sizes.block_out_channels,
        sizes.cross_attention_dim,
        sizes.pooled_dim,
        sizes.addition_time_embed_dim,
        sizes.layers_per_block,
        sample_size=height // downsampling(sizes),
    )


def build_autoencoder(sizes: TrainedSizes, scaling_factor: float = 1.0):
    """A TAESD-style AutoencoderTiny (4 latent channels); ``scaling_factor`` brings latents to unit std."""
    from diffusers import AutoencoderTiny

    n = len(sizes.decoder_blocks)
    return AutoencoderTiny(
        encoder_block_out_channels=(sizes.decoder_channels,) * n,
        decoder_block_out_channels=(sizes.decoder_channels,) * n,
        num_encoder_blocks=tuple(reversed(sizes.decoder_blocks)),
        num_decoder_blocks=tuple(sizes.decoder_blocks),
        latent_channels=4,
        scaling_factor=float(scaling_factor),
    )


def downsampling(sizes: TrainedSizes) -> int:
    return 2 ** (len(sizes.decoder_blocks) - 1)


def ip_adapter_layout(unet) -> list[tuple[int, str, int]]:
    """``(key_id, processor_name, hidden_size)`` of each cross-attention processor, as the released
    IP-Adapter files number them (every processor in order, the adapter holding only the odd ones)."""
    blocks = list(unet.config.block_out_channels)
    out = []
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(blocks))[int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        out.append((key_id, name, hidden))
        key_id += 2
    return out


def random_ip_adapter(unet, embed_dim: int, std: float, seed: int) -> dict:
    """A random IP-Adapter in the released file layout (``image_proj.*``, ``ip_adapter.<k>.to_{k,v}_ip``)."""
    import torch

    gen = torch.Generator("cpu").manual_seed(seed)
    cross = unet.config.cross_attention_dim
    state = {
        "image_proj.proj.weight": torch.randn(cross * IP_ADAPTER_TOKENS, embed_dim, generator=gen) * std,
        "image_proj.proj.bias": torch.randn(cross * IP_ADAPTER_TOKENS, generator=gen) * std,
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    for key_id, _, hidden in ip_adapter_layout(unet):
        for proj in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{proj}.weight"] = torch.randn(hidden, cross, generator=gen) * std
    return state


def install_ip_adapter(unet, flat_state: dict) -> None:
    """Give ``unet`` IP-Adapter processors and image projection from a released-layout state dict."""
    split: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat_state.items():
        part, rest = key.split(".", 1)
        split[part][rest] = value
    unet._load_ip_adapter_weights([split])


def extract_ip_adapter(unet) -> dict:
    """The IP-Adapter of a UNet with processors installed, back in the released file layout."""
    proj = unet.encoder_hid_proj.image_projection_layers[0]
    state = {
        "image_proj.proj.weight": proj.image_embeds.weight,
        "image_proj.proj.bias": proj.image_embeds.bias,
        "image_proj.norm.weight": proj.norm.weight,
        "image_proj.norm.bias": proj.norm.bias,
    }
    processors = unet.attn_processors
    for key_id, name, _ in ip_adapter_layout(unet):
        proc = processors[name]
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = proc.to_k_ip[0].weight
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = proc.to_v_ip[0].weight
    return {k: v.detach().clone() for k, v in state.items()}


def base_unet_state(unet) -> dict:
    """The UNet's own weights (without the IP-Adapter parts)."""
    return {
        k: v.detach().clone()
        for k, v in unet.state_dict().items()
        if ".processor." not in k and not k.startswith("encoder_hid_proj.")
    }


# ------------------------------------------------------------------------------------------ the file
def save_weights(
    path: str | Path,
    *,
    unet,
    vae,
    prompt_embeds,
    pooled_prompt_embeds,
    space: str,
    embed_dim: int,
    height: int,
    sizes: TrainedSizes,
    info: dict[str, Any],
) -> Path:
    """Write the trained generator as one safetensors file (fp16 tensors: the file stays a few MB)."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"unet.{k}": v for k, v in base_unet_state(unet).items()}
    tensors |= {f"vae.{k}": v.detach() for k, v in vae.state_dict().items()}
    tensors |= {f"ip.{k}": v for k, v in extract_ip_adapter(unet).items()}
    tensors["prompt.prompt_embeds"] = prompt_embeds.detach()
    tensors["prompt.pooled_prompt_embeds"] = pooled_prompt_embeds.detach()
    tensors = {k: v.to(torch.float16).contiguous() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "space": space,
        "embed_dim": str(embed_dim),
        "height": str(height),
        "sizes": sizes.model_dump_json(),
        "scaling_factor": repr(float(vae.config.scaling_factor)),
        "info": json.dumps(info, sort_keys=True, default=float),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a weights file: space, embed_dim, height, sizes, scaling_factor, info."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise GeneratorError(
            f"generator weights not found: {path}; train them with `brainstream generator train --config "
            "CONFIG` or fix the config's weights path"
        )
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("format") != FORMAT:
        raise GeneratorError(f"{path} is not a brainstream generator file (format {meta.get('format')!r})")
    return {
        "space": meta["space"],
        "embed_dim": int(meta["embed_dim"]),
        "height": int(meta["height"]),
        "sizes": TrainedSizes.model_validate_json(meta["sizes"]),
        "scaling_factor": float(meta["scaling_factor"]),
        "info": json.loads(meta.get("info", "{}")),
    }


def check_weights_match(config: GeneratorConfig, meta: dict[str, Any], path: Path) -> None:
    """Refuse weights trained for another space, embedding size, image size or architecture."""
    wanted = {
        "space": config.space,
        "embed_dim": config.embed_dim,
        "height": config.height,
        "sizes": config.trained,
    }
    for key, value in wanted.items():
        if meta[key] != value:
            have = meta[key].model_dump() if key == "sizes" else meta[key]
            want = value.model_dump() if key == "sizes" else value
            raise GeneratorError(
                f"generator weights {path} do not match the config: the weights have {key} {have!r}, the "
                f"config {config.name!r} asks for {want!r}; use the config they were trained with or "
                "retrain with `brainstream generator train`"
            )
    if config.width != config.height:
        raise GeneratorError(f"the trained generator draws square images; got {config.width}x{config.height}")


def write_folders(config: GeneratorConfig, weights: Path, root: Path) -> dict[str, Path]:
    """Unpack a weights file into diffusers folders (model, taesd, IP-Adapter) and prompt embeddings."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from brainstream.models.generation.sdxl_ipadapter import save_prompt_embeds

    meta = read_metadata(weights)
    check_weights_match(config, meta, weights)
    tensors = {k: v.float() for k, v in load_file(str(weights)).items()}

    def part(prefix: str) -> dict:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    unet = build_unet(meta["sizes"], config.height)
    vae = build_autoencoder(meta["sizes"], meta["scaling_factor"])
    try:
        unet.load_state_dict(part("unet."))
        vae.load_state_dict(part("vae."))
    except RuntimeError as exc:
        raise GeneratorError(f"generator weights {weights} do not fit the sizes they record: {exc}") from None
    scheduler = EulerDiscreteScheduler(**SCHEDULER, prediction_type="sample", timestep_spacing="trailing")
    empty = dict.fromkeys(("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"))
    pipe = StableDiffusionXLPipeline(vae=vae, unet=unet, scheduler=scheduler, **empty)
    paths = {"model_dir": root / "model", "ip_adapter_dir": root / "ip_adapter", "taesd_dir": root / "taesd"}
    pipe.save_pretrained(paths["model_dir"], safe_serialization=True)
    vae.save_pretrained(paths["taesd_dir"], safe_serialization=True)
    ip_file = paths["ip_adapter_dir"] / config.ip_adapter_subfolder / config.ip_adapter_weight
    ip_file.parent.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in part("ip.").items()}, str(ip_file))
    paths["prompt_embeds"] = root / "prompt.safetensors"
    prompt = part("prompt.")
    save_prompt_embeds(paths["prompt_embeds"], prompt["prompt_embeds"], prompt["pooled_prompt_embeds"])
    return paths


def build_trained_generator(config: GeneratorConfig):
    """The trained generator, loaded through the production pipeline classes."""
    from brainstream.models.generation.sdxl_ipadapter import generator_from_folders

    if config.decoder != "taesdxl":
        raise GeneratorError("the trained generator has a TAESD-style decoder: set decoder: taesdxl")
    weights = Path(config.weights or "").expanduser()
    with tempfile.TemporaryDirectory(prefix="brainstream-trained-generator-") as tmp:
        return generator_from_folders(config, write_folders(config, weights, Path(tmp)))
