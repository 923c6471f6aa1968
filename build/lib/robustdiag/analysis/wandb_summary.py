"""One W&B run per sweep analysis: the tables, scatter plots and figures of an AnalysisResult.

Mode: ``offline`` unless W&B credentials are configured (``WANDB_API_KEY`` or a ``wandb login`` netrc
entry; only their presence is checked, keys are never read into logs or files) or a mode is forced by
the argument or ``WANDB_MODE``. The local analysis files are written before this runs, a failure here
only warns, and the run is always finished.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from robustdiag.analysis.columns import MEAN_CORRUPTION, attack_columns, main_targets, short_name
from robustdiag.analysis.correlations import pooled
from robustdiag.analysis.options import DEFAULT_PROJECT
from robustdiag.analysis.result import AnalysisResult
from robustdiag.records.wandb_logger import resolve_mode

RUN_COLUMNS = ("run_dir", "model", "data", "regime", "labels", "q", "seed")


def to_table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy W&B can serialise: NaN as None, non-scalar objects as strings."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            out[column] = values.astype(object).where(values.notna(), None)
        else:
            out[column] = values.map(
                lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            )
    return out


def panel_key(column: str) -> str:
    """A column as one W&B key segment ('metric/fisher/mean' -> 'fisher.mean'): slashes make sections."""
    return short_name(column).replace("/", ".")


def summary_values(result: AnalysisResult) -> dict[str, float | int | str]:
    """Flat summary: grid-point counts and the headline correlations with their intervals and n."""
    summary: dict[str, float | int | str] = {f"runs/{k}": int(v) for k, v in result.counts.items()}
    summary["analysis/diagnostics"] = len(result.diagnostics)
    summary["analysis/targets"] = len(result.targets)
    targets = {t.column for t in main_targets(result.targets)}
    table = pooled(result.correlations)
    rows = table[table["diagnostic"].isin(result.headline) & table["target"].isin(targets)]
    for _, row in rows.iterrows():
        key = f"{panel_key(row['diagnostic'])}~{panel_key(row['target'])}"
        for stat in ("spearman", "spearman_ci_low", "spearman_ci_high", "kendall", "pearson", "n"):
            value = float(row[stat])
            if np.isfinite(value):
                summary[f"corr/{key}/{stat}"] = value
    for _, row in result.separability.iterrows() if not result.separability.empty else []:
        if np.isfinite(row["auroc"]):
            summary[f"separability/{panel_key(row['diagnostic'])}/auroc"] = float(row["auroc"])
    for _, row in result.claims.iterrows() if not result.claims.empty else []:
        summary[f"claims/{row['paper']}/{row['claim']}/{row['data']}"] = str(row["verdict"])
    return summary


def _scatter_plots(wandb: object, result: AnalysisResult) -> dict[str, object]:
    """wandb.plot.scatter of each declared diagnostic (and baseline) against each robustness measure:
    robust accuracy per attack and the mean corruption accuracy. Nothing else (no counts or timings)."""
    complete = result.complete
    plots: dict[str, object] = {}
    measures = attack_columns(complete) + [c for c in (MEAN_CORRUPTION,) if c in complete.columns]
    for attack in measures:
        for diagnostic in result.diagnostics:
            columns = [c for c in RUN_COLUMNS if c in complete.columns] + [diagnostic, attack]
            frame = to_table_frame(complete[columns].dropna(subset=[diagnostic, attack]))
            frame.columns = [panel_key(c) for c in frame.columns]
            table = wandb.Table(dataframe=frame)  # type: ignore[attr-defined]
            x, y = panel_key(diagnostic), panel_key(attack)
            plots[f"scatter/{x}~{y}"] = wandb.plot.scatter(table, x, y, title=f"{x} vs {y}")  # type: ignore[attr-defined]
    return plots


def _tables(wandb: object, result: AnalysisResult) -> dict[str, object]:
    frames = {
        "tables/claims": result.claims,
        "tables/correlations": result.correlations,
        "tables/separability": result.separability,
        "tables/per_sample_auroc": result.per_sample_auroc,
        "tables/shift_drop_correlations": result.shift_drop,
        "tables/ranking": result.ranking,
        "tables/ranking_agreement": result.ranking_agreement,
        "tables/problems": result.problems,
    }
    return {k: wandb.Table(dataframe=to_table_frame(v)) for k, v in frames.items() if not v.empty}  # type: ignore[attr-defined]


def log_summary(
    result: AnalysisResult,
    project: str = DEFAULT_PROJECT,
    group: str | None = None,
    mode: str | None = None,
    dir: Path | None = None,  # noqa: A002 - the name W&B uses
    *,
    entity: str | None = None,
    name: str | None = None,
) -> str | None:
    """Log one analysis run (job_type 'analysis', group = sweep name) and return its directory.

    Returns None (after a warning) when W&B is unavailable or fails; never raises for W&B errors.
    """
    try:
        import wandb
    except ImportError as err:
        warnings.warn(f"wandb is not installed ({err}); no W&B summary run", stacklevel=2)
        return None
    mode = resolve_mode(mode, key="mode")
    run_dir = Path(dir) if dir is not None else result.out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    run = None
    try:
        run = wandb.init(
            project=project,
            entity=entity,
            group=group or result.sweep_name,
            job_type="analysis",
            name=name or f"analysis-{group or result.sweep_name}",
            dir=str(run_dir),
            mode=mode,
            config={
                "sweep_dir": str(result.sweep_dir),
                "n_bootstrap": result.n_bootstrap,
                "seed": result.seed,
            },
            settings=wandb.Settings(silent=True),  # the analysis prints its own summary and the run path
        )
        run.log({**_tables(wandb, result), **_scatter_plots(wandb, result)})
        run.log({f"figures/{k}": wandb.Image(str(p)) for k, p in result.figures.items()})
        run.summary.update(summary_values(result))
        return str(Path(run.dir).parent) if mode != "online" else str(run.url or run.dir)
    except Exception as err:  # a W&B failure must never cost the local analysis
        warnings.warn(
            f"W&B summary run failed ({type(err).__name__}: {err}); the local files in {result.out_dir} are complete",
            stacklevel=2,
        )
        return None
    finally:
        if run is not None:
            try:
                run.finish()
            except Exception as err:
                warnings.warn(f"W&B run.finish() failed ({type(err).__name__}: {err})", stacklevel=2)
