"""Generator configs (``configs/generator/*.yaml``), validated (registered as
``models.generation.config:GeneratorConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from brainstream.models.config_base import StrictModel


class TinySizes(StrictModel):
    """Sizes of the random-weight test pipeline (``backend: tiny``)."""

    block_out_channels: tuple[int, ...] = (16, 32)
    cross_attention_dim: int = Field(default=32, gt=0)
    pooled_dim: int = Field(default=16, gt=0, description="pooled text-embedding size (text_embeds)")
    addition_time_embed_dim: int = Field(default=8, gt=0)
    text_tokens: int = Field(default=8, gt=0, description="length of the stored empty-prompt embeddings")
    weight_std: float = Field(default=0.2, gt=0, description="std of the random IP-Adapter weights")
    weights_seed: int = 0


class TrainedSizes(StrictModel):
    """Sizes of a generator trained in the repo (``backend: trained``): SDXL-style UNet + TAESD-style decoder.

    The weights file records the sizes it was trained with; a mismatch is refused with both named.
    """

    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = Field(default=1, ge=1)
    cross_attention_dim: int = Field(default=64, gt=0)
    pooled_dim: int = Field(default=16, gt=0)
    addition_time_embed_dim: int = Field(default=8, gt=0)
    text_tokens: int = Field(default=1, gt=0, description="length of the fixed (zero) prompt embeddings")
    decoder_channels: int = Field(default=32, gt=0, description="width of the TAESD-style autoencoder")
    decoder_blocks: tuple[int, ...] = Field(
        default=(1, 1, 1), description="blocks per decoder level; n levels downsample by 2**(n-1)"
    )


class GeneratorTraining(StrictModel):
    """The recipe of ``brainstream generator train`` (part of the weights' fingerprint)."""

    gallery: Literal["demo"] = Field(
        default="demo", description="the demo stimulus set, minus the demo session's test images"
    )
    augment_copies: int = Field(default=6, ge=1, description="augmented copies of each training image")
    autoencoder_steps: int = Field(default=1500, ge=1)
    decoder_steps: int = Field(default=0, ge=0, description="decoder-only steps after the autoencoder's")
    decoder_embedding_weight: float = Field(
        default=0.0,
        ge=0,
        description="the decoder-only stage also pulls the embedding of each decoded image towards its "
        "original's, with this weight on 1 - cosine (a perceptual loss in the conditioning space); 0: "
        "pixel losses only",
    )
    unet_steps: int = Field(default=3000, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    pixel_loss_weight: float = Field(
        default=1.0, ge=0, description="weight of the L1 loss on decoded pixels beside the latent MSE"
    )
    first_step_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share of UNet samples at the sampler's first step, whose input is the generator's fixed "
        "initial noise (seed) exactly as at run time; the rest are noised at the other train_timesteps",
    )
    train_timesteps: tuple[int, ...] = Field(
        default=(999, 749, 499, 249),
        description="the timesteps the few-step sampler visits (trailing spacing, 1, 2 and 4 steps)",
    )
    embedding_noise_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of UNet samples conditioned on a corrupted embedding, normalise(signal * e + "
        "noise * N(0, I)), the way the decoder corrupts embeddings (estimated on validation trials by "
        "`brainstream generator prior`); 0: clean embeddings only",
    )
    embedding_signal: float = Field(default=1.0, gt=0, description="mean cosine, decoded vs true")
    embedding_noise: float = Field(default=0.0, ge=0, description="per-dimension std of the residual")
    embedding_loss_steps: int = Field(
        default=0,
        ge=0,
        description="a last UNet stage of this many steps on the first (one-step) prediction, adding the "
        "embedding loss: the decoded image is embedded again (differentiably) and should land on its "
        "condition; 0: off",
    )
    embedding_loss_weight: float = Field(
        default=1.0, ge=0, description="weight of that loss, 1 - cosine(embedding of the image, condition)"
    )
    threads: int | None = Field(default=None, ge=1, description="torch threads while training")
    checkpoint_every: int = Field(default=250, ge=1, description="steps between resumable checkpoints")
    seed: int = 0


class GeneratorConfig(StrictModel):
    """Embedding → image generator: SDXL-Turbo + IP-Adapter (production), one trained in the repo on the
    demo stimuli (``trained``) or a tiny random twin (tests)."""

    name: str = "generator"
    backend: Literal["tiny", "trained", "sdxl-turbo-ipadapter"]
    space: str | None = Field(
        description="embedding space the generator accepts (e.g. openclip:ViT-H-14:laion2b_s32b_b79k); "
        "null only for the tiny test generator, which then accepts any space of the right size"
    )
    embed_dim: int = Field(default=1024, gt=0)
    steps: int = Field(default=1, ge=1, le=4, description="denoising steps (SDXL-Turbo: 1-4)")
    guidance_scale: float = Field(default=0.0, description="SDXL-Turbo runs without guidance: must be 0")
    height: int = Field(default=512, ge=8)
    width: int = Field(default=512, ge=8)
    seed: int = Field(default=0, description="fixed initial noise, so consecutive frames are stable")
    ip_adapter_scale: float = Field(default=1.0, ge=0.0)
    embed_norm: float | None = Field(
        default=None,
        gt=0,
        description="L2 norm the adapter was trained with (unnormalised image-encoder output); decoded "
        "embeddings are unit norm and are rescaled to it. null: use the embedding as it comes",
    )
    decoder: Literal["vae", "taesdxl"] = "taesdxl"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float16", "float32"] = Field(default="auto", description="auto: fp16 on GPU")
    compile: Literal["none", "torch-compile", "torch-tensorrt"] = "none"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        default="default", description="torch.compile mode (reduce-overhead adds CUDA graphs)"
    )
    cpu_threads: int | None = Field(
        default=None, ge=1, description="torch threads while generating on CPU (null: torch's default)"
    )
    # local folders (production); nothing is ever downloaded
    model_dir: str | None = Field(default=None, description="local SDXL-Turbo folder (diffusers layout)")
    ip_adapter_dir: str | None = Field(default=None, description="local IP-Adapter folder (h94/IP-Adapter)")
    ip_adapter_subfolder: str = "sdxl_models"
    ip_adapter_weight: str = "ip-adapter_sdxl_vit-h.safetensors"
    taesd_dir: str | None = Field(default=None, description="local TAESDXL folder (AutoencoderTiny)")
    prompt_embeds: str | None = Field(
        default=None,
        description="safetensors file of the precomputed empty-prompt embeddings; made once from "
        "model_dir's text encoders when missing",
    )
    tiny: TinySizes = TinySizes()
    weights: str | None = Field(
        default=None,
        description="backend trained: the safetensors file (relative paths are relative to the config file)",
    )
    trained: TrainedSizes = TrainedSizes()
    training: GeneratorTraining = GeneratorTraining()
    prior: str | None = Field(
        default=None,
        description="embedding prior applied to every embedding before generating (safetensors written by "
        "`brainstream generator prior`; relative to the config file; models.generation.prior). null: none",
    )

    @model_validator(mode="after")
    def _check(self) -> GeneratorConfig:
        if self.guidance_scale != 0.0:
            raise ValueError("guidance_scale must be 0: SDXL-Turbo is distilled to run without guidance")
        if self.height % 8 or self.width % 8:
            raise ValueError(f"height and width must be multiples of 8, got {self.height}x{self.width}")
        if self.backend == "trained" and (self.weights is None or self.space is None):
            raise ValueError("backend trained needs weights (a safetensors file) and space")
        if self.backend == "sdxl-turbo-ipadapter":
            missing = [k for k in ("model_dir", "ip_adapter_dir", "space") if getattr(self, k) is None]
            if self.decoder == "taesdxl" and self.taesd_dir is None:
                missing.append("taesd_dir")
            if missing:
                raise ValueError(f"backend sdxl-turbo-ipadapter needs {', '.join(missing)} (local folders)")
        return self
