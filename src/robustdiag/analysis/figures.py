"""PNG figures of a sweep analysis (matplotlib, object API with the Agg canvas: no pyplot state).

Each function writes one figure and returns its path, or returns None with a note saying why the
figure was skipped (its data is absent from the records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from robustdiag.analysis.columns import parse_shifted_metric, short_name
from robustdiag.analysis.correlations import coefficient_cell, pooled

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
DPI = 120
SEPARATION_METRICS = ("path_separation", "activation_separation")
LAMBDA_COLUMN = "metric/fisher/lambda"


def regime_colours(regimes: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """A fixed colour per regime (tab10 in sorted order), the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(sorted(set(regimes)))}


def _markers(models: Sequence[str]) -> dict[str, str]:
    return {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(sorted(set(models)))}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _grid(
    n_panels: int, *, cols: int = 3, size: tuple[float, float] = (4.2, 3.4)
) -> tuple[Figure, list[Axes]]:
    cols = min(cols, n_panels)
    rows = int(np.ceil(n_panels / cols))
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _wants_log(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 1 and bool((finite > 0).all()) and finite.max() / finite.min() > 100


def _identity(runs: pd.DataFrame, column: str) -> pd.Series:
    return runs[column].astype(str) if column in runs.columns else pd.Series("unknown", index=runs.index)


def scatter_figure(
    runs: pd.DataFrame, diagnostics: Sequence[str], attack_column: str, correlations: pd.DataFrame, path: Path
) -> Path:
    """Each diagnostic against one robust accuracy: colour = regime, marker = architecture; rho in titles."""
    regimes, models = _identity(runs, "regime"), _identity(runs, "model")
    colours, markers = regime_colours(list(regimes)), _markers(list(models))
    index = pooled(correlations).set_index(["diagnostic", "target"])
    fig, axes = _grid(len(diagnostics))
    y = runs[attack_column].to_numpy(float)
    for ax, diagnostic in zip(axes, diagnostics):
        x = runs[diagnostic].to_numpy(float)
        for key, members in runs.groupby([regimes, models], sort=True).groups.items():
            regime, model = cast(tuple[str, str], key)
            rows = runs.index.get_indexer(members)
            ax.scatter(
                x[rows],
                y[rows],
                color=colours[regime],
                marker=markers[model],
                s=36,
                alpha=0.85,
                edgecolor="k",
                linewidth=0.4,
            )
        if _wants_log(x):
            ax.set_xscale("log")
        ax.set_xlabel(short_name(diagnostic))
        ax.set_ylabel(short_name(attack_column))
        if (diagnostic, attack_column) in index.index:
            ax.set_title(f"Spearman {coefficient_cell(index, diagnostic, attack_column)}", fontsize=9)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=r) for r, c in colours.items()]
    handles += [
        Line2D([], [], color="grey", marker=m, linestyle="", label=name) for name, m in markers.items()
    ]
    fig.legend(
        handles=handles, loc="outside right upper", fontsize=8, title="regime / model", title_fontsize=8
    )
    fig.suptitle(f"diagnostics vs {short_name(attack_column)} (95% bootstrap CI, n runs)")
    return _save(fig, path)


def _mean_sd_line(ax: Axes, x: np.ndarray, values: np.ndarray, colour: tuple[float, ...], label: str) -> None:
    """Mean over rows (runs) with a +-1 sd band; values: (runs, points)."""
    mean = np.nanmean(values, axis=0)
    sd = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    ax.plot(x, mean, color=colour, marker="o", markersize=3, label=f"{label} (n={values.shape[0]})")
    ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.2, linewidth=0)


def per_layer_figure(
    layers: pd.DataFrame, model: str, colours: Mapping[str, tuple[float, ...]], path: Path
) -> Path | None:
    """Separation excess per layer (clean data), path vs activation, mean +- sd over runs per regime.

    ``layers``: rows of per_layer.csv for one architecture with run_dir and regime columns added.
    """
    clean = layers[(layers["condition"].astype(str) == "clean") & layers["metric"].isin(SEPARATION_METRICS)]
    metrics = [m for m in SEPARATION_METRICS if (clean["metric"] == m).any()]
    if not metrics:
        return None
    fig, axes = _grid(len(metrics), cols=2, size=(5.5, 3.6))
    for ax, metric in zip(axes, metrics):
        rows = clean[clean["metric"] == metric]
        value = "excess" if "excess" in rows.columns and rows["excess"].notna().any() else "raw"
        order = list(dict.fromkeys(rows["layer"].astype(str)))  # first-appearance order = network order
        for regime, group in rows.groupby("regime", sort=True):
            wide = group.pivot_table(index="run_dir", columns="layer", values=value, aggfunc="mean")
            wide = wide.reindex(columns=[layer for layer in order if layer in wide.columns])
            positions = np.array([order.index(layer) for layer in wide.columns])
            _mean_sd_line(
                ax,
                positions,
                wide.to_numpy(float),
                colours.get(str(regime), (0.5, 0.5, 0.5, 1.0)),
                str(regime),
            )
        ax.set_title(f"{metric} ({value}), clean", fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylabel(value)
        if len(order) <= 30:
            ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=7)
        ax.axhline(0, color="k", linewidth=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{model}: separation per layer (mean ± sd over runs)")
    return _save(fig, path)


def severity_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table (run, metric, stat, shift, severity, value) of separation metrics, severity 0 = clean."""
    parts = []
    for column in runs.columns:
        parsed = parse_shifted_metric(column)
        if parsed is None or parsed[0] not in SEPARATION_METRICS:
            continue
        metric, shift, severity, stat = parsed
        try:
            level = float(severity)
        except ValueError:
            continue
        parts.append(
            pd.DataFrame(
                {
                    "run": runs.index,
                    "metric": metric,
                    "stat": stat,
                    "shift": shift,
                    "severity": level,
                    "value": runs[column].astype(float),
                }
            )
        )
    if not parts:
        return pd.DataFrame()
    shifted = pd.concat(parts, ignore_index=True)
    clean = []
    for key, _ in shifted.groupby(["metric", "stat"]):
        metric, stat = cast(tuple[str, str], key)
        column = f"metric/{metric}/{stat}"
        if column in runs.columns:
            for shift in shifted.loc[
                (shifted["metric"] == metric) & (shifted["stat"] == stat), "shift"
            ].unique():
                clean.append(
                    pd.DataFrame(
                        {
                            "run": runs.index,
                            "metric": metric,
                            "stat": stat,
                            "shift": shift,
                            "severity": 0.0,
                            "value": runs[column].astype(float),
                        }
                    )
                )
    return pd.concat([shifted, *clean], ignore_index=True)


def severity_figure(runs: pd.DataFrame, colours: Mapping[str, tuple[float, ...]], path: Path) -> Path | None:
    """Separation (excess) against shift severity, one panel per metric x shift, lines per regime."""
    long = severity_frame(runs)
    if long.empty:
        return None
    stat = "excess" if (long["stat"] == "excess").any() else str(long["stat"].iloc[0])
    long = long[long["stat"] == stat]
    panels = sorted({(m, s) for m, s in zip(long["metric"], long["shift"])})
    fig, axes = _grid(len(panels), cols=min(4, len(panels)), size=(3.8, 3.2))
    regimes = _identity(runs, "regime")
    for ax, (metric, shift) in zip(axes, panels):
        data = long[(long["metric"] == metric) & (long["shift"] == shift)]
        for regime in sorted(regimes.unique()):
            members = data[data["run"].isin(runs.index[regimes == regime])]
            if members.empty:
                continue
            wide = members.pivot_table(index="run", columns="severity", values="value", aggfunc="mean")
            _mean_sd_line(ax, wide.columns.to_numpy(float), wide.to_numpy(float), colours[regime], regime)
        ax.set_title(f"{metric}\n{shift}", fontsize=9)
        ax.set_xlabel("severity (0 = clean)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(stat)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"separation ({stat}) vs shift severity (mean ± sd over runs)")
    return _save(fig, path)


def lambda_figure(
    tables: Mapping[str, pd.DataFrame],
    runs: pd.DataFrame,
    colours: Mapping[str, tuple[float, ...]],
    path: Path,
) -> Path | None:
    """Distributions of per-sample log10 lambda: pooled per regime (left) and per run (right)."""
    labelled = runs.set_index("run_dir")
    per_run: list[tuple[str, str, np.ndarray]] = []
    for run_dir, table in tables.items():
        if LAMBDA_COLUMN not in table.columns or run_dir not in labelled.index:
            continue
        values = pd.to_numeric(table[LAMBDA_COLUMN], errors="coerce").to_numpy(float)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            row = labelled.loc[run_dir]
            label = f"{row.get('model', '?')} s{_seed_text(row.get('seed'))} ({run_dir})"
            per_run.append((str(row.get("regime", "unknown")), label, np.log10(values)))
    if not per_run:
        return None
    per_run.sort(key=lambda item: (item[0], item[1]))
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 2])
    for regime in sorted({r for r, _, _ in per_run}):
        pooled = np.concatenate([v for r, _, v in per_run if r == regime])
        left.hist(
            pooled,
            bins=40,
            density=True,
            histtype="step",
            linewidth=1.5,
            color=colours.get(regime),
            label=f"{regime} ({pooled.size} samples)",
        )
    left.set_xlabel("log10 λ(x)")
    left.set_ylabel("density")
    left.legend(fontsize=8)
    left.set_title("pooled per regime", fontsize=10)
    boxes = right.boxplot(
        [v for _, _, v in per_run], patch_artist=True, showfliers=False, medianprops={"color": "black"}
    )
    for patch, (regime, _, _) in zip(boxes["boxes"], per_run):
        patch.set_facecolor(colours.get(regime))
        patch.set_alpha(0.6)
    if len(per_run) <= 30:
        right.set_xticks(
            range(1, len(per_run) + 1), [label for _, label, _ in per_run], rotation=90, fontsize=6
        )
    right.set_ylabel("log10 λ(x)")
    right.set_title("per run (box: quartiles, whiskers 1.5 IQR)", fontsize=10)
    fig.suptitle("input-Fisher λ(x) per evaluation sample")
    return _save(fig, path)


def _seed_text(seed: object) -> str:
    try:
        return str(int(float(seed)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"


CHECKS = "metric/fisher_checks/"


def fisher_checks_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """Paper 2's checks: the local-KL relative error against ε (random and top-eigenvector δ), and each
    λ estimator's median ratio to the exact λ_max, one point per run. None without fisher_checks keys."""
    kl = sorted(
        {
            (c.split("_e")[1].split("_")[0], c)
            for c in runs.columns
            if c.startswith(CHECKS + "kl_random_e") and c.endswith("_rel_err_median")
        },
        key=lambda item: float(item[0].replace("p", ".")),
    )
    ratios = [c for c in runs.columns if c.startswith(CHECKS + "fidelity_") and c.endswith("_ratio_median")]
    if not kl and not ratios:
        return None
    fig, axes = _grid(2, cols=2, size=(5.2, 3.8))
    eps = np.array([float(tag.replace("p", ".")) for tag, _ in kl])  # in 1/255 units
    for direction, colour in (("random", "tab:blue"), ("top", "tab:red")):
        columns = [c.replace("kl_random_", f"kl_{direction}_") for _, c in kl]
        present = [c for c in columns if c in runs.columns]
        if not present:
            continue
        values = runs[present].to_numpy(float)  # (runs, eps)
        for row in values:
            axes[0].plot(eps[: len(present)], row, color=colour, alpha=0.25, linewidth=0.8)
        axes[0].plot(
            eps[: len(present)],
            np.nanmedian(values, axis=0),
            color=colour,
            marker="o",
            linewidth=2,
            label=f"δ {direction}",
        )
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("ε (× 1/255, L∞)")
    axes[0].set_ylabel("|KL − ½δᵀFδ| / KL (median over samples)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    names = [c.removeprefix(CHECKS + "fidelity_").removesuffix("_ratio_median") for c in ratios]
    for i, column in enumerate(ratios):
        ratio = runs[column].to_numpy(float)
        axes[1].scatter(np.full(ratio.size, i), ratio, s=14, alpha=0.7)
    axes[1].axhline(1.0, color="0.4", linewidth=0.8)
    axes[1].set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("estimate / exact λ_max (median over samples)")
    axes[1].grid(alpha=0.3)
    fig.suptitle("paper 2 checks: local KL approximation and estimator fidelity (one point per run)")
    return _save(fig, path)


FAMILY_ORDER = ("noise", "blur", "weather", "digital", "other")
LINESTYLES = ("-", "--", ":", "-.")


def corruption_severity_figure(
    accuracy: pd.DataFrame, clean: pd.Series, regimes: pd.Series, path: Path
) -> Path | None:
    """Accuracy against severity (0 = clean), one panel per corruption family, a line per corruption (mean
    over runs), one line style per regime. ``accuracy``: :func:`robustdiag.analysis.corruption.corruption_accuracy`;
    ``clean``/``regimes``: per run_dir."""
    if accuracy.empty:
        return None
    data = accuracy.assign(regime=accuracy["run_dir"].map(regimes).fillna("unknown").astype(str))
    families = [f for f in FAMILY_ORDER if f in set(data["family"])]
    regime_names = sorted(data["regime"].unique())
    fig, axes = _grid(len(families), cols=min(4, len(families)), size=(4.2, 3.4))
    for ax, fam in zip(axes, families):
        members = data[data["family"] == fam]
        names = list(dict.fromkeys(members["corruption"]))
        colour_map = _corruption_colours(names)
        for r_i, regime in enumerate(regime_names):
            for name in names:
                rows = members[(members["corruption"] == name) & (members["regime"] == regime)]
                if rows.empty:
                    continue
                runs = rows["run_dir"].unique()
                base = float(np.nanmean([clean.get(run, np.nan) for run in runs]))
                means = rows.groupby("severity")["acc"].mean()
                x = np.concatenate([[0.0], means.index.to_numpy(float)])
                y = np.concatenate([[base], means.to_numpy(float)])
                ax.plot(x, y, LINESTYLES[r_i % len(LINESTYLES)], marker="o", ms=3, color=colour_map[name],
                        label=name if r_i == 0 else None)  # fmt: skip
        ax.set_title(fam)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("accuracy (mean over runs)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    styles = ", ".join(f"{LINESTYLES[i % len(LINESTYLES)]!r} {r}" for i, r in enumerate(regime_names))
    fig.suptitle(f"accuracy vs corruption severity by family (line style: {styles})")
    return _save(fig, path)


def _corruption_colours(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: tuple(cmap(i % 10)) for i, name in enumerate(names)}


def diagnostic_family_figure(
    runs: pd.DataFrame, diagnostics: Sequence[str], colours: Mapping[str, tuple[float, ...]], path: Path
) -> Path | None:
    """Each diagnostic (that is measured under shift) against severity, one row per diagnostic and one panel
    per corruption family (mean over the family's corruptions, then mean ± sd over runs, per regime)."""
    from robustdiag.shifts.suites import family

    regimes = _identity(runs, "regime")
    panels: list[tuple[str, str, pd.DataFrame]] = []
    for diagnostic in diagnostics:
        parts = diagnostic.split("/")
        if len(parts) != 3:
            continue
        _, metric, stat = parts
        long = []
        for column in runs.columns:
            parsed = parse_shifted_metric(column)
            if parsed is None or parsed[0] != metric or parsed[3] != stat or not parsed[2].isdigit():
                continue
            long.append(pd.DataFrame({"run": runs.index, "family": family(parsed[1]), "severity": float(parsed[2]),
                                      "value": pd.to_numeric(runs[column], errors="coerce")}))  # fmt: skip
        if not long:
            continue
        frame = pd.concat(long, ignore_index=True)
        for fam in [f for f in FAMILY_ORDER if f in set(frame["family"])]:
            panels.append((diagnostic, fam, frame[frame["family"] == fam]))
    if not panels:
        return None
    fig, axes = _grid(len(panels), cols=min(4, len(panels)), size=(3.8, 3.2))
    for ax, (diagnostic, fam, frame) in zip(axes, panels):
        clean = pd.to_numeric(runs[diagnostic], errors="coerce") if diagnostic in runs.columns else None
        for regime in sorted(regimes.unique()):
            members = frame[frame["run"].isin(runs.index[regimes == regime])]
            if members.empty:
                continue
            wide = members.pivot_table(index="run", columns="severity", values="value", aggfunc="mean")
            if clean is not None:
                wide.insert(0, 0.0, clean.loc[wide.index].to_numpy(float))
            _mean_sd_line(ax, wide.columns.to_numpy(float), wide.to_numpy(float), colours[regime], regime)
        ax.set_title(f"{short_name(diagnostic)}\n{fam}", fontsize=9)
        ax.set_xlabel("severity (0 = clean)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "diagnostics vs corruption severity by family (mean over the family's corruptions; ± sd over runs)"
    )
    return _save(fig, path)
