"""Nearest-gallery-image search for decoded embeddings (cosine similarity, top-k).

``exact`` (default): one matrix product against the whole gallery, float32 or float16 storage. It is
memory-bound (one pass over N × D values per query): float16 halves both memory and time (100k × 1024: 88 ms
float32, 59 ms float16 on a busy shared 2-core machine; 20k: 12 ms). ``faiss-ivf`` / ``faiss-hnsw`` (the
``faiss`` extra) for galleries beyond that. IVF probes every list up to 100k images (exact answers); on
larger galleries the number of lists probed (``nprobe``) is the smallest that reaches a target recall@k
against exact search on validation queries (:func:`tune_nprobe`): decoded validation embeddings when the
pipeline names them, else noisy views of gallery rows (:func:`noisy_views`). HNSW searches with a wide beam.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Backend = Literal["exact", "faiss-ivf", "faiss-hnsw"]
BACKENDS: tuple[str, ...] = ("exact", "faiss-ivf", "faiss-hnsw")
#: IVF galleries up to this size probe every list (exact answers at a cost still below exact search's)
IVF_EXACT_UP_TO = 100_000


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _as_queries(queries: np.ndarray, dim: int) -> tuple[np.ndarray, bool]:
    q = np.asarray(queries, dtype=np.float32)
    single = q.ndim == 1
    q = q[None, :] if single else q
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(
            f"queries must have shape ({dim},) or (n, {dim}) to match the gallery; got {np.shape(queries)}. "
            "Is the encoder trained for this gallery's embedding space?"
        )
    if not np.all(np.isfinite(q)):
        raise ValueError("queries contain NaN or Inf; the encoder output is broken upstream")
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    return q / np.maximum(norms, 1e-12), single


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, scores.shape[1])
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.argsort(-scores, axis=1)
    )
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part_scores, order, axis=1), np.take_along_axis(part, order, axis=1)


class ExactIndex:
    """Brute-force inner product over L2-normalised rows (= cosine similarity)."""

    backend = "exact"

    def __init__(self, embeddings: np.ndarray, dtype: Literal["float32", "float16"] = "float32") -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
        self.matrix = np.ascontiguousarray(embeddings, dtype=dtype)
        self.dim = int(self.matrix.shape[1])
        self._half = None
        if dtype == "float16":
            # numpy has no fast float16 product; torch's half GEMV reads half the bytes of float32 and so
            # beats it on this memory-bound search (shares the array's memory, no copy)
            import torch

            self._half = torch.from_numpy(self.matrix)

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Cosine similarity of each query with every gallery row, ``(n, N)`` float32."""
        q, _ = _as_queries(queries, self.dim)
        if self._half is None:
            return q @ self.matrix.T
        import torch

        with torch.inference_mode():
            return (torch.from_numpy(q).half() @ self._half.T).float().numpy()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (n, k) float32, indices (n, k) int64)``, best first."""
        top_scores, top_idx = _top_k(self.scores(queries), k)
        return top_scores.astype(np.float32), top_idx.astype(np.int64)


class FaissIndex:
    """FAISS inner-product index (``ivf``: IVF-Flat; ``hnsw``: HNSW-Flat).

    Parameters
    ----------
    embeddings : numpy.ndarray
        ``(n, dim)`` L2-normalised gallery rows.
    kind : str
        ``ivf`` or ``hnsw``.
    nlist : int | None
        IVF lists (default ``sqrt(n)``).
    nprobe : int | None
        IVF lists probed per query; None: every list up to :data:`IVF_EXACT_UP_TO` images, else
        ``nlist // 10`` until :func:`tune_nprobe` picks one on validation queries.
    dtype : str
        IVF storage: ``float32`` (IVF-Flat) or ``float16`` (IVF with an fp16 scalar quantizer: half the
        memory and half the bytes read per probed list).
    threads : int
        FAISS (OpenMP) threads for searching (set process-wide once the index is built). One by default:
        the node answers one query at a time, and splitting one query's lists over threads of a shared
        2-core machine costs more in hand-offs than it saves.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        kind: Literal["ivf", "hnsw"] = "ivf",
        nlist: int | None = None,
        nprobe: int | None = None,
        threads: int = 1,
        dtype: Literal["float32", "float16"] = "float32",
    ):
        try:
            import faiss
        except ImportError:
            raise ImportError(
                "FAISS is not installed; install the extra with `pip install brainstream[faiss]` or use "
                "backend='exact' (fast up to a few hundred thousand images)"
            ) from None
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, self.dim = x.shape
        self.backend = f"faiss-{kind}"
        self._n = n
        if kind == "ivf":
            nlist = nlist or max(1, int(np.sqrt(n)))
            if not 1 <= nlist <= n:
                raise ValueError(f"nlist must be between 1 and the gallery size {n}, got {nlist}")
            quantizer = faiss.IndexFlatIP(self.dim)
            ip = faiss.METRIC_INNER_PRODUCT
            if dtype == "float16":
                fp16 = faiss.ScalarQuantizer.QT_fp16
                self.index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, fp16, ip)
            elif dtype == "float32":
                self.index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, ip)
            else:
                raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
            self._quantizer = quantizer  # the IVF index does not own it: keep it alive
            self.index.train(x)
            self.nlist = nlist
            self.nprobe = nprobe if nprobe is not None else (nlist if n <= IVF_EXACT_UP_TO else nlist // 10)
        elif kind == "hnsw":
            if nprobe is not None or nlist is not None or dtype != "float32":
                raise ValueError("nlist, nprobe and float16 storage apply to faiss-ivf only, not faiss-hnsw")
            self.index = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = 200
            self.index.hnsw.efSearch = 256
        else:
            raise ValueError(f"FAISS index kind must be 'ivf' or 'hnsw', got {kind!r}")
        self.index.add(x)  # training and adding use every core; searching, ``threads``
        faiss.omp_set_num_threads(threads)

    @property
    def nprobe(self) -> int | None:
        """IVF lists probed per query (None for HNSW)."""
        return int(self.index.nprobe) if self.backend == "faiss-ivf" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.backend != "faiss-ivf":
            raise ValueError("nprobe applies to faiss-ivf only")
        if not 1 <= int(value) <= self.nlist:
            raise ValueError(f"nprobe must be between 1 and nlist ({self.nlist}), got {value}")
        self.index.nprobe = int(value)

    def __len__(self) -> int:
        return self._n

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q, _ = _as_queries(queries, self.dim)
        k = min(k, self._n)
        scores, idx = self.index.search(q, k)
        return scores.astype(np.float32), idx.astype(np.int64)


def noisy_views(gallery: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` stand-ins for decoded embeddings: random gallery rows plus isotropic noise as large as the row.

    Used to tune an index when no decoded validation embeddings are given; a decoded embedding is a noisy
    view of the seen image's (cosine ~0.7 to it here, which is more than most decoders reach, so real
    validation queries are better when there are any).
    """
    rng = np.random.default_rng(seed)
    rows = np.asarray(gallery[rng.integers(0, len(gallery), n)], dtype=np.float32)
    noise = rng.standard_normal(rows.shape).astype(np.float32)
    noise *= np.linalg.norm(rows, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
    return rows + noise


def exact_top_k(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k gallery rows of each query in float32 (the reference an index is scored against)."""
    q, _ = _as_queries(queries, gallery.shape[1])
    rows = np.asarray(gallery, np.float32)
    out = np.empty((len(q), min(k, len(rows))), np.int64)
    for start in range(0, len(q), 64):  # 64 queries x 1M rows of scores at a time
        _, out[start : start + 64] = _top_k(q[start : start + 64] @ rows.T, k)
    return out


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k that the index returned."""
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


def tune_nprobe(
    index: FaissIndex, gallery: np.ndarray, queries: np.ndarray, k: int = 5, target_recall: float = 0.95
) -> dict:
    """Set ``index.nprobe`` to the smallest power of two (then ``nlist``) whose recall@k against exact search
    on ``queries`` reaches ``target_recall``; returns ``{"nprobe", "recall", "tried": [(nprobe, recall)]}``.

    ``queries`` must be validation data (decoded validation embeddings, or :func:`noisy_views`), never the
    test trials the index will be scored on.
    """
    if index.backend != "faiss-ivf":
        raise ValueError(f"nprobe is tuned for faiss-ivf only, not {index.backend}")
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    truth = exact_top_k(gallery, queries, k)
    candidates = [p for p in (2**i for i in range(20)) if p < index.nlist] + [index.nlist]
    tried: list[tuple[int, float]] = []
    for nprobe in candidates:
        index.nprobe = nprobe
        recall = recall_at_k(index.search(queries, k)[1], truth)
        tried.append((nprobe, recall))
        if recall >= target_recall:
            break
    return {"nprobe": index.nprobe, "recall": tried[-1][1], "tried": tried}


def build_index(
    embeddings: np.ndarray,
    backend: str = "exact",
    dtype: Literal["float32", "float16"] = "float32",
    nlist: int | None = None,
    nprobe: int | None = None,
) -> ExactIndex | FaissIndex:
    """Make a search index over ``(n, dim)`` L2-normalised gallery rows (``dtype``: storage of exact search
    and faiss-ivf; ``nlist``/``nprobe``: faiss-ivf)."""
    if backend == "exact":
        if nlist is not None or nprobe is not None:
            raise ValueError("nlist and nprobe apply to faiss-ivf only, not exact search")
        return ExactIndex(embeddings, dtype)
    if backend in ("faiss-ivf", "faiss-hnsw"):
        kind = backend.split("-", 1)[1]
        return FaissIndex(embeddings, kind=kind, nlist=nlist, nprobe=nprobe, dtype=dtype)  # type: ignore[arg-type]
    raise ValueError(f"unknown retrieval backend {backend!r}; choose one of {', '.join(BACKENDS)}")


@dataclass
class RetrievalResult:
    """Top-k gallery images for one embedding, best first."""

    ids: list[str]
    scores: np.ndarray  # (k,) float32 cosine similarities
    indices: np.ndarray  # (k,) int64 gallery rows
    paths: list[str]  # image files ("" where the gallery has none)
    rank_of_true: int | None = None  # 0-based rank of the true image in the whole gallery, when known

    def rank_of(self, image_id: str | None) -> int | None:
        """0-based rank of ``image_id`` among the top k, None when absent."""
        if image_id is None:
            return None
        return self.ids.index(image_id) if image_id in self.ids else None


class Retriever:
    """A gallery plus an index: ``search(embedding, k)`` in the gallery's space.

    Parameters
    ----------
    gallery : models.gallery.Gallery
        Anything with ``embeddings``, ``ids``, ``space`` and ``image_path(id)``.
    backend : str
        ``exact`` | ``faiss-ivf`` | ``faiss-hnsw``.
    dtype : str
        Storage of the exact index (``float16`` halves memory).
    nlist, nprobe : int | None, int | "auto"
        faiss-ivf only: lists, and lists probed per query; ``auto`` tunes ``nprobe`` (:func:`tune_nprobe`)
        for galleries beyond :data:`IVF_EXACT_UP_TO` images and probes every list below.
    target_recall : float
        recall@``k`` against exact search that ``auto`` must reach on the validation queries.
    validation_queries : numpy.ndarray | None
        ``(n, dim)`` decoded validation embeddings to tune on; None: :func:`noisy_views` of the gallery.
    k : int
        The k of the recall that is tuned (the node's top-k).
    """

    def __init__(
        self,
        gallery,
        backend: str = "exact",
        dtype: Literal["float32", "float16"] = "float32",
        *,
        nlist: int | None = None,
        nprobe: int | Literal["auto"] = "auto",
        target_recall: float = 0.95,
        validation_queries: np.ndarray | None = None,
        k: int = 5,
    ) -> None:
        self.gallery = gallery
        self.space: str = gallery.space
        self.ids: list[str] = list(gallery.ids)
        embeddings = np.asarray(gallery.embeddings)
        fixed = None if nprobe == "auto" else int(nprobe)
        self.index = build_index(embeddings, backend, dtype, nlist=nlist, nprobe=fixed)
        #: how nprobe was chosen (faiss-ivf with ``auto`` beyond IVF_EXACT_UP_TO images), else None
        self.tuning: dict | None = None
        if backend == "faiss-ivf" and fixed is None and len(embeddings) > IVF_EXACT_UP_TO:
            if validation_queries is None:
                queries, source = noisy_views(embeddings, 200, seed=1), "noisy views of gallery rows"
            else:
                queries, source = np.asarray(validation_queries, np.float32), "decoded validation embeddings"
                if queries.ndim != 2 or queries.shape[1] != embeddings.shape[1]:
                    raise ValueError(
                        f"validation queries must be (n, {embeddings.shape[1]}) embeddings of the gallery's "
                        f"space, got shape {queries.shape}"
                    )
            self.tuning = tune_nprobe(self.index, embeddings, queries, k, target_recall) | {"queries": source}
        self._paths = [self._path(i) for i in self.ids]

    def _path(self, image_id: str) -> str:
        try:
            return str(Path(self.gallery.image_path(image_id)))
        except Exception:  # a gallery without thumbnails still retrieves ids  # noqa: BLE001
            return ""

    def check_space(self, space: str | None) -> None:
        """Refuse embeddings from another space, naming both (docs/architecture.md §6)."""
        from brainstream.models.gallery import check_same_space

        check_same_space(
            self.space,
            str(space),
            what="embedding",
            hint="use a gallery built with the encoder's embedder, or an encoder trained for this gallery",
        )

    def search(
        self, embedding: np.ndarray, k: int = 5, space: str | None = None, true_id: str | None = None
    ) -> RetrievalResult:
        """Top-k gallery items for one ``(dim,)`` embedding; with ``space``, check it first.

        With ``true_id`` (an id in the gallery), ``rank_of_true`` is its rank among ALL gallery items.
        """
        result = self.search_many(np.asarray(embedding)[None, :], k, space)[0]
        if true_id is not None and true_id in self.gallery:
            q, _ = _as_queries(embedding, self.index.dim)
            if isinstance(self.index, ExactIndex):
                all_scores = self.index.scores(q)[0]
            else:
                all_scores = q[0] @ np.asarray(self.gallery.embeddings, dtype=np.float32).T
            result.rank_of_true = int(np.sum(all_scores > all_scores[self.gallery.index_of(true_id)]))
        return result

    def rank_among(self, embedding: np.ndarray, true_id: str, candidate_ids: list[str]) -> int:
        """0-based rank of ``true_id`` among ``candidate_ids`` (e.g. the session's test images): N-way
        retrieval with N = ``len(candidate_ids)``, as papers report it."""
        rows = self.gallery.indices_of(candidate_ids)
        q, _ = _as_queries(embedding, self.index.dim)
        scores = q[0] @ np.asarray(self.gallery.embeddings[rows], dtype=np.float32).T
        own = float(q[0] @ np.asarray(self.gallery.embeddings[self.gallery.index_of(true_id)], np.float32))
        return int(np.sum(scores > own))

    def search_many(
        self, embeddings: np.ndarray, k: int = 5, space: str | None = None
    ) -> list[RetrievalResult]:
        if space is not None:
            self.check_space(space)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores, idx = self.index.search(embeddings, k)
        return [
            RetrievalResult([self.ids[j] for j in row], s, row, [self._paths[j] for j in row])
            for s, row in zip(scores, idx, strict=True)
        ]
