"""The calibration report: Markdown with PNG plots (matplotlib, Agg backend).

Sections: summary table (retrieval top-1/top-5 of zero-shot, ridge, adapted and reference models against
chance), data quality per channel, evoked responses, learning curve, retrieval bars, the runs recorded and
what the presenter measured (catch trials, onset lag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality(quality: dict[str, Any], path: Path) -> Path:
    """Per-channel spread (IQR of the filtered signal, robust z across channels) and line-noise ratio."""
    plt = _plt()
    names = quality["ch_names"]
    z = np.asarray(quality["z_log_iqr"], dtype=float)
    line = np.asarray(quality["line_ratio"], dtype=float)
    x = np.arange(len(names))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, len(names) * 0.16), 5.5), sharex=True)
    colors = ["tab:red" if abs(v) > 5 else "tab:blue" for v in z]
    axes[0].bar(x, z, color=colors)
    axes[0].axhline(5, color="tab:red", ls="--", lw=0.8)
    axes[0].axhline(-5, color="tab:red", ls="--", lw=0.8)
    axes[0].set_ylabel("spread (robust z of log IQR)")
    axes[0].set_title("Data quality per channel (red: flagged as bad, |z| > 5)")
    axes[1].bar(x, np.nan_to_num(line), color="tab:gray")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("line / 1-40 Hz power")
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(names, rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_evoked(
    evoked: np.ndarray, times: np.ndarray, ch_names: list[str], image_s: float, n_trials: int, path: Path
) -> Path:
    """Butterfly plot of the average over training trials and the global field power."""
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    axes[0].plot(times, evoked.T, lw=0.6, alpha=0.7)
    gfp = evoked.std(axis=0)
    top = np.argsort(np.abs(evoked).max(axis=1))[-3:]
    for i in top:
        axes[0].plot(times, evoked[i], lw=1.6, label=ch_names[i])
    axes[0].legend(fontsize=7, loc="upper right", title="largest", title_fontsize=7)
    axes[0].set_ylabel("robust-scaled amplitude")
    axes[0].set_title(f"Evoked response (mean of {n_trials} training trials)")
    axes[1].plot(times, gfp, color="k")
    axes[1].set_ylabel("GFP")
    axes[1].set_xlabel("time from image onset (s)")
    for ax in axes:
        ax.axvline(0, color="tab:green", lw=1)
        ax.axvline(image_s, color="tab:orange", lw=1, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_learning_curve(
    curve: list[dict[str, Any]],
    zero_shot: float,
    reference: float | None,
    chance: float,
    path: Path,
    reference_factor: int = 5,
    adapted_name: str = "pretrained + new subject layer",
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = [r["n_trials"] for r in curve]
    ax.plot(n, [100 * r["adapted"] for r in curve], "o-", label=f"adapted ({adapted_name})")
    ax.plot(n, [100 * r["ridge"] for r in curve], "s-", label="ridge")
    if all("anchor" in r for r in curve):
        ax.plot(n, [100 * r["anchor"] for r in curve], "^-", label="anchor alignment (no training)")
    ax.axhline(100 * zero_shot, color="tab:purple", ls="--", label="zero-shot (no adaptation)")
    if reference is not None:
        ax.axhline(
            100 * reference, color="tab:green", ls="-.", label=f"reference ({reference_factor}× the data)"
        )
    ax.axhline(100 * chance, color="gray", ls=":", label="chance")
    ax.set_xlabel("calibration training trials used")
    ax.set_ylabel("test top-5 accuracy (%)")
    ax.set_ylim(0, 104)
    ax.set_title("Learning curve")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_retrieval(models: dict[str, dict[str, float]], chance1: float, chance5: float, path: Path) -> Path:
    plt = _plt()
    names = list(models)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.bar(x - 0.2, [100 * models[n]["top1"] for n in names], 0.4, label="top-1")
    ax.bar(x + 0.2, [100 * models[n]["top5"] for n in names], 0.4, label="top-5")
    ax.axhline(100 * chance1, color="tab:blue", ls=":", lw=1, label="chance top-1")
    ax.axhline(100 * chance5, color="tab:orange", ls=":", lw=1, label="chance top-5")
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 104)
    ax.set_title("Retrieval on the held-out repeated test images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def write_report(out_dir: str | Path, ctx: dict[str, Any]) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir``; returns the Markdown path.

    ``ctx`` keys: subject_id, protocol, summary (the CLI JSON), models ({name: {top1, top5, single_trial}}),
    n_way, chance_top1, chance_top5, quality, evoked, times, ch_names, image_s, n_evoked, learning_curve,
    chosen, selection ({name: val metrics}), runs (list of dicts), presenter (list of dicts), seconds,
    pretrained (dict), reference (dict | None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = ctx["summary"]
    plot_quality(ctx["quality"], out / "quality.png")
    plot_evoked(
        ctx["evoked"], ctx["times"], ctx["ch_names"], ctx["image_s"], ctx["n_evoked"], out / "evoked.png"
    )
    ref5 = (s.get("reference") or {}).get("top5")
    plot_learning_curve(
        ctx["learning_curve"],
        s["zero_shot"]["top5"],
        ref5,
        s["chance_top5"],
        out / "learning_curve.png",
        ctx.get("reference_factor", 5),
        ctx.get("adapted_name", "pretrained + new subject layer"),
    )
    bars = {k: v for k, v in ctx["models"].items() if v is not None}
    plot_retrieval(bars, ctx["chance_top1"], ctx["chance_top5"], out / "retrieval.png")
    lines = [
        f"# Calibration report — subject {ctx['subject_id']}",
        "",
        f"Protocol **{ctx['protocol']}**: {s['trials']} trials recorded (train + repeated test), "
        f"{ctx['n_way']}-way retrieval among the held-out test images (each test image's predicted "
        "embeddings averaged over its repetitions; single-trial numbers beside them). Models were chosen on "
        "validation images carved from the training images; the test images were used once, after every "
        "choice.",
        "",
        "| model | top-1 | top-5 | single-trial top-1 | single-trial top-5 |",
        "|---|---|---|---|---|",
    ]
    for name, m in ctx["models"].items():
        if m is None:
            continue
        st = m.get("single_trial") or {}
        lines.append(
            f"| {name} | {_pct(m['top1'])} | {_pct(m['top5'])} | {_pct(st.get('top1'))} | "
            f"{_pct(st.get('top5'))} |"
        )
    lines.append(f"| chance | {_pct(ctx['chance_top1'])} | {_pct(ctx['chance_top5'])} | | |")
    ratio = (s["adapted"]["top5"] / ref5) if ref5 else None
    lines += [
        "",
        f"Chosen for live decoding: **{ctx['chosen']}** (validation mean normalised rank, lower is better: "
        + ", ".join(f"{k} {v['mean_rank']:.3f}" for k, v in ctx["selection"].items())
        + ").",
        "",
    ]
    aug = ctx.get("augment") or {}
    if aug.get("time_shift") or aug.get("noise_std"):
        lines += [
            f"Adaptation trained on augmented windows (shifts up to ±{aug.get('time_shift', 0)} samples, "
            f"noise std {aug.get('noise_std', 0):g} in scaled units).",
            "",
        ]
    soup = ctx.get("soup") or {}
    if soup.get("folds"):
        cv = soup.get("cv") or {}
        lines += [
            f"The adapted model is a {soup['folds']}-fold soup: the recipe chosen on validation was trained "
            f"{soup['folds']} times, each time early-stopped on its own held-out {soup['folds']}th of the "
            "training images, and the weights were averaged, so every calibration image trained it (out-of-"
            f"fold validation: mean rank {cv.get('mean_rank', float('nan')):.3f}, single-trial top-5 among "
            f"the held-out images {_pct(cv.get('top5'))}).",
            "",
        ]
    if ratio is not None:
        verdict = "meets" if ratio >= 0.8 and s["adapted"]["top5"] >= s["zero_shot"]["top5"] else "misses"
        lines.append(
            f"Adapted top-5 is {100 * ratio:.0f} % of the reference's (a model trained on this subject with "
            f"{ctx['reference'].get('n_trials')} trials, chosen on validation among "
            f"{', '.join(ctx['reference'].get('candidates', {}))}: {ctx['reference'].get('chosen')}); "
            f"this {verdict} the goal of ≥ 80 % of the reference and ≥ zero-shot."
        )
        lines.append("")
    lines += [
        f"Use it live: `brainstream live --config configs/pipelines/<name>.yaml --subject {ctx['subject_id']}"
        f" --subjects-dir {ctx.get('subjects_dir', 'subjects')}`.",
        "",
        "## Retrieval",
        "",
        "![retrieval](retrieval.png)",
        "",
        "## Learning curve",
        "",
        "Few-shot curves: test top-5 of the adapted model (same recipe as the final one), of ridge and (when "
        "the protocol lists it) of anchor alignment, each trained on the first *n* calibration training "
        "trials; the zero-shot line is the population-pretrained encoder with no data from this subject.",
        "",
        "![learning curve](learning_curve.png)",
        "",
        "| training trials | adapted top-5 | ridge top-5 | anchor top-5 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['n_trials']} | {_pct(r['adapted'])} | {_pct(r['ridge'])} | {_pct(r.get('anchor'))} |"
        for r in ctx["learning_curve"]
    ]
    q = ctx["quality"]
    lines += [
        "",
        "## Data quality",
        "",
        f"{len(q['ch_names'])} channels, {q['seconds']:.0f} s of signal in the first run. Odd channels "
        f"(spread far from the others): {', '.join(q['bad']) if q['bad'] else 'none'}.",
        "",
        "![quality](quality.png)",
        "",
        "## Evoked responses",
        "",
        "![evoked](evoked.png)",
        "",
        "## Runs",
        "",
        "| run | file | trials | interrupted | catch hits | median onset lag (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in ctx["runs"]:
        p = r.get("presenter") or {}
        lag = (p.get("onset_lag_ms") or {}).get("median")
        lines.append(
            f"| {r['run']} | {r['file']} | {r.get('trials', '?')} | {r.get('interrupted', '?')} | "
            f"{p.get('catch_hits', '—')}/{p.get('catch_total', '—')} | "
            f"{'—' if lag is None else f'{lag:.1f}'} |"
        )
    lines += [
        "",
        "## Provenance",
        "",
        f"- pretrained encoder: `{ctx['pretrained'].get('path')}` (simulated subjects "
        f"{ctx['pretrained'].get('seeds')}, never the calibrated subject)",
        f"- timings (s): {', '.join(f'{k} {v:.1f}' for k, v in ctx['seconds'].items())}",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
