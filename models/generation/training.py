"""Train the small generator of the demo space (``brainstream generator train``).

Recipe (``training:`` in the generator config; all of it goes into the weights' fingerprint):

1. **Data**: the demo stimulus set's images minus the demo session's test images (those stay unseen, as THINGS
   test images are for the real generator), minus a few validation images kept out of training to report on.
   Each image gets ``augment_copies`` augmented copies (flips, crops) at the generator's size, and every copy
   is embedded again by the demo embedder, so each condition is the embedding of the pixels it asks for.
2. **Decoder**: a TAESD-style autoencoder (AutoencoderTiny) learns to compress the images to 4-channel
   latents and back (L1 + MSE on pixels); the latents' std sets its ``scaling_factor``; then the decoder
   alone trains on (the frozen encoder's latents → images), which costs half an autoencoder step, with the
   embedding loss of item 4 beside the pixel losses when ``decoder_embedding_weight`` > 0.
3. **UNet**: an SDXL-style UNet2DConditionModel with IP-Adapter processors and image projection, conditioned
   only through the IP-Adapter on the embedding, predicts the *clean* latent (x0 / ``sample`` prediction)
   at exactly the timesteps the trailing Euler sampler visits with 1, 2 or 4 steps. The first step (a
   ``first_step_fraction`` of the samples: all of them in the demo recipe, which ships 1 step) gets exactly
   what it gets at run time, the generator's fixed initial noise (``seed``); the other steps get the clean
   latent noised afresh. Loss: latent MSE (plus optional L1 on decoded pixels).

Why x0-prediction on the sampler's own timesteps: an epsilon-predicting model must be run for many steps
(one step from pure noise amplifies its noise estimate by sigma_max ~ 15); predicting x0 makes the first step
already an image (Euler's first step lands on the prediction), and training on the few timesteps the sampler
uses leaves no train/sample mismatch in the noise levels. It is the cheapest few-step objective: a consistency
or adversarial distillation stage needs a many-step teacher first, which two shared CPU cores cannot afford
in the time budget. With a fixed initial noise the one-step image is the model's estimate of the mean image
for the embedding: smooth rather than sharp. Training the first step on the fixed noise itself matters: a
UNet has no position encoding, and from random noise it can only place content by the zero padding's edge
effects; the fixed pattern is a position code it can learn to read. (The demo recipe draws the right colours,
place and size of the object, and the outline of large simple shapes: docs/benchmarks.md.)

4. **Embedding loss** (``embedding_loss_steps``, ``embedding_loss_weight``; optional): a last UNet stage on
   the first step (after item 3's) adds ``weight * (1 - cosine)`` between the embedding of the decoded
   one-step image (the embedder's differentiable twin, ``embed_tensor``) and its condition. The latent
   MSE weighs every latent error alike, while what an embedding asks for (and what the demo scores) is the
   image's embedding: with the MSE alone the one-step images of the training embeddings embed at a cosine
   of only about 0.5 to their condition (docs/benchmarks.md). The MSE stays in the loss to keep the images
   natural; the metrics report feature spaces the loss does not use (random convnet of another seed, HOG)
   beside the demo space.

Optionally (``embedding_noise_fraction``) a share of the samples is conditioned on an embedding corrupted as
the decoder corrupts embeddings (levels estimated on validation trials by ``brainstream generator prior``),
so that the generator learns what to draw from a decoded embedding too.

Training is resumable: a checkpoint (``weights_only`` torch file of tensors) is written every
``checkpoint_every`` steps into ``<weights>.work/`` and picked up by the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.generation.config import GeneratorConfig

log = logging.getLogger(__name__)

N_VALIDATION = 40
RECIPE_VERSION = "x0-trailing-v1"
NOISE_KEYS = ("embedding_noise_fraction", "embedding_signal", "embedding_noise")
EMBEDDING_LOSS_KEYS = ("embedding_loss_steps", "embedding_loss_weight")


@dataclass
class TrainingSet:
    """Images ``(n, 3, H, W)`` float32 in [-1, 1] and their embeddings ``(n, D)``; ``source`` is the index of
    the original image of each row (copies of one image share it)."""

    images: Any
    embeddings: Any
    source: np.ndarray


# ----------------------------------------------------------------------------------------------- data
def split_ids(ids: Sequence[str], exclude: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """``(train, validation)`` ids: everything not excluded, ``N_VALIDATION`` of it drawn for validation."""
    excluded = set(exclude)
    pool = [i for i in ids if i not in excluded]
    rng = np.random.default_rng([seed, 17])
    val = set(rng.choice(len(pool), size=min(N_VALIDATION, len(pool) // 10), replace=False).tolist())
    return [x for k, x in enumerate(pool) if k not in val], [x for k, x in enumerate(pool) if k in val]


def resize_images(images: Sequence[np.ndarray], size: int):
    """uint8 ``(H, W, 3)`` images → float tensor ``(n, 3, size, size)`` in [0, 1] (antialiased bilinear, as
    the demo embedder resizes)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    if batch.shape[-1] != size or batch.shape[-2] != size:
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return batch.clamp(0, 1)


def augmented_copies(images: Sequence[np.ndarray], size: int, copies: int, seed: int):
    """Copy 0 is each image as is; the others are flipped and/or cropped (75-100 % of the side) at random."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    rng = np.random.default_rng([seed, 23])
    full = resize_images(images, images[0].shape[0])
    out = [resize_images(images, size)]
    side = full.shape[-1]
    for _ in range(copies - 1):
        batch = torch.empty(len(images), 3, size, size)
        for k in range(len(images)):
            crop = int(side * rng.uniform(0.75, 1.0))
            top, left = rng.integers(0, side - crop + 1, size=2)
            patch = full[k : k + 1, :, top : top + crop, left : left + crop]
            if rng.random() < 0.5:
                patch = patch.flip(-1)
            batch[k] = F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True)[0]
        out.append(batch.clamp(0, 1))
    return torch.cat(out)


def to_uint8(batch) -> list[np.ndarray]:
    """Float ``(n, 3, H, W)`` in [0, 1] → list of ``(H, W, 3)`` uint8."""
    import torch

    arr = (batch.clamp(0, 1) * 255).round().to(dtype=torch.uint8)
    return list(arr.permute(0, 2, 3, 1).numpy())


def build_training_set(
    images: Sequence[np.ndarray], embedder, size: int, copies: int, seed: int, progress: bool = True
) -> TrainingSet:
    """Augment, quantise to uint8 (what the embedder and the metrics see) and embed every copy."""
    import torch

    pixels, embeddings = augmented_embeddings(images, embedder, size, copies, seed, progress)
    tensor = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return TrainingSet(tensor, torch.from_numpy(embeddings), np.tile(np.arange(len(images)), copies))


def augmented_embeddings(
    images: Sequence[np.ndarray], embedder, size: int, copies: int, seed: int, progress: bool = True
) -> tuple[list[np.ndarray], np.ndarray]:
    """The augmented copies the generator trains on (uint8 pixels, copy by copy) and their embeddings."""
    from brainstream.models.embedders import embed_images

    pixels = to_uint8(augmented_copies(images, size, copies, seed))
    return pixels, embed_images(embedder, pixels, progress=progress, desc="embedding augmented images")


# ---------------------------------------------------------------------------------------- fingerprint
def generator_fingerprint(config: GeneratorConfig, train_ids: Sequence[str], data_version: str) -> str:
    """A digest of the data (image ids, stimulus version, space) and the recipe (sizes, training config)."""
    parts = {
        "data": hashlib.sha256("\n".join(train_ids).encode()).hexdigest()[:16],
        "data_version": data_version,
        "space": config.space,
        "embed_dim": config.embed_dim,
        "size": config.height,
        "sizes": config.trained.model_dump(mode="json"),
        "training": config.training.model_dump(mode="json"),
        "recipe": RECIPE_VERSION,
    }
    if config.training.embedding_noise_fraction == 0:  # off: recipes from before it keep their fingerprint
        for key in NOISE_KEYS:
            parts["training"].pop(key)
    if config.training.embedding_loss_steps == 0:
        for key in EMBEDDING_LOSS_KEYS:
            parts["training"].pop(key)
    if config.training.decoder_embedding_weight == 0:
        parts["training"].pop("decoder_embedding_weight")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- training
def sampler_sigmas(timesteps: Sequence[int]):
    """Noise level sigma of each timestep under the generator's scheduler (scaled-linear betas)."""
    import torch

    from brainstream.models.generation.trained import SCHEDULER

    betas = (
        torch.linspace(
            SCHEDULER["beta_start"] ** 0.5, SCHEDULER["beta_end"] ** 0.5, 1000, dtype=torch.float64
        )
        ** 2
    )
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    t = torch.as_tensor(list(timesteps))
    return (((1 - alphas_cumprod[t]) / alphas_cumprod[t]) ** 0.5).float()


class GeneratorTrainer:
    """Two resumable stages (autoencoder, then UNet) writing one weights file.

    Parameters
    ----------
    config : GeneratorConfig
        ``backend: trained``; its ``trained`` sizes and ``training`` recipe are used.
    data : TrainingSet
        Training images and embeddings (:func:`build_training_set`).
    work_dir : path
        Folder for resumable checkpoints.
    progress : bool
        Show progress bars.
    embedder : ImageEmbedder | None
        The embedder of ``config.space``; the embedding-loss stage needs it, with a differentiable
        ``embed_tensor`` (the demo embedder has one).
    """

    def __init__(
        self,
        config: GeneratorConfig,
        data: TrainingSet,
        work_dir: Path,
        progress: bool = True,
        embedder: Any = None,
    ):
        import torch

        from brainstream.models.generation.trained import (
            build_autoencoder,
            build_unet,
            install_ip_adapter,
            random_ip_adapter,
        )

        self.config, self.recipe, self.data, self.embedder = config, config.training, data, embedder
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        torch.manual_seed(self.recipe.seed)
        self.vae = build_autoencoder(config.trained)
        self.unet = build_unet(config.trained, config.height)
        install_ip_adapter(self.unet, random_ip_adapter(self.unet, config.embed_dim, 0.02, self.recipe.seed))
        sizes = config.trained
        self.prompt_embeds = torch.zeros(1, sizes.text_tokens, sizes.cross_attention_dim)
        self.pooled = torch.zeros(1, sizes.pooled_dim)
        h = config.height
        self.time_ids = torch.tensor([[h, h, 0, 0, h, h]], dtype=torch.float32)
        self.losses: dict[str, float] = {}
        self._latents = None

    # ---------------------------------------------------------------- helpers
    def _batches(self, stage: str, step: int):
        import torch

        offset = {"ae": 0, "unet": 10**6, "decoder": 2 * 10**6, "unet_embedding": 3 * 10**6}[stage]
        gen = torch.Generator().manual_seed(self.recipe.seed * 1000 + step + offset)
        return torch.randint(0, len(self.data.images), (self.recipe.batch_size,), generator=gen), gen

    def _checkpoint(self, name: str, step: int, model, optimizer, scheduler, ema: float | None) -> None:
        import torch

        state = {
            "recipe": self._recipe_key(name),
            "step": step,
            "loss": ema,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        }
        tmp = self.work_dir / f"{name}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.work_dir / f"{name}.pt")

    def _resume(self, name: str, model, optimizer, scheduler) -> tuple[int, float | None]:
        import torch

        path = self.work_dir / f"{name}.pt"
        if not path.is_file():
            return 0, None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("recipe") != self._recipe_key(name):
            log.warning("%s was written by another recipe or model size; starting %s afresh", path, name)
            return 0, None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        log.info("resuming %s at step %d from %s", name, state["step"], path)
        return int(state["step"]), state.get("loss")

    def _recipe_key(self, stage: str) -> str:
        """What a stage's result depends on: a checkpoint is resumed only by the same key, so changing a
        later stage's recipe keeps the earlier stages' work."""
        r = self.recipe
        keys = ["augment_copies", "autoencoder_steps", "batch_size", "lr", "seed"]
        # stages that decode latents depend on the decoder's stage
        if stage in ("decoder", "unet_embedding") or (stage == "unet" and r.pixel_loss_weight > 0):
            keys.append("decoder_steps")
            if r.decoder_embedding_weight > 0:
                keys.append("decoder_embedding_weight")
        if stage in ("unet", "unet_embedding"):
            keys += ["unet_steps", "pixel_loss_weight", "train_timesteps", "first_step_fraction"]
            if r.embedding_noise_fraction > 0:
                keys += list(NOISE_KEYS)
        if stage == "unet_embedding":
            keys += list(EMBEDDING_LOSS_KEYS)
        recipe = {k: getattr(r, k) for k in keys}
        if stage in ("unet", "unet_embedding"):
            recipe["noise_seed"] = self.config.seed
        return json.dumps(
            [stage, recipe, self.config.trained.model_dump(mode="json"), self.config.height], sort_keys=True
        )

    def _optimiser(self, params, steps: int):
        import torch

        optimizer = torch.optim.AdamW(params, lr=self.recipe.lr, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.recipe.lr, total_steps=steps, pct_start=0.05
        )
        return optimizer, scheduler

    def _loop(self, name: str, model, steps: int, step_fn) -> None:
        import torch
        from tqdm.auto import tqdm

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer, scheduler = self._optimiser(params, steps)
        start, ema = self._resume(name, model, optimizer, scheduler)
        model.train()
        with tqdm(
            total=steps, initial=start, desc=f"training {name}", unit="step", disable=not self.progress
        ) as bar:
            for step in range(start, steps):
                loss = step_fn(step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                ema = value if ema is None else 0.98 * ema + 0.02 * value
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.4f}")
                if (step + 1) % self.recipe.checkpoint_every == 0 or step + 1 == steps:
                    self._checkpoint(name, step + 1, model, optimizer, scheduler, ema)
        model.eval()
        if ema is not None:
            self.losses[name] = ema

    # ---------------------------------------------------------------- stages
    def train_autoencoder(self) -> None:
        """Stage 1: the TAESD-style autoencoder on pixels; then its latent scaling factor."""
        import torch
        import torch.nn.functional as F  # noqa: N812

        def step_fn(step: int):
            idx, _ = self._batches("ae", step)
            x = self.data.images[idx]
            recon = self.vae.decode(self.vae.encode(x).latents).sample
            return F.l1_loss(recon, x) + F.mse_loss(recon, x)

        self._loop("autoencoder", self.vae, self.recipe.autoencoder_steps, step_fn)
        with torch.no_grad():
            latents = self.encode(self.data.images[:512], scale=False)
        self.vae.register_to_config(scaling_factor=float(1.0 / latents.std().clamp_min(1e-3)))
        self.vae.requires_grad_(False)

    def train_decoder(self) -> None:
        """Stage 1b: the decoder alone, on the frozen encoder's latents (cheaper steps than the whole
        autoencoder's, so more of them): sharper, truer colours from the same latent space. With
        ``decoder_embedding_weight`` the decoded image must also embed as its original does: pixel losses
        alone give blurred images whose texture features (and so their embeddings) are not the original's.
        The encoder stays frozen, so the UNet's latents (and a finished UNet stage) stay valid."""
        import torch.nn.functional as F  # noqa: N812

        r = self.recipe
        if r.decoder_steps == 0:
            return
        weight = r.decoder_embedding_weight
        embedder = self._differentiable_embedder("decoder_embedding_weight: 0") if weight > 0 else None
        latents = self.encode(self.data.images, scale=False)
        self.vae.decoder.requires_grad_(True)

        def step_fn(step: int):
            idx, _ = self._batches("decoder", step)
            x = self.data.images[idx]
            recon = self.vae.decode(latents[idx]).sample
            loss = F.l1_loss(recon, x) + F.mse_loss(recon, x)
            if embedder is not None:
                loss = loss + weight * self._embedding_loss(embedder, _unit_range(recon), idx)
            return loss

        self._loop("decoder", self.vae.decoder, self.recipe.decoder_steps, step_fn)
        self.vae.requires_grad_(False)

    def encode(self, images, scale: bool = True):
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(images), 256):
                out.append(self.vae.encode(images[start : start + 256]).latents)
        latents = torch.cat(out)
        return latents * self.vae.config.scaling_factor if scale else latents

    def fixed_noise(self):
        """The initial noise the generator starts from (:class:`IPAdapterTurboGenerator`, ``seed``)."""
        import torch

        from brainstream.models.generation.trained import downsampling

        side = self.config.height // downsampling(self.config.trained)
        return torch.randn((1, 4, side, side), generator=torch.Generator("cpu").manual_seed(self.config.seed))

    def unet_forward(self, latents, t, embeddings):
        n = len(latents)
        added = {
            "text_embeds": self.pooled.expand(n, -1),
            "time_ids": self.time_ids.expand(n, -1),
            "image_embeds": [embeddings[:, None, :]],
        }
        hidden = self.prompt_embeds.expand(n, -1, -1)
        return self.unet(latents, t, encoder_hidden_states=hidden, added_cond_kwargs=added).sample

    def train_unet(self) -> None:
        """Stage 2: x0-prediction at the sampler's timesteps, latent MSE + pixel L1 through the decoder."""
        import torch
        import torch.nn.functional as F  # noqa: N812

        timesteps = torch.tensor(self.recipe.train_timesteps, dtype=torch.float32)
        sigmas = sampler_sigmas(self.recipe.train_timesteps)
        first = int(torch.argmax(timesteps))  # every trailing schedule starts at the noisiest timestep
        others = torch.tensor([k for k in range(len(timesteps)) if k != first] or [first])
        fixed = self.fixed_noise()

        def step_fn(step: int):
            idx, gen = self._batches("unet", step)
            x0 = self.latents()[idx]
            at_first = torch.rand(len(idx), generator=gen) < self.recipe.first_step_fraction
            k = others[torch.randint(0, len(others), (len(idx),), generator=gen)]
            k[at_first] = first
            sigma = sigmas[k].view(-1, 1, 1, 1)
            model_in = (x0 + sigma * torch.randn(x0.shape, generator=gen)) / (sigma**2 + 1) ** 0.5
            # the sampler's first step sees the generator's fixed initial noise and nothing else: train it on
            # exactly that input (the fixed pattern also tells the UNet where it is in the image)
            model_in[at_first] = fixed
            pred = self.unet_forward(model_in, timesteps[k], self.condition(idx, gen))
            loss = F.mse_loss(pred, x0)
            if self.recipe.pixel_loss_weight > 0:
                pixels = self.vae.decode(pred / self.vae.config.scaling_factor).sample
                loss = loss + self.recipe.pixel_loss_weight * F.l1_loss(pixels, self.data.images[idx])
            return loss

        self._loop("unet", self.unet, self.recipe.unet_steps, step_fn)

    def latents(self):
        """Scaled latents of every training image, encoded on first use: a resumed, finished stage costs
        nothing."""
        from tqdm.auto import tqdm

        if self._latents is None:
            with tqdm(total=1, desc="encoding latents", disable=not self.progress) as bar:
                self._latents = self.encode(self.data.images)
                bar.update(1)
        return self._latents

    def _differentiable_embedder(self, off: str):
        """The embedder, if it has the differentiable ``embed_tensor`` an embedding loss needs."""
        from brainstream.models.generation.base import GeneratorError

        if not callable(getattr(self.embedder, "embed_tensor", None)):
            raise GeneratorError(
                f"an embedding loss needs an embedder with a differentiable embed_tensor; {self.embedder!r} "
                f"has none (the demo embedder has one): set {off}"
            )
        return self.embedder

    def one_step(self, embeddings):
        """The generator's one-step drawing, differentiable: the first-step latent prediction from the fixed
        initial noise, and its decoded pixels ``(n, 3, H, W)`` in [0, 1]."""
        import torch

        n = len(embeddings)
        first = torch.full((n,), float(max(self.recipe.train_timesteps)))
        pred = self.unet_forward(self.fixed_noise().expand(n, -1, -1, -1), first, embeddings)
        pixels = self.vae.decode(pred / self.vae.config.scaling_factor).sample
        return pred, _unit_range(pixels)

    def _embedding_loss(self, embedder, pixels, idx):
        """``1 - cosine`` between the embeddings of ``pixels`` (in [0, 1]) and of training rows ``idx``,
        averaged over the batch."""
        import torch.nn.functional as F  # noqa: N812

        agreement = F.cosine_similarity(embedder.embed_tensor(pixels), self.data.embeddings[idx], dim=1)
        return 1 - agreement.mean()

    def train_embedding_loss(self) -> None:
        """Stage 3 (``embedding_loss_steps``): the one-step image must also *embed* as its condition.

        The latent MSE treats every latent error alike; what the demo shows and scores is the image's
        embedding. So the first-step prediction is decoded (frozen decoder), embedded again by the
        embedder's differentiable twin, and ``embedding_loss_weight * (1 - cosine)`` to the condition is
        added to the latent MSE, which keeps the images on the training images' manifold.
        """
        import torch.nn.functional as F  # noqa: N812

        r = self.recipe
        if r.embedding_loss_steps == 0:
            return
        embedder = self._differentiable_embedder("embedding_loss_steps: 0")

        def step_fn(step: int):
            idx, gen = self._batches("unet_embedding", step)
            pred, pixels = self.one_step(self.condition(idx, gen))
            loss = F.mse_loss(pred, self.latents()[idx])
            return loss + r.embedding_loss_weight * self._embedding_loss(embedder, pixels, idx)

        self._loop("unet_embedding", self.unet, r.embedding_loss_steps, step_fn)

    def condition(self, idx, gen):
        """The embeddings of a batch, a share of them corrupted as the decoder corrupts embeddings (signal
        and noise levels estimated on validation trials): the generator learns what to draw from a decoded
        embedding, not only from a clean one."""
        import torch

        emb = self.data.embeddings[idx]
        r = self.recipe
        if r.embedding_noise_fraction == 0:
            return emb
        noisy = torch.rand(len(idx), generator=gen) < r.embedding_noise_fraction
        corrupted = r.embedding_signal * emb + r.embedding_noise * torch.randn(emb.shape, generator=gen)
        corrupted = corrupted / corrupted.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.where(noisy[:, None], corrupted, emb)

    def save(self, path: Path, info: dict[str, Any]) -> Path:
        from brainstream.models.generation.trained import save_weights

        return save_weights(
            path,
            unet=self.unet,
            vae=self.vae,
            prompt_embeds=self.prompt_embeds,
            pooled_prompt_embeds=self.pooled,
            space=str(self.config.space),
            embed_dim=self.config.embed_dim,
            height=self.config.height,
            sizes=self.config.trained,
            info={**info, "losses": self.losses},
        )


def _unit_range(pixels):
    """Decoder output in [-1, 1] → pixels in [0, 1], as the embedders and the pipeline see them."""
    return (pixels.clamp(-1, 1) + 1) / 2


def train_generator(
    config: GeneratorConfig,
    images: Sequence[np.ndarray],
    ids: Sequence[str],
    exclude_ids: Sequence[str],
    embedder,
    out: str | Path,
    data_version: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the generator a config describes on ``images`` (minus ``exclude_ids``) and write ``out``.

    Parameters
    ----------
    config : GeneratorConfig
        ``backend: trained``; ``training`` holds the recipe.
    images, ids : sequences
        The stimulus set (``(H, W, 3)`` uint8) and the id of each image.
    exclude_ids : sequence of str
        Images that must stay unseen (the demo session's test images).
    embedder : ImageEmbedder
        The embedder of ``config.space``.
    out : path
        Weights file to write; checkpoints go to ``<out>.work/`` and resume a stopped run.
    data_version : str
        Version of the stimulus set, part of the fingerprint.
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        ``fingerprint``, ``train_ids``/``validation_ids`` counts, ``seconds`` and the weights ``path``.
    """
    import torch

    from brainstream.models.generation.base import GeneratorError

    if config.backend != "trained":
        raise GeneratorError(
            f"config {config.name!r} has backend {config.backend!r}; training needs 'trained'"
        )
    if embedder.space != config.space:
        raise GeneratorError(
            f"the embedder's space {embedder.space!r} is not the config's {config.space!r}; train with the "
            "embedder the generator will be conditioned on"
        )
    recipe = config.training
    train_ids, val_ids = split_ids(ids, exclude_ids, recipe.seed)
    index = {image_id: k for k, image_id in enumerate(ids)}
    out = Path(out)
    work = out.with_name(out.name + ".work")
    threads = torch.get_num_threads()
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    t0 = time.monotonic()
    try:
        data = build_training_set(
            [images[index[i]] for i in train_ids],
            embedder,
            config.height,
            recipe.augment_copies,
            recipe.seed,
            progress,
        )
        trainer = GeneratorTrainer(config, data, work, progress, embedder)
        trainer.train_autoencoder()
        trainer.train_decoder()
        trainer.train_unet()
        trainer.train_embedding_loss()
    finally:
        torch.set_num_threads(threads)
    fingerprint = generator_fingerprint(config, train_ids, data_version)
    info = {
        "fingerprint": fingerprint,
        "n_train_images": len(train_ids),
        "n_training_rows": int(len(data.images)),
        "validation_ids": list(val_ids),
        "excluded": len(set(exclude_ids)),
        "seconds": round(time.monotonic() - t0, 1),
        "torch_threads": recipe.threads or threads,
    }
    trainer.save(out, info)
    return {**info, "path": str(out), "losses": trainer.losses}
