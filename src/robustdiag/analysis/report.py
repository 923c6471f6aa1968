"""The human-readable outputs: report.md and the compact console summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from robustdiag.analysis.columns import main_targets, short_name
from robustdiag.analysis.correlations import format_coefficient, pooled, spearman_matrix
from robustdiag.analysis.reader import PROBLEM_KINDS
from robustdiag.analysis.result import AnalysisResult

MAX_PROBLEM_ROWS = 50


def _cell(value: object, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return "n/a"
        if float(value).is_integer() and abs(float(value)) < 1e15:
            return str(int(value))
        return f"{float(value):.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (no external dependency)."""
    if index:
        frame = frame.reset_index()
    header = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _interval(row: pd.Series, name: str) -> str:
    return format_coefficient(row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"], row["n"]).rsplit(
        " n=", 1
    )[0]


def correlation_markdown(result: AnalysisResult) -> str:
    """Headline diagnostics x main targets, three coefficients with intervals."""
    targets = [t.column for t in main_targets(result.targets)]
    table = result.correlations
    table = table[table["diagnostic"].isin(result.headline) & table["target"].isin(targets)]
    within = (
        table[table["scope"].astype(str).str.startswith("within regime")]
        if "scope" in table
        else table.iloc[:0]
    )
    table = pooled(table)
    if table.empty:
        return "_No diagnostic x adversarial/mean-corruption pair in these records._"
    rows = pd.DataFrame(
        {
            "diagnostic": [short_name(d) for d in table["diagnostic"]],
            "target": [short_name(t) for t in table["target"]],
            "n": table["n"].astype(int),
            "Spearman ρ [95% CI]": [_interval(r, "spearman") for _, r in table.iterrows()],
            "Pearson r [95% CI]": [_interval(r, "pearson") for _, r in table.iterrows()],
            "Kendall τ [95% CI]": [_interval(r, "kendall") for _, r in table.iterrows()],
            "Spearman p": table["spearman_p"],
        }
    )
    text = markdown_table(rows)
    if len(within):
        rows = pd.DataFrame(
            {
                "diagnostic": [short_name(d) for d in within["diagnostic"]],
                "target": [short_name(t) for t in within["target"]],
                "scope": within["scope"],
                "n": within["n"].astype(int),
                "Spearman ρ [95% CI]": [_interval(r, "spearman") for _, r in within.iterrows()],
                "p (Holm over the table)": within["spearman_p_holm"],
            }
        )
        text += (
            "\n\nWithin each regime, and rank partial correlations given the architecture × regime cell and "
            "clean accuracy (p: diagnostic permuted within cells), i.e. with the design held fixed:\n\n"
            + markdown_table(rows)
        )
    return text


def _mean_sd(mean: float, sd: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4g} ± {sd:.2g}" if np.isfinite(sd) else f"{mean:.4g}"


def _ci(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]" if np.isfinite(low) else f"{value:.2f}"


def separability_markdown(table: pd.DataFrame) -> str:
    """Per diagnostic: group sizes and means, AUROC, Hedges' g, dose-response."""
    rows = pd.DataFrame(
        {
            "diagnostic": [short_name(d) for d in table["diagnostic"]],
            "n gen / mem": [f"{a} / {b}" for a, b in zip(table["n_generalise"], table["n_memorise"])],
            "generalise": [_mean_sd(m, s) for m, s in zip(table["mean_generalise"], table["sd_generalise"])],
            "memorise": [_mean_sd(m, s) for m, s in zip(table["mean_memorise"], table["sd_memorise"])],
            "AUROC [95% CI]": [
                _ci(*v) for v in zip(table["auroc"], table["auroc_ci_low"], table["auroc_ci_high"])
            ],
            "Hedges g [95% CI]": [
                _ci(*v) for v in zip(table["hedges_g"], table["hedges_g_ci_low"], table["hedges_g_ci_high"])
            ],
            "dose ρ vs q [95% CI] (n)": [
                f"{_ci(r, lo, hi)} ({n})" if n else "n/a"
                for r, lo, hi, n in zip(
                    table["dose_spearman"], table["dose_ci_low"], table["dose_ci_high"], table["dose_n"]
                )
            ],
        }
    )
    return markdown_table(rows)


def per_sample_markdown(table: pd.DataFrame) -> str:
    """Pooled AUROCs plus the spread of per-run AUROCs, per (score, attack)."""
    rows = []
    for (score, attack), group in table.groupby(["score", "attack"], sort=True):
        runs = group[group["scope"] == "run"]
        row = {
            "score": short_name(str(score)),
            "attack": attack,
            "runs": len(runs),
            "per-run AUROC median [min, max]": (
                f"{runs['auroc'].median():.2f} [{runs['auroc'].min():.2f}, {runs['auroc'].max():.2f}]"
                if runs["auroc"].notna().any()
                else "n/a"
            ),
        }
        for scope in ("pooled", "pooled_rank"):
            pooled = group[group["scope"] == scope]
            row[scope] = (
                _ci(*pooled.iloc[0][["auroc", "auroc_ci_low", "auroc_ci_high"]])
                + f" (n={int(pooled.iloc[0]['n'])})"
                if len(pooled)
                else "n/a"
            )
        rows.append(row)
    return markdown_table(pd.DataFrame(rows))


def shift_drop_markdown(table: pd.DataFrame) -> str:
    """Pooled diagnostic-drop vs accuracy-drop correlations, plus how many runs show a positive one."""
    rows = []
    for diagnostic, group in table.groupby("diagnostic", sort=False):
        runs = group[group["scope"] == "run"]
        pooled = group[group["scope"] == "pooled"].iloc[0]
        rows.append(
            {
                "diagnostic": short_name(str(diagnostic)),
                "pooled Spearman [95% CI]": _ci(
                    pooled["spearman"], pooled["spearman_ci_low"], pooled["spearman_ci_high"]
                ),
                "n (run × condition)": int(pooled["n"]),
                "runs with ρ > 0": f"{int((runs['spearman'] > 0).sum())} / {int(runs['spearman'].notna().sum())}",
            }
        )
    return markdown_table(pd.DataFrame(rows))


def ranking_markdown(ranking: pd.DataFrame, columns: Sequence[str]) -> str:
    """Seed-mean values with their rank (1 = highest) per architecture."""
    rows = []
    for _, row in ranking.iterrows():
        out = {"regime": row["regime"], "model": row["model"], "runs": int(row["n_runs"])}
        for column in columns:
            value, rank = row.get(column, np.nan), row.get(f"rank/{column}", np.nan)
            out[short_name(column)] = f"{value:.4g} (#{int(rank)})" if np.isfinite(value) else "n/a"
        rows.append(out)
    return markdown_table(pd.DataFrame(rows))


def agreement_markdown(agreement: pd.DataFrame) -> str:
    """Kendall tau (p) per (regime, diagnostic) row and accuracy column."""
    cells = agreement.assign(
        cell=[
            f"{tau:+.2f} (p={p:.2g})" if np.isfinite(tau) else "n/a"
            for tau, p in zip(agreement["kendall_tau"], agreement["kendall_p"])
        ],
        diagnostic=[short_name(d) for d in agreement["diagnostic"]],
        target=[short_name(t) for t in agreement["target"]],
    )
    wide = cells.pivot_table(
        index=["regime", "diagnostic", "n_models"],
        columns="target",
        values="cell",
        aggfunc="first",
        sort=False,
    )
    wide.columns.name = None
    return markdown_table(wide.rename_axis(index={"n_models": "models"}), index=True)


def found_lines(result: AnalysisResult) -> list[str]:
    """One bullet per state of the grid points."""
    complete = result.complete
    lines = [f"- **{result.counts['complete']} complete runs analysed**" + _identity_summary(complete)]
    for kind, text in PROBLEM_KINDS.items():
        if result.counts.get(kind):
            lines.append(f"- {result.counts[kind]} {kind}: {text}")
    if result.n_expected is not None:
        lines.append(f"- grid declared by multirun.yaml: {result.n_expected} points")
    return lines


def _identity_summary(complete: pd.DataFrame) -> str:
    parts = []
    for column in ("model", "data", "regime", "q", "seed"):
        if column in complete.columns:
            values = sorted(
                {_cell(v) for v in complete[column] if not (isinstance(v, float) and np.isnan(v))}
            )
            if values:
                parts.append(f"{column}: {', '.join(values[:12])}{' …' if len(values) > 12 else ''}")
    return " (" + "; ".join(parts) + ")" if parts else ""


def provenance_lines(result: AnalysisResult) -> list[str]:
    lines = []
    records = result.provenance.get("records", {})
    assert isinstance(records, dict)
    for key, counts in records.items():
        shown = ", ".join(f"`{value}` ({n})" for value, n in counts.items())
        lines.append(f"- records `{key}`: {shown}")
    analysis = result.provenance.get("analysis", {})
    assert isinstance(analysis, dict)
    for key, value in analysis.items():
        lines.append(f"- analysis {key}: `{value}`")
    return lines


VERDICT_MARK = {"holds": "✅ holds", "fails": "❌ fails", "inconclusive": "❔ inconclusive"}


def _effect_cell(row: pd.Series) -> str:
    if not np.isfinite(row["effect"]):
        return ""
    low, high = row["ci_low"], row["ci_high"]
    interval = f" [{_cell(low)}, {_cell(high)}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{_cell(row['effect'])}{interval}"


def claims_markdown(claims: pd.DataFrame) -> list[str]:
    """The paper-vs-ours table: one row per claim and dataset, with its verdict and why."""
    lines: list[str] = []
    for paper, table in claims.groupby("paper", sort=False):
        rows = pd.DataFrame(
            {
                "claim": table["claim"],
                "data": table["data"],
                "the paper says": table["paper_says"],
                "we find": [r["found"] or "—" for _, r in table.iterrows()],
                "effect [95% CI]": [_effect_cell(r) for _, r in table.iterrows()],
                "n (unit)": [
                    f"{int(n)} ({u})" if n else f"— ({u})" for n, u in zip(table["n"], table["unit"])
                ],
                "p (Holm)": [_cell(p) if np.isfinite(p) else "—" for p in table["p_holm"]],
                "verdict": [
                    VERDICT_MARK.get(v, v) + (f": {r}" if r else "")
                    for v, r in zip(table["verdict"], table["reason"])
                ],
            }
        )
        counts = table["verdict"].value_counts()
        summary = ", ".join(
            f"{int(counts[v])} {v}"
            for v in ("holds", "fails", "inconclusive", "not testable here")
            if v in counts
        )
        lines += [f"### {paper} ({summary})", "", markdown_table(rows), ""]
    return lines


def render_report(result: AnalysisResult) -> str:
    """The whole report.md."""
    out = [
        f"# Sweep analysis: {result.sweep_name}",
        "",
        f"Sweep directory `{result.sweep_dir}`; every number below is in the CSV files beside this report.",
    ]
    if not result.claims.empty:
        out += [
            "",
            "## Claims",
            "",
            "Each claim of the papers (`robustdiag/conf/claims/*.yaml`) with the test, unit and decision rule declared "
            "there before the data: **holds** when the Holm-adjusted p (within each paper) is below α and the "
            "whole 95% interval lies beyond the threshold in the claimed direction; **fails** when the whole "
            "interval lies on the other side; **inconclusive** otherwise; **not testable here** when the sweep "
            "lacks what the claim needs (the reason is given). Intervals resample what was randomised (seeds "
            "within architecture × regime cells, or whole runs); p-values permute within the design. "
            f"Bootstrap: {result.n_bootstrap} resamples, seed {result.seed}. Every row is in `claims.csv`; "
            "each tested claim has a figure `figures/claim_<id>_<data>.png`.",
            "",
            *claims_markdown(result.claims),
        ]
    out += [
        "## What was found",
        "",
        *found_lines(result),
    ]
    if result.warnings:
        out += ["", "## Warnings", "", *[f"- ⚠ {w}" for w in result.warnings]]
    out += [
        "",
        "## Correlations across runs (exploratory)",
        "",
        "Pooled across regimes these mostly measure the design (memorising runs sit at chance accuracy); "
        "the claims above test the diagnostics beyond it. "
        f"Diagnostics on clean data against robust accuracy per attack and mean corruption accuracy. "
        f"95% percentile bootstrap intervals resampling seeds within architecture × regime cells "
        f"({result.n_bootstrap} resamples, seed {result.seed}); "
        "n = runs with both values (pairs with a missing value are dropped). "
        f"`correlations.csv` has all {len(result.correlations)} pairs: {len(result.diagnostics)} diagnostics × "
        f"{len(result.targets)} targets (each shift and severity, clean accuracy, and accuracy drops "
        "clean − adversarial / clean − shifted).",
        "",
        correlation_markdown(result) if not result.correlations.empty else "_No diagnostics or no targets._",
    ]
    if not result.separability.empty:
        out += [
            "",
            "## Memorising vs generalising",
            "",
            "AUROC = P(diagnostic of a generalising run > that of a memorising run); 0.5 = no separation. "
            "Hedges' g = (generalise − memorise) / pooled sd. Dose-response: Spearman of the diagnostic with "
            "the fraction of random labels. `separability.csv` has every diagnostic.",
            "",
            separability_markdown(
                result.separability[result.separability["diagnostic"].isin(result.headline)]
            ),
        ]
    if not result.per_sample_auroc.empty:
        out += [
            "",
            "## Per-sample AUROC for being fooled",
            "",
            "Among samples classified correctly on clean data: AUROC of the per-sample score for "
            '"fooled by the attack" (> 0.5: high score flags vulnerable inputs). `pooled` uses raw '
            "scores over all runs, `pooled_rank` within-run percentiles; their intervals resample runs. "
            "Per-run rows are in `per_sample_auroc.csv`.",
            "",
            per_sample_markdown(result.per_sample_auroc),
        ]
    if not result.shift_drop.empty:
        out += [
            "",
            "## Does a diagnostic drop where accuracy drops under shift?",
            "",
            "Correlation of (clean − shifted) diagnostic with (clean − shifted) accuracy over the shift × "
            "severity conditions; per run in `shift_drop_correlations.csv`.",
            "",
            shift_drop_markdown(result.shift_drop),
        ]
    if not result.ranking.empty:
        shown = [c for c in result.headline if c in result.ranking.columns]
        shown += [
            c
            for c in result.ranking.columns
            if c.startswith(("clean/", "shift/", "attack/")) and not c.endswith("/sd")
        ]
        out += [
            "",
            "## Architecture ranking",
            "",
            "Seed means per architecture within each regime, with rank (#1 = highest value). Agreement: "
            "Kendall τ across architectures between a diagnostic and an accuracy (−1: the diagnostic "
            "orders architectures exactly opposite to the accuracy, as a vulnerability score should).",
            "",
            ranking_markdown(result.ranking, shown),
        ]
        if not result.ranking_agreement.empty:
            out += ["", agreement_markdown(result.ranking_agreement)]
    if not result.mce.empty:
        cols = [
            c
            for c in (
                "model",
                "regime",
                "set",
                "severities",
                "n_corruptions",
                "mce",
                "relative_mce",
                "mean_error",
            )
            if c in result.mce.columns
        ]
        grouped = result.mce.groupby(
            [c for c in ("model", "regime", "set", "severities") if c in cols], sort=True
        )
        summary = grouped.agg(runs=("mce", "size"), mce=("mce", "mean"), relative_mce=("relative_mce", "mean"),
                              mean_error=("mean_error", "mean")).reset_index()  # fmt: skip
        out += [
            "",
            "## Corruption errors (mCE)",
            "",
            f"Baseline: `{result.mce['baseline'].iloc[0]}`. CE_c = Σ_s E_(s,c) / Σ_s E^base_(s,c); relative CE "
            "uses the errors above each model's clean error; mCE and relative mCE average over the set named "
            "(standard15 = the benchmark's headline set), summing the severities both have. Errors are on the "
            "evaluation samples; means over runs (seeds), per-run values in mce.csv and corruption_errors.csv.",
            "",
            markdown_table(summary),
        ]
    out += ["", "## Figures", ""]
    out += [f"![{name}](figures/{path.name})" for name, path in result.figures.items()] or ["_No figures._"]
    if result.notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in result.notes]]
    out += ["", "## Problems", ""]
    if result.problems.empty:
        out.append("None: every job directory has a complete record.")
    else:
        out.append(markdown_table(result.problems.head(MAX_PROBLEM_ROWS)))
        if len(result.problems) > MAX_PROBLEM_ROWS:
            out.append(f"\n… {len(result.problems) - MAX_PROBLEM_ROWS} more in `problems.csv`.")
    out += ["", "## Provenance", "", *provenance_lines(result)]
    if result.wandb_run:
        out.append(f"- W&B summary run: `{result.wandb_run}`")
    out += ["", "Files: " + ", ".join(f"`{p.name}`" for p in result.files.values()), ""]
    return "\n".join(out)


def console_summary(result: AnalysisResult) -> str:
    """What the command prints: counts, a compact Spearman table, and where the report and figures are."""
    counts = ", ".join(f"{n} {k}" for k, n in result.counts.items() if n and k != "complete")
    lines = [
        f"robustdiag-analyze: {result.counts['complete']} complete runs"
        + (f" ({counts}; see problems.csv)" if counts else "")
    ]
    lines += [f"WARNING: {w}" for w in result.warnings]
    if not result.claims.empty:
        lines += [
            "",
            "Claims (verdicts by the rules declared in robustdiag/conf/claims; details in report.md, claims.csv):",
        ]
        for _, row in result.claims.iterrows():
            why = f" ({row['reason']})" if row["reason"] else ""
            lines.append(f"  {row['paper']} {row['claim']:<6} [{row['data']}] {row['verdict']:<17}{why}")
    targets = [t.column for t in main_targets(result.targets)]
    if not result.correlations.empty and targets and result.headline:
        matrix = spearman_matrix(result.correlations, result.headline, targets)
        matrix.index = [short_name(i) for i in matrix.index]
        matrix.columns = [short_name(c) for c in matrix.columns]
        lines += [
            "",
            "Spearman ρ [95% bootstrap CI] n, diagnostic (rows) vs robustness (columns):",
            matrix.to_string(),
        ]
    lines += [f"note: {n}" for n in result.notes]
    lines += [
        "",
        f"report:  {result.report_path}",
        f"figures: {result.figures_dir} ({len(result.figures)} PNG)",
    ]
    if result.wandb_run:
        hint = (
            f"  (offline: `wandb sync {result.wandb_run}` uploads it)"
            if "offline-run" in result.wandb_run
            else ""
        )
        lines.append(f"W&B:     {result.wandb_run}{hint}")
    return "\n".join(lines)
