"""analyze_sweep: read a sweep's run records and write tables, figures and a report."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import robustdiag
from robustdiag.analysis import figures as fig
from robustdiag.analysis.claims import ClaimData, ClaimSet, claims_table, evaluate_claims
from robustdiag.analysis.claims.figures import claim_figure
from robustdiag.analysis.columns import (
    attack_columns,
    diagnostic_columns,
    headline_diagnostics,
    target_columns,
    with_drop_columns,
)
from robustdiag.analysis.correlations import correlation_table, shift_drop_table
from robustdiag.analysis.corruption import Baseline, corruption_accuracy, corruption_errors, load_baseline
from robustdiag.analysis.options import DEFAULT_BOOTSTRAP, DEFAULT_OUT
from robustdiag.analysis.per_sample import load_per_sample, per_sample_auroc_table
from robustdiag.analysis.ranking import architecture_ranking, ranked_columns, ranking_agreement
from robustdiag.analysis.reader import (
    NoRunsError,
    Sweep,
    describe_empty,
    display_value,
    load_sweep,
)
from robustdiag.analysis.report import console_summary, render_report
from robustdiag.analysis.result import AnalysisResult
from robustdiag.analysis.separability import has_groups, noise_fractions, separability_table
from robustdiag.records import schema
from robustdiag.records.provenance import cpu_name, git_commit
from robustdiag.records.schema import PER_LAYER_FILE, PER_SAMPLE_FILE

WandbLogger = Callable[[AnalysisResult], str | None]  # logs a result, returns where the run went
PROVENANCE_KEYS = ("run/commit", "run/dirty", "record_version", "run/version", "run/device", "run/hardware")


def analyze_sweep(
    sweep_dir: Path,
    out_dir: Path | None = None,
    *,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    wandb_logger: WandbLogger | None = None,
    command: str | None = None,
    verbose: bool = False,
    claim_sets: Sequence[ClaimSet] | None = None,
    ce_baseline: str | Path | None = None,
) -> AnalysisResult:
    """Analyse every run record under ``sweep_dir`` and write the results to ``out_dir``.

    ``out_dir`` defaults to ``<sweep_dir>/analysis``. Broken, missing and unfinished grid points are
    reported in ``problems.csv`` and the report, never raised; NoRunsError is raised only when no
    complete record exists. ``wandb_logger`` (e.g. a partial of
    :func:`robustdiag.analysis.wandb_summary.log_summary`) runs after the local files are written; its
    failure only warns. ``verbose`` prints the console summary. ``claim_sets`` are the papers' claims
    to test (default: every file in the app's ``robustdiag/conf/claims/``). ``ce_baseline``: a run record or
    CSV of a baseline model's corruption errors, for CE / mCE / relative mCE (``corruption_errors.csv``).
    """
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0 (0 disables the intervals), got {n_bootstrap}")
    sweep_dir = Path(sweep_dir).resolve()
    out_dir = (Path(out_dir) if out_dir is not None else sweep_dir / DEFAULT_OUT).resolve()
    sweep = load_sweep(sweep_dir, exclude=out_dir)
    if sweep.complete.empty:
        raise NoRunsError(describe_empty(sweep))
    if claim_sets is None:
        claim_sets = default_claim_sets()
    baseline = load_baseline(ce_baseline) if ce_baseline is not None else None
    result = compute(
        sweep, out_dir, n_bootstrap=n_bootstrap, seed=seed, claim_sets=claim_sets, baseline=baseline
    )
    result.provenance = provenance(result.complete, command=command, n_bootstrap=n_bootstrap, seed=seed)
    write_outputs(result, tables_of(result))
    if wandb_logger is not None:
        result.wandb_run = _log_to_wandb(wandb_logger, result)
        if result.wandb_run:
            write_report(result)
    if verbose:
        print(console_summary(result))
    return result


def default_claim_sets() -> list[ClaimSet]:
    """The claims files shipped in the app's config directory (``robustdiag/conf/claims/*.yaml``)."""
    from robustdiag.analysis.claims import default_claim_files, load_claim_sets
    from robustdiag.config import CONFIG_DIR

    return load_claim_sets(default_claim_files(Path(CONFIG_DIR)))


def declared_keys(complete: pd.DataFrame, *role_keys: str) -> list[str]:
    """Union over runs of the keys they declare for the given roles (never guessed from column names)."""
    found: dict[str, None] = {}
    for _, run in complete.iterrows():
        record = {str(k): v for k, v in run.items()}
        for role in role_keys:
            found.update(dict.fromkeys(schema.declared(record, role)))
    return list(found)


def compute(
    sweep: Sweep,
    out_dir: Path,
    *,
    n_bootstrap: int,
    seed: int,
    claim_sets: Sequence[ClaimSet] = (),
    baseline: Baseline | None = None,
) -> AnalysisResult:
    """All statistics and figures of a loaded sweep (figures are written under ``out_dir/figures``)."""
    complete = with_drop_columns(sweep.complete)
    notes = list(sweep.notes)
    declared = declared_keys(complete, schema.DIAGNOSTICS_KEY, schema.BASELINES_KEY)
    diagnostics = diagnostic_columns(complete, declared)
    headline = headline_diagnostics(diagnostics)
    targets = target_columns(complete)
    if not diagnostics:
        notes.append("no diagnostic column (metric/<name>/<stat> with >= 3 finite, non-constant values)")
    if not targets:
        notes.append("no robustness target (attack/<name>/acc, shift/<name>/<severity>/acc, clean/test_acc)")
    correlations = correlation_table(complete, diagnostics, targets, n_boot=n_bootstrap, seed=seed)

    separability = pd.DataFrame()
    if has_groups(complete) or noise_fractions(complete).nunique() >= 3:
        separability = separability_table(complete, diagnostics, n_boot=n_bootstrap, seed=seed)
    else:
        notes.append(
            "separability skipped: needs memorising and generalising runs, or >= 3 label-noise levels"
        )

    per_sample = _read_tables(sweep, complete, PER_SAMPLE_FILE, load_per_sample)
    labels = complete[
        [c for c in ("run_dir", "model", "data", "regime", "q", "seed") if c in complete.columns]
    ]
    per_sample_auroc = per_sample_auroc_table(per_sample, labels, n_boot=n_bootstrap, seed=seed)
    if per_sample_auroc.empty:
        notes.append(
            "per-sample AUROC skipped: no per_sample.csv with metric/<name>/<column> and attack/<name>/robust"
        )

    shift_drop = shift_drop_table(complete, headline, n_boot=n_bootstrap, seed=seed)
    ranking = architecture_ranking(complete, headline)
    agreement = pd.DataFrame()
    if ranking.empty:
        notes.append("architecture ranking skipped: no regime has runs of two or more models")
    else:
        agreement = ranking_agreement(ranking, *ranked_columns(complete, headline))

    result = AnalysisResult(
        sweep_dir=sweep.root,
        out_dir=out_dir,
        runs=sweep.runs,
        complete=complete,
        problems=sweep.problems_frame(),
        counts=sweep.counts(),
        n_expected=sweep.n_expected,
        diagnostics=diagnostics,
        headline=headline,
        targets=targets,
        correlations=correlations,
        separability=separability,
        per_sample_auroc=per_sample_auroc,
        shift_drop=shift_drop,
        ranking=ranking,
        ranking_agreement=agreement,
        warnings=list(sweep.warnings),
        notes=notes,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    result.corruption_accuracy = corruption_accuracy(complete)
    if baseline is not None:
        result.corruption_errors, result.mce = corruption_errors(
            result.corruption_accuracy, complete, baseline
        )
        if result.mce.empty:
            notes.append(f"mCE skipped: no corruption of the runs is in the baseline {baseline.source}")
    result.figures = make_figures(sweep, result, per_sample)
    result.claim_results = run_claims(sweep, complete, claim_sets, n_bootstrap, seed, notes)
    result.claims = claims_table(result.claim_results)
    for claim_result in result.claim_results:
        path = claim_figure(claim_result, result.figures_dir)
        if path is not None:
            claim_result.figure = path
            result.figures[path.stem] = path
    return result


def run_claims(
    sweep: Sweep,
    complete: pd.DataFrame,
    claim_sets: Sequence[ClaimSet],
    n_bootstrap: int,
    seed: int,
    notes: list[str],
) -> list[Any]:
    """Every claim on each dataset of the sweep (mixed datasets are analysed separately)."""
    if not claim_sets or complete.empty:
        return []
    names = sorted(set(complete["data"].astype(str))) if "data" in complete.columns else ["unknown"]
    datasets = [ClaimData.from_runs(sweep.root, name, complete) for name in names]
    if len(datasets) > 1:
        notes.append(
            f"{len(datasets)} datasets in this sweep ({', '.join(names)}): claims are tested per dataset"
        )
    results = evaluate_claims(claim_sets, datasets, n_boot=n_bootstrap, seed=seed)
    for data in datasets:
        notes += [f"left out of the claims: {line}" for line in data.excluded]
        notes += [f"table not analysed: {line}" for line in data.problems]
    return results


def _read_tables(
    sweep: Sweep, complete: pd.DataFrame, name: str, reader: Callable[[Path], pd.DataFrame | None]
) -> dict[str, pd.DataFrame]:
    tables = {}
    for run_dir in complete["run_dir"]:
        table = reader(sweep.path(run_dir) / name)
        if table is not None:
            tables[str(run_dir)] = table
    return tables


def _read_per_layer(path: Path) -> pd.DataFrame | None:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    required = {"metric", "condition", "layer"}
    return table if required.issubset(table.columns) else None


def make_figures(
    sweep: Sweep, result: AnalysisResult, per_sample: dict[str, pd.DataFrame]
) -> dict[str, Path]:
    """Write every figure whose data exists; a note for each one skipped."""
    out, notes, complete = result.figures_dir, result.notes, result.complete
    regimes = (
        complete["regime"].astype(str)
        if "regime" in complete.columns
        else pd.Series("unknown", index=complete.index)
    )
    colours = fig.regime_colours(list(regimes))
    figures: dict[str, Path] = {}
    attacks = attack_columns(complete) if result.headline else []
    if not attacks:
        notes.append("scatter figure skipped: needs attack/<name>/acc and at least one diagnostic")
    for attack in attacks:
        name = f"scatter_{attack.split('/')[1]}"
        figures[name] = fig.scatter_figure(
            complete, result.headline, attack, result.correlations, out / f"{name}.png"
        )

    layers = _read_tables(sweep, complete, PER_LAYER_FILE, _read_per_layer)
    drawn = False
    if layers:
        stacked = pd.concat([t.assign(run_dir=run_dir) for run_dir, t in layers.items()], ignore_index=True)
        identity = complete[["run_dir"]].assign(regime=regimes.values, model=complete.get("model", "unknown"))
        stacked = stacked.merge(identity, on="run_dir", how="left")
        for model, group in stacked.groupby("model", sort=True):
            name = f"per_layer_{_file_safe(str(model))}"
            path = fig.per_layer_figure(group, str(model), colours, out / f"{name}.png")
            if path is not None:
                figures[name], drawn = path, True
    if not drawn:
        notes.append(
            "per-layer figure skipped: no per_layer.csv rows of path/activation separation on clean data"
        )

    path = fig.severity_figure(
        complete.assign(regime=regimes.values), colours, out / "separation_vs_severity.png"
    )
    if path is None:
        notes.append("severity figure skipped: no metric/<separation>/<shift>/<severity>/<stat> keys")
    else:
        figures["separation_vs_severity"] = path

    clean = (
        complete.set_index("run_dir")[schema.EVAL_CLEAN_ACC]
        if schema.EVAL_CLEAN_ACC in complete.columns
        else pd.Series(dtype=float)
    )
    path = fig.corruption_severity_figure(
        result.corruption_accuracy,
        clean,
        pd.Series(regimes.values, index=complete["run_dir"]),
        out / "corruption_severity.png",
    )
    if path is not None:
        figures["corruption_severity"] = path
    path = fig.diagnostic_family_figure(
        complete.assign(regime=regimes.values), result.headline, colours, out / "diagnostics_vs_severity.png"
    )
    if path is not None:
        figures["diagnostics_vs_severity"] = path

    path = fig.fisher_checks_figure(complete, out / "fisher_checks.png")
    if path is not None:
        figures["fisher_checks"] = path

    path = fig.lambda_figure(
        per_sample, complete.assign(regime=regimes.values), colours, out / "lambda_distributions.png"
    )
    if path is None:
        notes.append(f"λ figure skipped: no {fig.LAMBDA_COLUMN} column in per_sample.csv")
    else:
        figures["lambda_distributions"] = path
    return figures


def _file_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


TABLE_NAMES = (
    "claims",
    "runs",
    "problems",
    "correlations",
    "separability",
    "per_sample_auroc",
    "shift_drop_correlations",
    "ranking",
    "ranking_agreement",
    "corruption_accuracy",
    "corruption_errors",
    "mce",
)


def tables_of(result: AnalysisResult) -> dict[str, pd.DataFrame]:
    """The CSV files of an analysis (empty tables are not written, except runs and problems)."""
    tables = {
        "claims": result.claims,
        "runs": result.runs,
        "problems": result.problems,
        "correlations": result.correlations,
        "separability": result.separability,
        "per_sample_auroc": result.per_sample_auroc,
        "shift_drop_correlations": result.shift_drop,
        "ranking": result.ranking,
        "ranking_agreement": result.ranking_agreement,
        "corruption_accuracy": result.corruption_accuracy,
        "corruption_errors": result.corruption_errors,
        "mce": result.mce,
    }
    return {name: t for name, t in tables.items() if name in {"runs", "problems"} or not t.empty}


def write_outputs(result: AnalysisResult, tables: dict[str, pd.DataFrame]) -> None:
    """CSV tables, analysis.json and report.md under ``result.out_dir``.

    Outputs of an earlier analysis in the same directory that this one does not produce (a ranking
    table, a figure) are removed, so the directory never mixes two analyses.
    """
    result.out_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLE_NAMES:
        path = result.out_dir / f"{name}.csv"
        if name in tables:
            tables[name].to_csv(path, index=False)
            result.files[name] = path
        else:
            path.unlink(missing_ok=True)
    current = set(result.figures.values())
    for stale in result.figures_dir.glob("*.png"):
        if stale not in current:
            stale.unlink()
    result.files["analysis"] = result.out_dir / "analysis.json"
    result.files["report"] = result.report_path
    write_report(result)


def write_report(result: AnalysisResult) -> None:
    """(Re)write report.md and analysis.json (the machine-readable summary and provenance)."""
    summary = {
        "sweep_dir": str(result.sweep_dir),
        "counts": result.counts,
        "n_expected": result.n_expected,
        "diagnostics": result.diagnostics,
        "targets": [t.column for t in result.targets],
        "warnings": result.warnings,
        "notes": result.notes,
        "figures": {k: str(v) for k, v in result.figures.items()},
        "files": {k: str(v) for k, v in result.files.items()},
        "provenance": result.provenance,
        "wandb_run": result.wandb_run,
    }
    (result.out_dir / "analysis.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    result.report_path.write_text(render_report(result))


def _log_to_wandb(logger: WandbLogger, result: AnalysisResult) -> str | None:
    try:
        return logger(result)
    except Exception as err:  # W&B must never cost the local results
        warnings.warn(
            f"W&B summary logging failed ({type(err).__name__}: {err}); local files in {result.out_dir} are complete",
            stacklevel=3,
        )
        return None


def _value_counts(frame: pd.DataFrame, column: str) -> dict[str, int]:
    values = frame[column].map(display_value)
    return {str(k): int(n) for k, n in values.value_counts().items()}


def provenance(
    complete: pd.DataFrame, *, command: str | None, n_bootstrap: int, seed: int
) -> dict[str, object]:
    """Where the records came from (per-key value counts) and what ran the analysis."""
    records: dict[str, dict[str, int]] = {}
    for key in PROVENANCE_KEYS:
        columns = [c for c in complete.columns if c == key or c.startswith(key + "/")]
        for column in columns:
            records[column] = _value_counts(complete, column)
    analysis = {
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "robustdiag": robustdiag.__version__,
        "commit": _git_commit(),
        "python": platform.python_version(),
        "numpy / scipy / pandas": f"{np.__version__} / {_version('scipy')} / {pd.__version__}",
        "machine": f"{platform.platform()}; {cpu_name()}; {os.cpu_count()} cores",
        "bootstrap": f"{n_bootstrap} resamples, seed {seed}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return {"records": records, "analysis": analysis}


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except (ImportError, AttributeError):
        return "unknown"


def _git_commit() -> str:
    """Commit of the analysing code, with '-dirty' for local changes."""
    commit, dirty = git_commit()
    return commit + ("-dirty" if dirty else "")
