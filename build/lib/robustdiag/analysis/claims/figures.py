"""One PNG per tested claim, drawn from the data its test used (``Finding.plot``), titled with its verdict."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from robustdiag.analysis.claims.evaluate import ClaimResult, threshold

DPI = 110
VERDICT_COLOURS = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700"}


def _short(name: object) -> str:
    text = str(name)
    return text.removeprefix("metric/").removeprefix("attack/")


def _paired(ax: Axes, plot: pd.DataFrame) -> None:
    for _, row in plot.iterrows():
        ax.plot([0, 1], [row["a"], row["b"]], color="0.6", marker="o", markersize=3, linewidth=0.8)
    ax.plot([0, 1], [plot["a"].mean(), plot["b"].mean()], color="k", marker="s", linewidth=2, label="mean")
    ax.set_xticks([0, 1], [_short(plot["a_name"].iloc[0]), _short(plot["b_name"].iloc[0])])
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel(_short(plot["value"].iloc[0]) if "value" in plot else "relative gap / drop")
    ax.legend(fontsize=8)


def _layers(ax: Axes, plot: pd.DataFrame) -> None:
    order = list(dict.fromkeys(plot["layer"]))
    means = plot.groupby("layer")[["a", "b"]].mean().reindex(order)
    x = np.arange(len(order))
    ax.plot(x, means["a"], marker="o", label=str(plot["a_name"].iloc[0]))
    ax.plot(x, means["b"], marker="o", label=str(plot["b_name"].iloc[0]))
    ax.set_xticks(x, order, rotation=90, fontsize=6)
    ax.set_ylabel(f"{plot['metric'].iloc[0]} excess (mean over pairs)")
    ax.legend(fontsize=8)


def _dose(ax: Axes, plot: pd.DataFrame) -> None:
    for model, group in plot.groupby("model"):
        ax.scatter(group["q"], group["value"], label=str(model), s=20, alpha=0.8)
    means = plot.groupby("q")["value"].mean()
    ax.plot(means.index, means.to_numpy(), color="k", linewidth=2, label="mean")
    ax.set_xlabel("fraction of random labels q")
    ax.set_ylabel(_short(plot["name"].iloc[0]))
    ax.legend(fontsize=8)


def _severity(ax: Axes, plot: pd.DataFrame) -> None:
    for (group, shift), rows in plot.groupby(["group", "shift"]):
        means = rows.groupby("severity")["drop"].agg(["mean", "std"])
        ax.errorbar(
            means.index,
            means["mean"],
            yerr=means["std"].fillna(0),
            marker="o",
            capsize=2,
            label=f"{group} {shift}",
        )
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set_xlabel("severity")
    ax.set_ylabel(f"drop of {plot['metric'].iloc[0]} (clean − shifted)")
    ax.legend(fontsize=7)


def _drop_vs_acc(ax: Axes, plot: pd.DataFrame) -> None:
    for group, rows in plot.groupby("group"):
        ax.scatter(rows["acc_drop"], rows["drop"], s=14, alpha=0.7, label=str(group))
    ax.set_xlabel("accuracy drop (clean − shifted)")
    ax.set_ylabel(f"drop of {plot['metric'].iloc[0]}")
    ax.legend(fontsize=8)


def _options(ax: Axes, plot: pd.DataFrame) -> None:
    options = list(dict.fromkeys(plot["option"]))
    for i, option in enumerate(options):
        d = plot.loc[plot["option"] == option, "d"]
        ax.scatter(np.full(len(d), i), d, s=14, alpha=0.7)
        ax.plot([i - 0.25, i + 0.25], [d.mean(), d.mean()], color="k", linewidth=2)
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set_xticks(range(len(options)), [_short(o) for o in options], rotation=20, fontsize=7)
    ax.set_ylabel("paired difference (a − b)")


def _association(ax: Axes, plot: pd.DataFrame) -> None:
    for group, rows in plot.groupby("group"):
        ax.scatter(rows["x"], rows["y"], s=22, alpha=0.85, label=str(group))
    for _, rows in plot.groupby("cell"):  # within-cell (architecture × regime) least-squares lines
        ok = np.isfinite(rows["x"]) & np.isfinite(rows["y"])
        if ok.sum() >= 2 and rows.loc[ok, "x"].nunique() > 1:
            slope, intercept = np.polyfit(rows.loc[ok, "x"], rows.loc[ok, "y"], 1)
            xs = np.linspace(rows.loc[ok, "x"].min(), rows.loc[ok, "x"].max(), 2)
            ax.plot(xs, slope * xs + intercept, color="0.3", linewidth=0.8)
    x = plot["x"].to_numpy(float)
    if np.all(x[np.isfinite(x)] > 0) and np.nanmax(x) / max(np.nanmin(x), 1e-300) > 100:
        ax.set_xscale("log")
    ax.set_xlabel(_short(plot["x_name"].iloc[0]))
    ax.set_ylabel(_short(plot["y_name"].iloc[0]))
    ax.legend(fontsize=8, title="regime (lines: within-cell fits)", title_fontsize=7)


def _auroc(ax: Axes, plot: pd.DataFrame) -> None:
    scores = list(dict.fromkeys(plot["score"]))
    for i, score in enumerate(scores):
        values = plot.loc[plot["score"] == score, "auroc"].dropna()
        ax.scatter(np.full(len(values), i), values, s=14, alpha=0.7)
        if len(values):
            ax.plot([i - 0.25, i + 0.25], [values.median()] * 2, color="k", linewidth=2)
    ax.axhline(0.5, color="0.5", linewidth=0.8)
    ax.set_xticks(range(len(scores)), [_short(s) for s in scores], rotation=25, fontsize=7)
    ax.set_ylabel("per-run AUROC (bar: median)")


def _stability(ax: Axes, plot: pd.DataFrame) -> None:
    cells = sorted(set(plot["cell"]))
    for i, cell in enumerate(cells):
        values = plot.loc[plot["cell"] == cell, "value"]
        ax.scatter(np.full(len(values), i), values, s=18)
    ax.set_xticks(range(len(cells)), cells, rotation=25, fontsize=7)
    ax.set_ylabel(f"{_short(plot['name'].iloc[0])} per seed")


def _runs(ax: Axes, plot: pd.DataFrame, line: float) -> None:
    values = plot["value"].to_numpy(float)
    ax.scatter(np.arange(len(values)), values, s=18)
    ax.axhline(line, color="#cf222e", linewidth=1, label="threshold")
    if np.all(values[np.isfinite(values)] > 0) and line > 0:
        ax.set_yscale("log")
    ax.set_xticks(range(len(values)), [str(r) for r in plot["run_dir"]], rotation=90, fontsize=6)
    ax.set_ylabel(_short(plot["name"].iloc[0]))
    ax.legend(fontsize=8)


def _architectures(ax: Axes, plot: pd.DataFrame) -> None:
    means = plot.groupby("family")["value"].mean()
    ax.bar(range(len(means)), means.to_numpy())
    ax.set_xticks(range(len(means)), list(means.index))
    ax.set_ylabel(_short(plot["name"].iloc[0]))


DRAWERS: dict[str, Callable[[Axes, pd.DataFrame], None]] = {
    "paired": _paired, "interaction": _paired, "contrast": _paired, "layers": _layers, "dose": _dose,
    "severity": _severity, "drop_vs_acc": _drop_vs_acc, "options": _options, "association": _association,
    "auroc": _auroc, "stability": _stability, "architectures": _architectures,
}  # fmt: skip


def claim_figure(result: ClaimResult, directory: Path) -> Path | None:
    """Write ``claim_<id>_<data>.png`` for a tested claim; None when it has nothing to draw."""
    finding, claim = result.finding, result.claim
    if finding is None or finding.plot.empty or not claim.figure:
        return None
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    if finding.plot_kind == "runs":
        _runs(ax, finding.plot, threshold(claim.rule, claim.direction))
    elif finding.plot_kind in DRAWERS:
        DRAWERS[finding.plot_kind](ax, finding.plot)
    else:
        return None
    ax.grid(alpha=0.3)
    colour = VERDICT_COLOURS.get(result.verdict, "k")
    ax.set_title(
        f"{claim.id} [{result.data}]: {result.verdict}\n{claim.statement}",
        fontsize=8,
        color=colour,
        wrap=True,
    )
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"claim_{claim.id}_{result.data}")
    path = directory / f"{safe}.png"
    fig.savefig(path, dpi=DPI)
    return path
