"""A prior for decoded embeddings: map them onto the manifold of training-image embeddings before generating.

Decoded embeddings are noisy and shrunk toward the mean image; a generator trained on clean image
embeddings draws a generic image from them. The prior replaces a decoded embedding by the softmax-weighted
mean of its ``k`` nearest neighbours in a *bank* of training-image embeddings (cosine similarity after
removing the bank's mean, which the decoded embedding shares with every image; temperature ``T``), then
renormalises it. It plays the part of MindEye's diffusion prior at no training cost: the output is always a
blend of real image embeddings, the kind of input the generator was trained on.

The bank holds only images the generator trained on (never the test images), ``k`` and ``T`` are chosen on
validation trials (:func:`select_prior`), and the same file is applied live (the generator node) and
offline (``brainstream evaluate --reconstruction``) through :func:`load_generator`, which wraps the
generator in :class:`PriorGenerator` when the config names a prior.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.generation.base import Generator, GeneratorError

FORMAT = "brainstream-embedding-prior"


class EmbeddingPrior:
    """Softmax-weighted top-``k`` mean of bank embeddings.

    Parameters
    ----------
    bank : (n, D) array
        Embeddings of training images (rows need not be unit norm).
    k : int
        Neighbours blended (1: the nearest training image's embedding).
    temperature : float
        Softmax temperature over the neighbours' centred cosine similarities.
    space : str | None
        Embedding space of the bank.
    bank_name : str
        What the bank holds (``images``, ``augmented``: the augmented copies the generator trained on).
    """

    def __init__(
        self,
        bank: np.ndarray,
        k: int,
        temperature: float,
        space: str | None = None,
        bank_name: str = "images",
    ):
        bank = np.asarray(bank, dtype=np.float32)
        if bank.ndim != 2 or len(bank) < 2:
            raise GeneratorError(f"the prior's bank must be (n >= 2, D) embeddings, got shape {bank.shape}")
        if not 1 <= int(k) <= len(bank):
            raise GeneratorError(f"prior k must be between 1 and the bank size {len(bank)}, got {k}")
        if not temperature > 0:
            raise GeneratorError(f"prior temperature must be > 0, got {temperature}")
        self.bank, self.k, self.temperature, self.space = bank, int(k), float(temperature), space
        self.bank_name = bank_name
        self.mean = bank.mean(axis=0)
        centred = bank - self.mean
        self._keys = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)

    @property
    def dim(self) -> int:
        return int(self.bank.shape[1])

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """``(D,)`` or ``(n, D)`` embeddings → the same shape, rows of unit norm."""
        x = np.asarray(embeddings, dtype=np.float32)
        rows = np.atleast_2d(x)
        if rows.shape[1] != self.dim:
            raise GeneratorError(f"the prior takes embeddings of size {self.dim}, got {rows.shape[1]}")
        q = rows - self.mean
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        sims = q @ self._keys.T
        top = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
        s = np.take_along_axis(sims, top, axis=1) / self.temperature
        w = np.exp(s - s.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        out = np.einsum("nk,nkd->nd", w, self.bank[top])
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32).reshape(x.shape)

    # ------------------------------------------------------------------------------------- the file
    def save(self, path: str | Path, info: dict[str, Any]) -> Path:
        """Write the bank (fp16) and ``k``, ``temperature``, ``space`` and ``info`` as safetensors."""
        import torch
        from safetensors.torch import save_file

        meta = {
            "format": FORMAT,
            "space": str(self.space),
            "k": str(self.k),
            "temperature": repr(self.temperature),
            "bank_name": self.bank_name,
            "info": json.dumps(info, sort_keys=True, default=float),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"bank": torch.from_numpy(self.bank).to(torch.float16)}, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingPrior:
        from safetensors import safe_open

        path = Path(path).expanduser()
        if not path.is_file():
            raise GeneratorError(
                f"embedding prior not found: {path}; make it with `brainstream generator prior --config "
                "CONFIG` or set prior: null in the generator config"
            )
        with safe_open(str(path), framework="np") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != FORMAT:
                raise GeneratorError(f"{path} is not an embedding prior file (format {meta.get('format')!r})")
            bank = handle.get_tensor("bank").astype(np.float32)
        name = meta.get("bank_name", "images")
        prior = cls(bank, int(meta["k"]), float(meta["temperature"]), meta["space"], name)
        prior.info = json.loads(meta.get("info", "{}"))
        return prior


class PriorGenerator(Generator):
    """A generator whose embeddings go through an :class:`EmbeddingPrior` first (``base`` draws without)."""

    def __init__(self, base: Generator, prior: EmbeddingPrior):
        if base.space is not None and prior.space != base.space:
            raise GeneratorError(
                f"the prior's bank is in space {prior.space!r} but the generator takes {base.space!r}; make "
                "the prior with the generator's embedder"
            )
        if prior.dim != base.dim:
            raise GeneratorError(f"the prior's bank has size {prior.dim}, the generator takes {base.dim}")
        self.base, self.prior = base, prior
        self.space, self.dim, self.height, self.width = base.space, base.dim, base.height, base.width

    def generate(self, embedding: np.ndarray, space: str | None = None) -> np.ndarray:
        emb = self.check_embedding(embedding, space)
        return self.base.generate(self.prior(emb), space)

    def __getattr__(self, name: str):
        # everything else (timings, latents, decode...) is the base generator's
        return getattr(self.__dict__["base"], name)


def estimate_embedding_noise(decoded: np.ndarray, true_embeddings: np.ndarray) -> dict[str, float]:
    """How the decoder corrupts embeddings, as ``normalise(decoded) ~ signal * true + noise * N(0, I)``:
    ``signal`` the mean cosine of decoded and true embedding, ``noise`` the per-dimension std of the
    residual (the generator recipe's ``embedding_signal`` / ``embedding_noise``). Estimate on validation
    trials only."""
    d = np.asarray(decoded, dtype=np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    e = np.asarray(true_embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    signal = float(np.mean(np.sum(d * e, axis=1)))
    return {"signal": signal, "noise": float(np.sqrt(np.mean((d - signal * e) ** 2)))}


# -------------------------------------------------------------------------------------------- selection
def select_prior(
    decoded: np.ndarray,
    true: Sequence[int],
    stimuli_embeddings: np.ndarray,
    bank: np.ndarray | Mapping[str, np.ndarray],
    generator: Generator,
    embed: Callable[[Sequence[np.ndarray]], np.ndarray],
    ks: Sequence[int] = (1, 4, 16, 64),
    temperatures: Sequence[float] = (0.02, 0.05, 0.1, 0.2),
    space: str | None = None,
    progress: bool = True,
) -> tuple[EmbeddingPrior | None, list[dict[str, Any]]]:
    """Choose the bank, ``k`` and ``T`` by the 2-way identification (in the embedding space) of the images
    generated from validation trials, against no prior at all.

    Parameters
    ----------
    decoded : (n, D) decoded embeddings of validation trials (images outside ``bank``)
    true : (n,) row of ``stimuli_embeddings`` each trial showed
    stimuli_embeddings : (m, D) embeddings of the validation images (the 2-way candidates)
    bank : (b, D) embeddings of the generator's training images, or several such banks by name (e.g. the
        images and their augmented copies: a denser bank has nearer neighbours)
    generator : the generator, without a prior
    embed : images → embeddings (the generator's space)

    Returns
    -------
    (prior or None when no prior did better, one row per setting: bank, k, temperature, two_way; the
    prior's ``bank_name`` says which bank won)
    """
    from tqdm.auto import tqdm

    from brainstream.models.reconstruction import two_way_scores

    true = np.asarray(true, dtype=np.int64)
    banks = dict(bank) if isinstance(bank, Mapping) else {"images": bank}
    settings: list[tuple[str, int, float] | None] = [None]
    for name in banks:
        settings += [(name, 1, 1.0)] + [(name, k, t) for k in ks if k > 1 for t in temperatures]
    rows: list[dict[str, Any]] = []
    best: tuple[float, EmbeddingPrior | None] = (-1.0, None)
    for setting in tqdm(settings, desc="selecting the prior on validation", disable=not progress):
        prior = None
        if setting is not None:
            prior = EmbeddingPrior(banks[setting[0]], setting[1], setting[2], space, setting[0])
        inputs = decoded if prior is None else prior(decoded)
        images = [generator.generate(e, space) for e in inputs]
        score = float(two_way_scores(embed(images), stimuli_embeddings, true).mean())
        name, k, temperature = setting if setting is not None else (None, None, None)
        rows.append({"bank": name, "k": k, "temperature": temperature, "two_way": score})
        if score > best[0]:
            best = (score, prior)
    return best[1], rows
