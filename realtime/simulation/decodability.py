"""How decodable is a virtual subject? Ridge retrieval on single trials, with chance, for tuning the SNR.

Simulates an RSVP session in memory (no file), band-passes 0.5-40 Hz causally, decimates to ~100-120 Hz,
cuts epochs 0-0.8 s after onset, scales channels robustly (median/IQR from training trials, clamp ±20), fits
ridge regression from the flattened epoch to the image embedding (regularisation chosen on held-out training
IMAGES, never on test), and retrieves each test trial among the test images by cosine similarity.

An optional nonlinear probe adds log band-power features (14-30 Hz envelope in 100 ms bins) to the linear
ones: the response model hides part of the image information in non-phase-locked bursts, which only a
nonlinear read-out can use. Its gain over plain ridge shows that room exists for a deep model.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from brainstream.realtime.simulation.offline import RSVPDesign, make_rsvp_schedule
from brainstream.realtime.simulation.subject import VirtualSubject

ALPHAS = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6)


def simulate_epochs(
    subject: VirtualSubject,
    design: RSVPDesign,
    *,
    tmax: float = 0.8,
    band: tuple[float, float] = (0.5, 40.0),
    target_sfreq: float = 120.0,
    with_power: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Single-trial epochs of a simulated session: ``X (n, n_ch, n_t)``, ``P`` (power features or None),
    ``image_ids``, ``splits``."""
    from scipy.signal import butter, sosfilt, sosfilt_zi

    trials = make_rsvp_schedule(subject.gallery.ids, design)
    for trial in trials:
        subject.add_stimulus(trial.onset, trial.offset, trial.image_id)
    sf = subject.sfreq
    decim = max(1, int(round(sf / target_sfreq)))
    sos = butter(4, band, btype="band", fs=sf, output="sos")
    zi = np.repeat(sosfilt_zi(sos)[:, None, :], subject.n_channels, axis=1) * 0.0
    sos_b = butter(4, (14.0, 30.0), btype="band", fs=sf, output="sos")
    zi_b = zi.copy()
    n_total = int(np.ceil((trials[-1].offset + 1.0) * sf))
    chunk = int(10 * sf)
    low, power = [], []
    iterator = range(0, n_total, chunk)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="simulating", unit="chunk")
    for start in iterator:
        x = subject.generate(min(chunk, n_total - start)).astype(np.float64)
        y, zi = sosfilt(sos, x, axis=1, zi=zi)
        low.append(y[:, ::decim].astype(np.float32))  # chunk = multiple of decim, so phases line up
        if with_power:
            b, zi_b = sosfilt(sos_b, x, axis=1, zi=zi_b)
            power.append((b**2)[:, ::decim].astype(np.float32))
    low = np.concatenate(low, axis=1)
    sf_out = sf / decim
    n_t = int(round(tmax * sf_out))
    onsets = np.array([int(round(t.onset * sf_out)) for t in trials])
    idx = onsets[:, None] + np.arange(n_t)[None, :]
    X = np.transpose(low[:, idx], (1, 0, 2))
    P = None
    if with_power:
        pw = np.concatenate(power, axis=1)
        bin_n = max(1, int(round(0.1 * sf_out)))
        E = np.transpose(pw[:, idx], (1, 0, 2))[:, :, : (n_t // bin_n) * bin_n]
        P = np.log(E.reshape(E.shape[0], E.shape[1], -1, bin_n).mean(-1) + 1e-40)
    return {
        "X": X,
        "P": P,
        "image_ids": [t.image_id for t in trials],
        "splits": np.array([t.split for t in trials]),
        "sfreq": sf_out,
    }


def _robust_scale(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    med = np.median(train, axis=(0, 2), keepdims=True)
    q75, q25 = np.percentile(train, [75, 25], axis=(0, 2), keepdims=True)
    iqr = np.maximum(q75 - q25, 1e-30)
    return [np.clip((a - med) / iqr, -20, 20).reshape(len(a), -1) for a in (train, *others)]


def _ridge_dual(X: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """Weights of ridge regression in the dual (n << features): W = Xᵀ (X Xᵀ + αI)⁻¹ Y."""
    K = X @ X.T
    return X.T @ np.linalg.solve(K + alpha * np.eye(len(K)), Y)


def _topk(pred: np.ndarray, true_idx: np.ndarray, candidates: np.ndarray, k: int) -> float:
    p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    sims = p @ c.T
    rank = (sims > sims[np.arange(len(sims)), true_idx][:, None]).sum(1)
    return float(np.mean(rank < k))


def ridge_retrieval(data: dict[str, Any], embeddings_of, *, features: str = "linear") -> dict[str, float]:
    """Ridge top-1/top-5 on single test trials and on repetition averages; chance for the same candidates.

    ``features``: ``"linear"`` (the epoch) or ``"linear+power"`` (the nonlinear probe).
    """
    splits = data["splits"]
    ids = np.array(data["image_ids"])
    tr, te = splits == "train", splits == "test"
    blocks = [data["X"]] + ([data["P"]] if features == "linear+power" else [])
    feats_tr, feats_te = [], []
    for B in blocks:
        a, b = _robust_scale(B[tr], B[te])
        feats_tr.append(a)
        feats_te.append(b)
    Xtr = np.concatenate(feats_tr, 1).astype(np.float64)
    Xte = np.concatenate(feats_te, 1).astype(np.float64)
    Ytr = embeddings_of(list(ids[tr]))
    y_mean = Ytr.mean(0)
    x_mean = Xtr.mean(0)
    Xtr -= x_mean
    Xte -= x_mean
    # validation: the last 20 % of training IMAGES (each seen once), retrieval among them
    n_val = max(5, len(Xtr) // 5)
    fit, val = slice(0, len(Xtr) - n_val), slice(len(Xtr) - n_val, len(Xtr))
    scores = {}
    for alpha in ALPHAS:
        W = _ridge_dual(Xtr[fit], Ytr[fit] - y_mean, alpha * Xtr.shape[1] / 1000.0)
        scores[alpha] = _topk(Xtr[val] @ W, np.arange(n_val), Ytr[val] - y_mean, 5)
    best = max(scores, key=scores.get)
    W = _ridge_dual(Xtr, Ytr - y_mean, best * Xtr.shape[1] / 1000.0)
    test_ids = sorted(set(ids[te]))
    cand = embeddings_of(test_ids) - y_mean
    where = {i: k for k, i in enumerate(test_ids)}
    true = np.array([where[i] for i in ids[te]])
    pred = Xte @ W
    avg = np.stack([pred[true == k].mean(0) for k in range(len(test_ids))])
    n = len(test_ids)
    return {
        "n_train": int(tr.sum()),
        "n_test_trials": int(te.sum()),
        "n_candidates": n,
        "chance_top1": 1.0 / n,
        "chance_top5": min(5, n) / n,
        "top1": _topk(pred, true, cand, 1),
        "top5": _topk(pred, true, cand, 5),
        "top5_averaged": _topk(avg, np.arange(n), cand, 5),
        "alpha": float(best),
    }


def measure(
    profile: str = "ctf275_things_meg",
    gallery: Any = None,
    seed: int = 0,
    snr: float | None = None,
    design: RSVPDesign | None = None,
    probe_nonlinear: bool = True,
    cnn: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Simulate, epoch and report ridge (and nonlinear-probe) retrieval for one subject."""
    from brainstream.models.gallery import Gallery

    if gallery is None:
        from brainstream.models.demo_gallery import default_gallery_dir

        gallery = default_gallery_dir()
    if not hasattr(gallery, "embeddings"):
        gallery = Gallery.load(gallery)
    kwargs = {} if snr is None else {"snr": snr}
    subject = VirtualSubject(profile, gallery, seed=seed, **kwargs)
    design = design or RSVPDesign(n_train_images=800, n_test_images=200, test_repeats=2)
    data = simulate_epochs(subject, design, with_power=probe_nonlinear, progress=progress)

    def embeddings_of(image_ids):
        return gallery.embeddings[[gallery.index_of(i) for i in image_ids]].astype(np.float64)

    out: dict[str, Any] = {
        "snr": subject.snr,
        "seed": seed,
        "profile": subject.profile.name,
        "design": asdict(design),
    }
    out["ridge"] = ridge_retrieval(data, embeddings_of)
    if probe_nonlinear:
        out["ridge_linear_plus_power"] = ridge_retrieval(data, embeddings_of, features="linear+power")
    if cnn:
        out["cnn"] = cnn_retrieval(data, embeddings_of)
    return out


if __name__ == "__main__":  # python -m brainstream.realtime.simulation.decodability [snr ...]
    import json
    import sys

    for value in sys.argv[1:] or ["none"]:
        result = measure(snr=None if value == "none" else float(value), progress=True)
        print(json.dumps(result, indent=1))


def cnn_retrieval(
    data: dict[str, Any], embeddings_of, *, epochs: int = 14, seed: int = 0, hidden: int = 128
) -> dict[str, float]:
    """A small nonlinear decoder for comparison with ridge: spatial 1x1 conv, 5 residual dilated convs
    (BatchNorm, GELU), 8x temporal pooling, linear head; CLIP (learned temperature) + MSE loss, AdamW.
    The epoch with the best validation top-5 (held-out training images) is kept; test reported once."""
    import torch
    import torch.nn.functional as F  # noqa: N812 (the usual name)
    from torch import nn

    torch.manual_seed(seed)
    splits, ids = data["splits"], np.array(data["image_ids"])
    tr, te = splits == "train", splits == "test"
    a, b = _robust_scale(data["X"][tr], data["X"][te])
    Xtr = a.reshape(data["X"][tr].shape).astype(np.float32)
    Xte = b.reshape(data["X"][te].shape).astype(np.float32)
    Etr = embeddings_of(list(ids[tr])).astype(np.float32)
    n_val = max(5, len(Xtr) // 5)
    e_mean = torch.from_numpy(Etr[:-n_val].mean(0))
    n_ch, n_t = Xtr.shape[1], Xtr.shape[2]

    class _Block(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.conv = nn.Conv1d(hidden, hidden, 3, padding=d, dilation=d)
            self.bn = nn.BatchNorm1d(hidden)

        def forward(self, x):
            return x + F.gelu(self.bn(self.conv(x)))

    net = nn.Sequential(
        nn.Dropout(0.3), nn.Conv1d(n_ch, hidden, 1), nn.GELU(), *[_Block(d) for d in (1, 2, 4, 8, 1)],
        nn.Conv1d(hidden, 64, 1), nn.GELU(), nn.AvgPool1d(8), nn.Flatten(),
        nn.Linear(64 * (n_t // 8), Etr.shape[1]),
    )  # fmt: skip
    log_temp = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    opt = torch.optim.AdamW([*net.parameters(), log_temp], 1e-3, weight_decay=0.05)
    xf, ef = torch.from_numpy(Xtr[:-n_val]), torch.from_numpy(Etr[:-n_val]) - e_mean
    xv, ev = torch.from_numpy(Xtr[-n_val:]), torch.from_numpy(Etr[-n_val:]) - e_mean
    best, state = -1.0, None
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xf))
        for b in range(0, len(perm), 64):
            i = perm[b : b + 64]
            pred = net(xf[i])
            logits = F.normalize(pred, dim=1) @ F.normalize(ef[i], dim=1).T * log_temp.exp()
            loss = 0.75 * F.cross_entropy(logits, torch.arange(len(i))) + 2.5 * F.mse_loss(pred, ef[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = _topk(net(xv).numpy(), np.arange(n_val), ev.numpy(), 5)
        if val > best:
            best, state = val, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    net.eval()
    test_ids = sorted(set(ids[te]))
    where = {i: k for k, i in enumerate(test_ids)}
    true = np.array([where[i] for i in ids[te]])
    cand = embeddings_of(test_ids) - e_mean.numpy()
    with torch.no_grad():
        pred = net(torch.from_numpy(Xte)).numpy()
    return {"val_top5": best, "top1": _topk(pred, true, cand, 1), "top5": _topk(pred, true, cand, 5)}
