"""The tiny generator: SDXL pipeline classes from tiny configs with random weights, for CPU tests.

Nothing is special-cased: the random UNet/VAE are saved as a diffusers folder, the random IP-Adapter as an
``ip-adapter_sdxl_vit-h.safetensors``-style file (``image_proj.*`` + ``ip_adapter.<k>.to_{k,v}_ip.weight``)
and the empty-prompt embeddings as safetensors, all in a temporary folder, then loaded through exactly the
local-folder path production uses (:func:`models.generation.sdxl_ipadapter.load_local_pipeline`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from brainstream.models.generation.config import GeneratorConfig, TinySizes
from brainstream.models.generation.sdxl_ipadapter import (
    IPAdapterTurboGenerator,
    generator_from_folders,
    save_prompt_embeds,
)
from brainstream.models.generation.trained import random_ip_adapter, sdxl_style_unet


def _tiny_unet(sizes: TinySizes):
    return sdxl_style_unet(
        sizes.block_out_channels, sizes.cross_attention_dim, sizes.pooled_dim, sizes.addition_time_embed_dim
    )


def _tiny_vae(sizes: TinySizes):
    from diffusers import AutoencoderKL

    n = len(sizes.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=sizes.block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def _tiny_taesd(sizes: TinySizes):
    from diffusers import AutoencoderTiny

    n = len(sizes.block_out_channels)
    return AutoencoderTiny(
        encoder_block_out_channels=(16,) * n,
        decoder_block_out_channels=(16,) * n,
        num_encoder_blocks=(1,) * n,
        num_decoder_blocks=(1,) * n,
        latent_channels=4,
    )


def _tiny_text_encoders(sizes: TinySizes, root: Path) -> dict:
    """Two tiny CLIP text encoders + tokenizers whose outputs have SDXL's layout at the tiny sizes."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if sizes.cross_attention_dim % 2:
        raise ValueError(
            "tiny text encoders need an even cross_attention_dim (two encoders are concatenated)"
        )
    vocab_dir = root / "vocab"
    vocab_dir.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    (vocab_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    hidden = sizes.cross_attention_dim // 2
    common = {
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": sizes.text_tokens,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }

    def tokenizer():
        files = (str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
        return CLIPTokenizer(*files, model_max_length=sizes.text_tokens)

    return {
        "text_encoder": CLIPTextModel(CLIPTextConfig(**common)),
        "text_encoder_2": CLIPTextModelWithProjection(
            CLIPTextConfig(**common, projection_dim=sizes.pooled_dim)
        ),
        "tokenizer": tokenizer(),
        "tokenizer_2": tokenizer(),
    }


def random_ip_adapter_state_dict(unet, embed_dim: int, std: float, seed: int) -> dict:
    """A random IP-Adapter in the released file layout, sized for ``unet``."""
    return random_ip_adapter(unet, embed_dim, std, seed)


def write_tiny_folders(
    config: GeneratorConfig, root: str | Path, text_encoders: bool = False
) -> dict[str, Path]:
    """Write the tiny model, TAESD, IP-Adapter and prompt-embedding files under ``root``; return the paths.

    With ``text_encoders``, the model folder also holds tiny text encoders and tokenizers and no prompt
    embeddings are written: the production loader then computes and stores them once, as it does for SDXL.
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from safetensors.torch import save_file

    sizes = config.tiny
    root = Path(root)
    torch.manual_seed(sizes.weights_seed)
    unet, vae = _tiny_unet(sizes), _tiny_vae(sizes)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    )
    text = (
        _tiny_text_encoders(sizes, root)
        if text_encoders
        else dict.fromkeys(("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"))
    )
    pipe = StableDiffusionXLPipeline(vae=vae, unet=unet, scheduler=scheduler, **text)
    paths = {"model_dir": root / "model", "ip_adapter_dir": root / "ip_adapter", "taesd_dir": root / "taesd"}
    pipe.save_pretrained(paths["model_dir"], safe_serialization=True)
    _tiny_taesd(sizes).save_pretrained(paths["taesd_dir"], safe_serialization=True)
    weight = paths["ip_adapter_dir"] / config.ip_adapter_subfolder / config.ip_adapter_weight
    weight.parent.mkdir(parents=True)
    state = random_ip_adapter_state_dict(unet, config.embed_dim, sizes.weight_std, sizes.weights_seed)
    save_file({k: v.contiguous() for k, v in state.items()}, str(weight))
    paths["prompt_embeds"] = root / "empty_prompt.safetensors"
    if text_encoders:
        return paths
    gen = torch.Generator("cpu").manual_seed(sizes.weights_seed + 1)
    save_prompt_embeds(
        paths["prompt_embeds"],
        torch.randn(1, sizes.text_tokens, sizes.cross_attention_dim, generator=gen),
        torch.randn(1, sizes.pooled_dim, generator=gen),
    )
    return paths


def build_tiny_generator(config: GeneratorConfig) -> IPAdapterTurboGenerator:
    """Random tiny SDXL + IP-Adapter, written to a temporary folder and loaded like production."""
    with tempfile.TemporaryDirectory(prefix="brainstream-tiny-generator-") as tmp:
        return generator_from_folders(config, write_tiny_folders(config, tmp))
