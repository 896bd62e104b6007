"""Latency of the production generator at full size, with random weights (timing needs no trained weights).

Builds SDXL's UNet from its published config (2.6 B parameters), a random IP-Adapter in the released
``ip-adapter_sdxl_vit-h`` layout (1024-d OpenCLIP ViT-H-14 input) loaded through the same local-folder path as
production (``load_ip_adapter(..., local_files_only=True)``), and TAESDXL (``AutoencoderTiny``'s default
config), then times 512×512, 1-step generation, fp16, as :class:`IPAdapterTurboGenerator` runs it live.
Goal: ≤ 30 ms on an H100.

On a lent GPU machine (its python3 has torch; diffusers and pydantic travel as wheels prepared in ``.whl``)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    python3 scripts/gpu_generator_latency.py --modes eager,compile,cudagraphs --out $OUT/gen.json

Locally (CPU) ``--smoke`` runs a scaled-down UNet at 128² to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# stabilityai/stable-diffusion-xl-base-1.0 (= sdxl-turbo) unet/config.json
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
SMOKE_UNET = {
    **SDXL_UNET,
    "block_out_channels": [32, 64, 128],
    "transformer_layers_per_block": [1, 1, 1],
    "attention_head_dim": [2, 4, 8],
    "norm_num_groups": 8,
}
# stabilityai/sdxl-vae config (the full decoder, for comparison)
SDXL_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}


def build(args, decoder: str, compile_mode: str | None):
    import torch
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from safetensors.torch import save_file

    from brainstream.models.generation import load_generator_config
    from brainstream.models.generation.sdxl_ipadapter import IPAdapterTurboGenerator, quiet_diffusers
    from brainstream.models.generation.tiny import random_ip_adapter_state_dict

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # initialise the 2.6 B parameters on the GPU, not the CPU
        unet = UNet2DConditionModel(**(SMOKE_UNET if args.smoke else SDXL_UNET))
        vae = AutoencoderTiny() if decoder == "taesdxl" else AutoencoderKL(**SDXL_VAE)
    unet.to(dtype)
    vae.to(dtype)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=scheduler,
    )
    config = load_generator_config("sdxl_turbo_ipadapter").model_copy(
        update={
            "height": args.size,
            "width": args.size,
            "steps": args.steps,
            "decoder": decoder,
            "embed_norm": 10.0,
            "compile": "none" if compile_mode is None else "torch-compile",
            "compile_mode": compile_mode or "default",
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        weight = Path(tmp) / config.ip_adapter_subfolder / config.ip_adapter_weight
        weight.parent.mkdir(parents=True)
        state = random_ip_adapter_state_dict(unet, config.embed_dim, std=0.02, seed=0)
        save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(weight))
        del state
        with quiet_diffusers():
            pipe.load_ip_adapter(
                tmp,
                subfolder=config.ip_adapter_subfolder,
                weight_name=config.ip_adapter_weight,
                image_encoder_folder=None,
                local_files_only=True,
            )
    pipe.set_ip_adapter_scale(1.0)
    pipe.to(device)
    gen = torch.Generator("cpu").manual_seed(1)
    prompt = torch.randn(1, 77, 2048, generator=gen)
    pooled = torch.randn(1, 1280, generator=gen)
    generator = IPAdapterTurboGenerator(pipe, config, prompt, pooled, device, dtype)
    n_params = sum(p.numel() for p in unet.parameters())
    print(
        f"built {decoder} / {compile_mode or 'eager'}: UNet {n_params / 1e9:.2f} B params "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return generator


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_generator(generator, n: int, warmup: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    embs = [rng.standard_normal(generator.dim).astype(np.float32) for _ in range(n + warmup)]
    t0 = time.perf_counter()
    for e in embs[:warmup]:
        generator.generate(e, generator.space)
    warm_s = time.perf_counter() - t0
    total, unet, decode = [], [], []
    for e in embs[warmup:]:
        sync(generator.device)
        t0 = time.perf_counter()
        latents = generator.latents(e, generator.space)
        sync(generator.device)
        t1 = time.perf_counter()
        image = generator.decode(latents)  # includes the copy of the uint8 image to the host
        t2 = time.perf_counter()
        unet.append(t1 - t0)
        decode.append(t2 - t1)
        total.append(t2 - t0)
    assert image.shape == (generator.height, generator.width, 3) and image.dtype == np.uint8

    def pct(v, q):
        return float(np.percentile(np.asarray(v) * 1000, q))

    return {
        "total_p50_ms": pct(total, 50),
        "total_p99_ms": pct(total, 99),
        "unet_p50_ms": pct(unet, 50),
        "decode_p50_ms": pct(decode, 50),
        "warmup_s": warm_s,
        "n": n,
    }


MODES = {"eager": None, "compile": "default", "cudagraphs": "reduce-overhead", "autotune": "max-autotune"}


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modes", default="eager,compile,cudagraphs", help=f"comma list of {', '.join(MODES)}"
    )
    parser.add_argument("--decoders", default="taesdxl", help="comma list of taesdxl, vae")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="scaled-down UNet (CPU check of this script)")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args()
    if args.device == "cpu" and not args.smoke:
        print(
            "no CUDA GPU: run on a GPU machine, or pass --smoke --size 128 for a CPU check", file=sys.stderr
        )
        return 2
    import diffusers

    report = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "size": args.size,
        "steps": args.steps,
        "dtype": "float16" if args.device == "cuda" else "float32",
        "smoke": args.smoke,
        "goal_ms": 30.0,
        "results": {},
    }
    for decoder in args.decoders.split(","):
        for mode in args.modes.split(","):
            key = f"{decoder}/{mode}"
            generator = None
            try:
                generator = build(args, decoder, MODES[mode])
                report["results"][key] = time_generator(generator, args.n, args.warmup)
            except Exception as exc:  # one failing mode (e.g. a compile backend) must not hide the others
                report["results"][key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(key, json.dumps(report["results"][key]), flush=True)
            del generator
            if args.device == "cuda":
                torch.cuda.empty_cache()
    if args.device == "cuda":
        report["max_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
