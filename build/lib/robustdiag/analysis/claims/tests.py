"""The statistical tests a claim can name (``test._target_`` in a claims file).

Each test is a small class configured from YAML and called as ``test(data, rule, n_boot=, rng=)``; it
returns a :class:`Finding` (effect, 95% CI, p, n and a sentence) or raises :class:`NotTestable` with the
reason. Intervals resample what was randomised (seeds within architecture × regime cells, or whole
runs); p-values come from permutations that keep the design fixed (:mod:`robustdiag.analysis.inference`).
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from robustdiag.analysis.claims.data import ClaimData
from robustdiag.analysis.claims.spec import Rule
from robustdiag.analysis.inference import (
    Estimate,
    icc_oneway,
    mean_with_ci,
    permutation_p,
    rank_partial,
    strata_codes,
)
from robustdiag.analysis.stats import percentile_ci, stratified_counts, weighted_auroc
from robustdiag.records import schema

TESTS = (
    "PairedDifference",
    "LayerMajority",
    "DoseResponse",
    "ShiftDrop",
    "SeverityTrend",
    "DropTracksAccuracy",
    "ShiftReactionContrast",
    "GapInteraction",
    "OptionStability",
    "WithinDesignAssociation",
    "PerSampleAUROC",
    "SeedStability",
    "RunThreshold",
    "RatioThreshold",
    "ArchitectureOrder",
    "AcrossModelAgreement",
)
NAN = float("nan")
MIN_RESIDUAL_DOF = 4  # a partial correlation needs this many residual degrees of freedom after the design


class NotTestable(Exception):  # noqa: N818 - a verdict, not an error
    """The sweep does not meet what the test needs; the message is the reason shown in the table."""


@dataclass
class Finding:
    effect: float
    ci: tuple[float, float]
    p: float
    n: int
    found: str  # one sentence: what we find
    plot: pd.DataFrame = field(default_factory=pd.DataFrame)  # the data the claim's figure shows
    plot_kind: str = ""


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _ci_text(est: Estimate) -> str:
    low, high = est.ci
    return f"{_fmt(est.value)} [{_fmt(low)}, {_fmt(high)}]"


def _need(condition: bool, reason: str) -> None:
    if not condition:
        raise NotTestable(reason)


def _column(data: ClaimData, key: str) -> pd.Series:
    _need(data.has(key), f"no run records `{key}`")
    return data.runs[key].astype(float)


def _pairs(data: ClaimData, value: str, a: str, b: str) -> pd.DataFrame:
    """One row per (model, seed) with both groups: columns pair, model, a, b."""
    values = _column(data, value)
    frame = data.runs.assign(_v=values)
    wide = frame[frame["group"].isin([a, b])].pivot_table(
        index=["pair", "model"], columns="group", values="_v", aggfunc="mean"
    )
    _need(
        a in wide.columns and b in wide.columns,
        f"needs {a} and {b} runs (found: {sorted(set(frame['group']))})",
    )
    wide = wide[[a, b]].dropna().reset_index()
    return wide


# ----------------------------------------------------------------------------------------------- paired
@dataclass
class PairedDifference:
    """Mean over (architecture, seed) pairs of ``value`` in group a minus group b.

    CI: pairs resampled within architectures; p: sign-flip permutation of the paired differences.
    """

    value: str
    a: str = "generalise"
    b: str = "memorise"
    min_pairs: int = 3

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        wide = _pairs(data, self.value, self.a, self.b)
        _need(
            len(wide) >= self.min_pairs,
            f"{len(wide)} (architecture, seed) pairs of {self.a}/{self.b}; needs >= {self.min_pairs}",
        )
        d = (wide[self.a] - wide[self.b]).to_numpy()
        est = mean_with_ci(
            d,
            wide["model"].to_numpy(),
            n_boot=n_boot,
            rng=rng,
            null=rule.null_value,
            alternative=rule.direction,
        )
        dz = d.mean() / d.std(ddof=1) if len(d) > 1 and d.std(ddof=1) > 0 else NAN
        plot = wide.rename(columns={self.a: "a", self.b: "b"}).assign(
            a_name=self.a, b_name=self.b, value=self.value
        )
        return Finding(
            est.value, est.ci, est.p, est.n,
            f"{self.a} − {self.b} of {self.value}: {_ci_text(est)} (paired dz {_fmt(dz)}; "
            f"{int((d > 0).sum())}/{len(d)} pairs positive)",
            plot, "paired",
        )  # fmt: skip


@dataclass
class LayerMajority:
    """Per (architecture, seed) pair, the fraction of layers where group a's per-layer ``stat`` exceeds
    group b's (clean data), minus 1/2; mean over pairs. A "most layers" claim holds above 0."""

    metric: str
    a: str = "generalise"
    b: str = "memorise"
    stat: str = "excess"
    min_pairs: int = 3

    def _layers(self, data: ClaimData, run_dir: str) -> pd.Series | None:
        table = data.per_layer(run_dir)
        if table is None or not {"metric", "condition", "layer", self.stat}.issubset(table.columns):
            return None
        rows = table[(table["metric"] == self.metric) & (table["condition"].astype(str) == schema.CLEAN)]
        return rows.groupby("layer", sort=False)[self.stat].mean() if len(rows) else None

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        runs = data.runs[data.runs["group"].isin([self.a, self.b])]
        fractions, models, rows = [], [], []
        for pair, members in runs.groupby("pair"):
            by_group = {g: m["run_dir"].iloc[0] for g, m in members.groupby("group")}
            if self.a not in by_group or self.b not in by_group:
                continue
            la, lb = self._layers(data, by_group[self.a]), self._layers(data, by_group[self.b])
            if la is None or lb is None:
                continue
            both = pd.concat([la.rename("a"), lb.rename("b")], axis=1).dropna()
            if both.empty:
                continue
            fractions.append(float((both["a"] > both["b"]).mean()) - 0.5)
            models.append(members["model"].iloc[0])
            rows += [{"pair": pair, "layer": layer, "a": r.a, "b": r.b} for layer, r in both.iterrows()]
        _need(
            len(fractions) >= self.min_pairs,
            f"{len(fractions)} pairs with per-layer rows of {self.metric}; needs >= {self.min_pairs}",
        )
        est = mean_with_ci(
            np.array(fractions),
            np.array(models),
            n_boot=n_boot,
            rng=rng,
            null=rule.null_value,
            alternative=rule.direction,
        )
        return Finding(
            est.value, est.ci, est.p, est.n,
            f"share of layers where {self.a} > {self.b} ({self.metric} {self.stat}) minus 1/2: {_ci_text(est)} "
            f"(mean share {_fmt(est.value + 0.5)})",
            pd.DataFrame(rows).assign(metric=self.metric, a_name=self.a, b_name=self.b), "layers",
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------- dose
@dataclass
class DoseResponse:
    """Spearman ρ of ``value`` with the random-label fraction q, over runs of the memorising recipe
    (``train/recipe`` of the q = 1 runs). p: q permuted within architectures; CI: runs resampled within
    (architecture, q) cells."""

    value: str
    min_levels: int = 3

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        values = _column(data, self.value)
        _need("q" in data.runs.columns, "runs record no q")
        mem = data.runs[data.runs["group"] == "memorise"]
        _need(len(mem) > 0, "needs memorising (q = 1) runs to fix the recipe")
        recipe = set(mem["train/recipe"].astype(str))
        runs = data.runs[data.runs["train/recipe"].astype(str).isin(recipe)].assign(_v=values)
        runs = runs[np.isfinite(runs["_v"].astype(float))]
        q = runs["q"].astype(float).to_numpy()
        _need(
            len(np.unique(q)) >= self.min_levels,
            f"{len(np.unique(q))} levels of q in the memorising recipe ({', '.join(f'{x:g}' for x in sorted(set(q)))}); needs >= {self.min_levels}",
        )
        v, models = runs["_v"].to_numpy(float), runs["model"].to_numpy()
        rho = float(stats.spearmanr(q, v).statistic)
        groups = [np.flatnonzero(models == m) for m in np.unique(models)]
        null = np.empty(2000)
        for i in range(null.size):
            qp = q.copy()
            for g in groups:
                qp[g] = q[rng.permutation(g)]
            null[i] = stats.spearmanr(qp, v).statistic
        p = permutation_p(rho, null, rule.direction, exact=False)
        cells = strata_codes(models, q)
        boots = [
            stats.spearmanr(np.repeat(q, c), np.repeat(v, c)).statistic for c in stratified_counts(cells, n_boot, rng)
        ] if n_boot else []  # fmt: skip
        ci = percentile_ci(np.array(boots, float)) if boots else (NAN, NAN)
        est = Estimate(rho, ci, p, len(v))
        plot = pd.DataFrame({"q": q, "value": v, "model": models}).assign(name=self.value)
        return Finding(
            rho, ci, p, len(v),
            f"Spearman ρ({self.value}, q) over {len(v)} runs at q ∈ {{{', '.join(f'{x:g}' for x in sorted(set(q)))}}}: {_ci_text(est)}",
            plot, "dose",
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------- shifts
def _shift_rows(data: ClaimData, metric: str, stat: str) -> pd.DataFrame:
    """Long table per (run, shift, severity): clean and shifted diagnostic, clean and shifted accuracy."""
    clean_key = schema.metric_key(metric, stat)
    _column(data, clean_key)
    rows = []
    suffix = f"/{stat}"
    prefix = f"metric/{metric}/"
    for column in data.runs.columns:
        if not (column.startswith(prefix) and column.endswith(suffix)):
            continue
        middle = column[len(prefix) : -len(suffix)].split("/")
        if len(middle) != 2:
            continue
        shift, severity = middle
        acc_key = schema.shift_acc_key(shift, severity)
        for _, run in data.runs.iterrows():
            rows.append(
                {
                    "run_dir": run["run_dir"],
                    "model": run["model"],
                    "cell": run["cell"],
                    "group": run["group"],
                    "shift": shift,
                    "severity": float(severity),
                    "clean": float(run[clean_key]),
                    "shifted": float(run[column]),
                    "acc_drop": float(run.get(schema.EVAL_CLEAN_ACC, run.get(schema.CLEAN_TEST_ACC, NAN)))
                    - float(run.get(acc_key, NAN)),
                }  # fmt: skip
            )
    table = pd.DataFrame(rows)
    _need(
        not table.empty,
        f"no `{prefix}<shift>/<severity>{suffix}` keys: run with shift=[...] and under_shift=true",
    )
    table = table[np.isfinite(table["clean"]) & np.isfinite(table["shifted"])]
    _need(not table.empty, f"no finite {metric} {stat} under shift")
    return table.assign(drop=table["clean"] - table["shifted"])


def _per_run(table: pd.DataFrame, fn: Callable[[pd.DataFrame], float]) -> pd.DataFrame:
    out = [
        {"run_dir": r, "model": g["model"].iloc[0], "cell": g["cell"].iloc[0], "value": fn(g)}
        for r, g in table.groupby("run_dir")
    ]
    frame = pd.DataFrame(out)
    return frame[np.isfinite(frame["value"].astype(float))]


def _run_mean_finding(
    per_run: pd.DataFrame,
    rule: Rule,
    n_boot: int,
    rng: np.random.Generator,
    what: str,
    plot: pd.DataFrame,
    kind: str,
    min_runs: int = 3,
) -> Finding:
    _need(len(per_run) >= min_runs, f"{len(per_run)} runs with a defined value; needs >= {min_runs}")
    est = mean_with_ci(
        per_run["value"].to_numpy(float),
        per_run["cell"].to_numpy(),
        n_boot=n_boot,
        rng=rng,
        null=rule.null_value,
        alternative=rule.direction,
    )
    positive = int((per_run["value"] > rule.null_value).sum())
    return Finding(
        est.value,
        est.ci,
        est.p,
        est.n,
        f"{what}: {_ci_text(est)} ({positive}/{len(per_run)} runs above {_fmt(rule.null_value)})",
        plot,
        kind,
    )


@dataclass
class ShiftDrop:
    """Per run, the mean over shift conditions of clean − shifted ``stat``; mean over runs."""

    metric: str
    stat: str = "excess"

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        table = _shift_rows(data, self.metric, self.stat)
        per_run = _per_run(table, lambda g: g["drop"].mean())
        return _run_mean_finding(
            per_run,
            rule,
            n_boot,
            rng,
            f"mean drop of {self.metric} {self.stat} under shift",
            table.assign(metric=self.metric),
            "severity",
        )


@dataclass
class SeverityTrend:
    """Per run, Spearman ρ of the drop with severity (averaged over shifts); mean over runs."""

    metric: str
    stat: str = "excess"

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        table = _shift_rows(data, self.metric, self.stat)
        _need(table["severity"].nunique() >= 3, f"{table['severity'].nunique()} severities; needs >= 3")

        def trend(g: pd.DataFrame) -> float:
            rhos = [
                stats.spearmanr(s["severity"], s["drop"]).statistic
                for _, s in g.groupby("shift")
                if s["severity"].nunique() >= 3 and s["drop"].nunique() > 1
            ]
            return float(np.mean(rhos)) if rhos else NAN

        return _run_mean_finding(
            _per_run(table, trend),
            rule,
            n_boot,
            rng,
            f"Spearman ρ(severity, drop of {self.metric})",
            table.assign(metric=self.metric),
            "severity",
        )


@dataclass
class DropTracksAccuracy:
    """Per run, Spearman ρ over shift conditions of the diagnostic's drop with the accuracy drop; mean over runs."""

    metric: str
    stat: str = "excess"

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        table = _shift_rows(data, self.metric, self.stat)

        def rho(g: pd.DataFrame) -> float:
            ok = np.isfinite(g["acc_drop"])
            if ok.sum() < 3 or g.loc[ok, "drop"].nunique() < 2 or g.loc[ok, "acc_drop"].nunique() < 2:
                return NAN
            return float(stats.spearmanr(g.loc[ok, "drop"], g.loc[ok, "acc_drop"]).statistic)

        return _run_mean_finding(
            _per_run(table, rho),
            rule,
            n_boot,
            rng,
            f"per-run Spearman ρ(drop of {self.metric}, accuracy drop)",
            table.assign(metric=self.metric),
            "drop_vs_acc",
        )


@dataclass
class ShiftReactionContrast:
    """Per run, relative drop (mean drop / |clean|) of metric a minus that of metric b; mean over runs."""

    metric_a: str
    metric_b: str
    stat: str = "excess"

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        a = _per_run(
            _shift_rows(data, self.metric_a, self.stat),
            lambda g: g["drop"].mean() / abs(g["clean"].iloc[0]) if g["clean"].iloc[0] else NAN,
        )
        b = _per_run(
            _shift_rows(data, self.metric_b, self.stat),
            lambda g: g["drop"].mean() / abs(g["clean"].iloc[0]) if g["clean"].iloc[0] else NAN,
        )
        both = a.merge(b[["run_dir", "value"]], on="run_dir", suffixes=("_a", "_b"))
        per_run = both.assign(value=both["value_a"] - both["value_b"])
        plot = both.rename(columns={"value_a": "a", "value_b": "b"}).assign(
            a_name=self.metric_a, b_name=self.metric_b
        )
        return _run_mean_finding(
            per_run,
            rule,
            n_boot,
            rng,
            f"relative drop of {self.metric_a} minus {self.metric_b}",
            plot,
            "contrast",
        )


# ------------------------------------------------------------------------------------------ interaction
@dataclass
class GapInteraction:
    """Per (architecture, seed) pair, the relative a − b gap of ``value_a`` minus that of ``value_b``
    (gap / mean |value| of the two runs, so two spaces with different scales compare): does the regime
    gap in path space exceed the gap in activation space?"""

    value_a: str
    value_b: str
    a: str = "generalise"
    b: str = "memorise"
    min_pairs: int = 3

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        pa, pb = _pairs(data, self.value_a, self.a, self.b), _pairs(data, self.value_b, self.a, self.b)
        both = pa.merge(pb, on=["pair", "model"], suffixes=("_pa", "_pb"))
        _need(len(both) >= self.min_pairs, f"{len(both)} pairs with both values; needs >= {self.min_pairs}")

        def rel(gen: pd.Series, mem: pd.Series) -> np.ndarray:
            scale = (gen.abs() + mem.abs()).to_numpy() / 2
            return np.where(scale > 0, (gen - mem).to_numpy() / np.where(scale > 0, scale, 1), NAN)

        gap_a = rel(both[f"{self.a}_pa"], both[f"{self.b}_pa"])
        gap_b = rel(both[f"{self.a}_pb"], both[f"{self.b}_pb"])
        est = mean_with_ci(
            gap_a - gap_b,
            both["model"].to_numpy(),
            n_boot=n_boot,
            rng=rng,
            null=rule.null_value,
            alternative=rule.direction,
        )
        plot = pd.DataFrame(
            {"pair": both["pair"], "a": gap_a, "b": gap_b, "a_name": self.value_a, "b_name": self.value_b}
        )
        return Finding(
            est.value, est.ci, est.p, est.n,
            f"relative {self.a}−{self.b} gap of {self.value_a} ({_fmt(np.nanmean(gap_a))}) minus that of "
            f"{self.value_b} ({_fmt(np.nanmean(gap_b))}): {_ci_text(est)}",
            plot, "interaction",
        )  # fmt: skip


@dataclass
class OptionStability:
    """The paired a − b difference holds under every option: effect = the smallest paired dz over the
    options (joint bootstrap over pairs), p = the largest sign-flip p (intersection–union test)."""

    values: Sequence[str] = ()
    a: str = "generalise"
    b: str = "memorise"
    min_pairs: int = 3

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        present = [v for v in self.values if data.has(v)]
        _need(
            len(present) >= 2,
            f"needs >= 2 of the option variants {list(self.values)} in the records (found {present})",
        )
        wides = [_pairs(data, v, self.a, self.b).set_index("pair") for v in present]
        common = sorted(set.intersection(*(set(w.index) for w in wides)))
        _need(
            len(common) >= self.min_pairs, f"{len(common)} pairs with every option; needs >= {self.min_pairs}"
        )
        D = np.column_stack(
            [(w.loc[common, self.a] - w.loc[common, self.b]).to_numpy() for w in wides]
        )  # (n, options)
        models = wides[0].loc[common, "model"].to_numpy()

        def min_dz(d: np.ndarray) -> float:
            sd = d.std(axis=0, ddof=1)
            return float(np.min(np.where(sd > 0, d.mean(axis=0) / np.where(sd > 0, sd, 1), NAN)))

        effect = min_dz(D)
        boots = (
            [
                min_dz(D[np.repeat(np.arange(len(common)), c)])
                for c in stratified_counts(strata_codes(models), n_boot, rng)
            ]
            if n_boot
            else []
        )
        ci = percentile_ci(np.array(boots, float)) if boots else (NAN, NAN)
        ps = [
            mean_with_ci(
                D[:, j], models, n_boot=0, rng=rng, null=rule.null_value, alternative=rule.direction
            ).p
            for j in range(D.shape[1])
        ]
        parts = ", ".join(f"{v}: {_fmt(D[:, j].mean())}" for j, v in enumerate(present))
        plot = pd.DataFrame(
            [
                {"option": v, "pair": p, "d": D[i, j]}
                for j, v in enumerate(present)
                for i, p in enumerate(common)
            ]
        )
        return Finding(
            effect,
            ci,
            max(ps),
            len(common),
            f"smallest paired dz over {len(present)} options {_fmt(effect)} [{_fmt(ci[0])}, {_fmt(ci[1])}]; mean differences {parts}",
            plot,
            "options",
        )


# ------------------------------------------------------------------------------------------- association
@dataclass
class WithinDesignAssociation:
    """Rank partial correlation of a run-level diagnostic with a robustness target, controlling for the
    design (architecture × regime cell dummies) and clean accuracy; p permutes the diagnostic within
    cells. The pooled Spearman ρ and the same partial ρ of every declared run-level baseline are reported
    beside it. ``target`` may be a glob (the first matching column is used)."""

    diagnostic: str
    target: str = "attack/*/acc"
    control_clean_accuracy: bool = True

    def _target(self, data: ClaimData) -> str:
        matches = sorted(c for c in data.runs.columns if fnmatch.fnmatchcase(c, self.target))
        _need(bool(matches), f"no robustness target matches `{self.target}`")
        return matches[0]

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        target = self._target(data)
        x, y = _column(data, self.diagnostic).to_numpy(), data.runs[target].astype(float).to_numpy()
        cells = strata_codes(data.runs["cell"].to_numpy())
        sizes = np.bincount(cells)
        _need(int((sizes >= 2).sum()) >= 2, "needs >= 2 architecture × regime cells with >= 2 seeds each")
        covariates = []
        if self.control_clean_accuracy:
            key = schema.EVAL_CLEAN_ACC if data.has(schema.EVAL_CLEAN_ACC) else schema.CLEAN_TEST_ACC
            covariates.append(_column(data, key).to_numpy())
        est, dof = rank_partial(x, y, cells, covariates, n_boot=n_boot, rng=rng, alternative=rule.direction)
        _need(
            dof >= MIN_RESIDUAL_DOF and math.isfinite(est.value),
            f"{est.n} runs leave {dof} residual degrees of freedom after the design; needs >= {MIN_RESIDUAL_DOF}",
        )
        ok = np.isfinite(x) & np.isfinite(y)
        pooled = float(stats.spearmanr(x[ok], y[ok]).statistic) if ok.sum() >= 3 else NAN
        baselines = []
        for key in sorted(
            {k for _, r in data.runs.iterrows() for k in data.declared(r, schema.BASELINES_KEY)}
        ):
            if data.has(key):
                b, _ = rank_partial(
                    data.runs[key].astype(float).to_numpy(), y, cells, covariates, n_boot=0, rng=rng
                )
                baselines.append(f"{key.split('/')[-1]} {_fmt(b.value)}")
        plot = data.runs[["run_dir", "model", "group", "cell"]].assign(
            x=x, y=y, x_name=self.diagnostic, y_name=target
        )
        text = f"partial Spearman ρ({self.diagnostic}, {target} | cell, clean acc) over {est.n} runs: {_ci_text(est)}; pooled ρ {_fmt(pooled)} (mostly the design)"
        if baselines:
            text += "; baselines' partial ρ: " + ", ".join(baselines)
        return Finding(est.value, est.ci, est.p, est.n, text, plot, "association")


# --------------------------------------------------------------------------------------------- per sample
def _outcomes(table: pd.DataFrame, outcome: str) -> list[tuple[str, np.ndarray]]:
    """(name, positive) per attack or shift condition: fooled / wrong under shift among clean-correct samples."""
    correct = (
        table["correct"].astype(float).to_numpy() == 1
        if "correct" in table.columns
        else np.ones(len(table), bool)
    )
    out = []
    for column in table.columns:
        if outcome == "attack" and column.startswith("attack/") and column.endswith("/robust"):
            out.append((column.split("/")[1], correct & (table[column].astype(float).to_numpy() == 0)))
        if outcome == "shift" and column.startswith("shift/") and column.endswith("/correct"):
            out.append(
                (
                    column[len("shift/") : -len("/correct")],
                    correct & (table[column].astype(float).to_numpy() == 0),
                )
            )
    return [(name, pos) for name, pos in out] if out else []


def _auroc(score: np.ndarray, positive: np.ndarray, eligible: np.ndarray) -> float:
    keep = eligible & np.isfinite(score)
    s, y = score[keep], positive[keep]
    if y.sum() == 0 or (~y).sum() == 0:
        return NAN
    return float(weighted_auroc(s, y, np.ones((1, s.size)))[0])


@dataclass
class PerSampleAUROC:
    """Per run, the AUROC of a per-sample score for being fooled (``outcome: attack``) or wrong under a
    shift (``outcome: shift``) among clean-correct samples, averaged over attacks / shift conditions.
    Effect: mean over runs of AUROC − 1/2, or with ``beyond_baselines`` of AUROC minus the AUROC of the
    best declared per-sample baseline (the one with the highest mean AUROC over runs). Unit: runs."""

    score: str = "metric/fisher/lambda"
    outcome: str = "attack"
    beyond_baselines: bool = False
    min_runs: int = 3

    def __post_init__(self) -> None:
        if self.outcome not in ("attack", "shift"):
            raise ValueError(f"outcome={self.outcome!r} is not one of ['attack', 'shift']")

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        rows = []
        for _, run in data.runs.iterrows():
            table = data.per_sample(str(run["run_dir"]))
            if table is None or self.score not in table.columns:
                continue
            outcomes = _outcomes(table, self.outcome)
            if not outcomes:
                continue
            correct = (
                table["correct"].astype(float).to_numpy() == 1
                if "correct" in table.columns
                else np.ones(len(table), bool)
            )
            scores = {self.score: table[self.score].astype(float).to_numpy()}
            for key in data.declared(run, schema.PER_SAMPLE_BASELINES_KEY):
                if key in table.columns:
                    scores[key] = table[key].astype(float).to_numpy()
            for name, values in scores.items():
                aurocs = [_auroc(values, pos, correct) for _, pos in outcomes]
                finite = [a for a in aurocs if math.isfinite(a)]
                rows.append(
                    {
                        "run_dir": run["run_dir"],
                        "cell": run["cell"],
                        "model": run["model"],
                        "group": run["group"],
                        "score": name,
                        "auroc": float(np.mean(finite)) if finite else NAN,
                    }
                )
        frame = pd.DataFrame(rows)
        _need(
            not frame.empty and bool((frame["score"] == self.score).any()),
            f"no per_sample.csv with `{self.score}` and {self.outcome} outcomes",
        )
        wide = frame.pivot_table(
            index=["run_dir", "cell"], columns="score", values="auroc", dropna=False
        ).reset_index()
        _need(
            self.score in wide.columns,
            f"the AUROC of `{self.score}` is undefined in every run (no clean-correct sample changes outcome)",
        )
        wide = wide[np.isfinite(wide[self.score].astype(float))]
        what = f"AUROC of {self.score.split('/')[-1]} for {'being fooled' if self.outcome == 'attack' else 'errors under shift'}"
        if self.beyond_baselines:
            baselines = [c for c in wide.columns if c not in ("run_dir", "cell", self.score)]
            _need(bool(baselines), "no declared per-sample baselines in these runs (add metric=baselines)")
            best = max(baselines, key=lambda c: np.nanmean(wide[c].astype(float)))
            wide = wide[np.isfinite(wide[best].astype(float))]
            values = wide[self.score].to_numpy(float) - wide[best].to_numpy(float)
            what += f" minus the best baseline's ({best.split('/')[-1]}, mean AUROC {_fmt(np.nanmean(wide[best]))})"
        else:
            values = wide[self.score].to_numpy(float) - 0.5
            what += " minus 1/2"
        per_run = pd.DataFrame(
            {"run_dir": wide["run_dir"], "cell": wide["cell"], "model": "", "value": values}
        )
        finding = _run_mean_finding(
            per_run,
            rule,
            n_boot,
            rng,
            what + f" (median run AUROC {_fmt(float(np.median(wide[self.score])))})",
            frame,
            "auroc",
            self.min_runs,
        )
        return finding


# ---------------------------------------------------------------------------------------------- stability
@dataclass
class SeedStability:
    """ICC(1) of ``value`` across seeds within architecture × regime cells (CI: seeds resampled within
    cells; p: F-test of ICC > 0); the mean within-cell coefficient of variation is reported beside it."""

    value: str

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        v = _column(data, self.value).to_numpy()
        cells = data.runs["cell"].to_numpy()
        codes = strata_codes(cells)
        _need(
            int((np.bincount(codes) >= 2).sum()) >= 2,
            "needs >= 2 architecture × regime cells with >= 2 seeds (single-seed sweeps have no stability claim)",
        )
        icc, p = icc_oneway(v, codes)
        boots = (
            [
                icc_oneway(np.repeat(v, c), np.repeat(codes, c))[0]
                for c in stratified_counts(codes, n_boot, rng)
            ]
            if n_boot
            else []
        )
        ci = percentile_ci(np.array(boots, float)) if boots else (NAN, NAN)
        frame = pd.DataFrame({"cell": cells, "value": v})
        cv = frame.groupby("cell")["value"].agg(
            lambda s: s.std(ddof=1) / abs(s.mean()) if len(s) > 1 and s.mean() else NAN
        )
        return Finding(
            icc,
            ci,
            p,
            len(v),
            f"ICC(1) of {self.value} across seeds: {_fmt(icc)} [{_fmt(ci[0])}, {_fmt(ci[1])}] over {frame['cell'].nunique()} cells; mean within-cell CV {_fmt(float(np.nanmean(cv)))}",
            frame.assign(name=self.value),
            "stability",
        )


# ---------------------------------------------------------------------------------------------- thresholds
@dataclass
class RunThreshold:
    """A per-run check value against the rule's null (a threshold): ``aggregate: mean`` (CI over runs,
    sign-flip p) or ``max`` (a deterministic worst case: p = NaN)."""

    value: str
    aggregate: str = "mean"

    def __post_init__(self) -> None:
        if self.aggregate not in ("mean", "max"):
            raise ValueError(f"aggregate={self.aggregate!r} is not one of ['mean', 'max']")

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        v = _column(data, self.value)
        per_run = data.runs[["run_dir", "cell", "model"]].assign(value=v.to_numpy())
        per_run = per_run[np.isfinite(per_run["value"])]
        if self.aggregate == "max":
            _need(len(per_run) >= 1, f"no finite {self.value}")
            worst = float(per_run["value"].max())
            return Finding(
                worst,
                (worst, worst),
                NAN,
                len(per_run),
                f"largest {self.value} over {len(per_run)} runs: {_fmt(worst)} (threshold {_fmt(rule.null_value)})",
                per_run.assign(name=self.value),
                "runs",
            )
        return _run_mean_finding(
            per_run,
            rule,
            n_boot,
            rng,
            f"mean {self.value} over runs (threshold {_fmt(rule.null_value)})",
            per_run.assign(name=self.value),
            "runs",
            min_runs=2,
        )


@dataclass
class RatioThreshold:
    """Per run (numerator / numerator_per) / (denominator / denominator_per), e.g. per-sample seconds of
    λ over per-sample seconds of a baseline; mean over runs against the rule's threshold."""

    numerator: str
    denominator: str
    numerator_per: str | None = None
    denominator_per: str | None = None

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        num, den = _column(data, self.numerator), _column(data, self.denominator)
        if self.numerator_per:
            num = num / _column(data, self.numerator_per)
        if self.denominator_per:
            den = den / _column(data, self.denominator_per)
        per_run = data.runs[["run_dir", "cell", "model"]].assign(value=(num / den).to_numpy())
        per_run = per_run[np.isfinite(per_run["value"])]
        return _run_mean_finding(
            per_run,
            rule,
            n_boot,
            rng,
            f"ratio {self.numerator} / {self.denominator} per sample (threshold {_fmt(rule.null_value)})",
            per_run.assign(name="ratio"),
            "runs",
            min_runs=2,
        )


# -------------------------------------------------------------------------------------------- architectures
def _model_means(data: ClaimData, value: str, group: str) -> pd.DataFrame:
    runs = data.group(group).assign(_v=_column(data, value))
    return runs[np.isfinite(runs["_v"].astype(float))][["run_dir", "model", "_v"]]


@dataclass
class ArchitectureOrder:
    """Kendall τ between the claimed robustness order of architecture families (``order``: name prefixes,
    least robust first) and the order −``value`` gives (high λ = less robust), on ``group`` runs.
    p: exact permutation over family orders; CI: seeds resampled within families."""

    value: str
    order: Sequence[str] = ("densenet", "vgg", "resnet", "vit")
    group: str = "generalise"

    def _family(self, model: str) -> str | None:
        return next((f for f in self.order if model.startswith(f)), None)

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        runs = _model_means(data, self.value, self.group)
        runs = runs.assign(family=[self._family(str(m)) or "" for m in runs["model"]])
        runs = runs[runs["family"] != ""]
        families = [f for f in self.order if f in set(runs["family"])]
        _need(
            len(families) >= 3,
            f"{len(families)} of the families {list(self.order)} among the {self.group} runs; needs >= 3",
        )
        position = {f: i for i, f in enumerate(families)}

        def tau(frame: pd.DataFrame) -> float:
            means = frame.groupby("family")["_v"].mean()
            if len(means) < len(families):
                return NAN
            return float(stats.kendalltau([position[f] for f in means.index], -means.to_numpy()).statistic)

        effect = tau(runs)
        means = runs.groupby("family")["_v"].mean()
        null = [
            stats.kendalltau(perm, -means.loc[families].to_numpy()).statistic
            for perm in itertools.permutations(range(len(families)))
        ]
        p = permutation_p(effect, np.array(null), rule.direction, exact=True)
        codes = strata_codes(runs["family"].to_numpy())
        boots = (
            [
                tau(runs.iloc[np.repeat(np.arange(len(runs)), c)])
                for c in stratified_counts(codes, n_boot, rng)
            ]
            if n_boot
            else []
        )
        ci = percentile_ci(np.array(boots, float)) if boots else (NAN, NAN)
        measured = " > ".join(means.sort_values(ascending=False).index)
        return Finding(
            effect,
            ci,
            p,
            len(runs),
            f"Kendall τ(claimed order, measured) {_fmt(effect)} [{_fmt(ci[0])}, {_fmt(ci[1])}]; measured {self.value} high→low: {measured}",
            runs.rename(columns={"_v": "value"}).assign(name=self.value),
            "architectures",
        )


@dataclass
class AcrossModelAgreement:
    """Spearman ρ across architectures between the seed means of x and y on ``group`` runs (e.g. the
    spectral bound against measured λ); p: exact permutation over models (≤ 8), CI: seeds within models."""

    x: str
    y: str
    group: str = "generalise"

    def __call__(self, data: ClaimData, rule: Rule, *, n_boot: int, rng: np.random.Generator) -> Finding:
        runs = data.group(self.group).assign(_x=_column(data, self.x), _y=_column(data, self.y))
        runs = runs[np.isfinite(runs["_x"].astype(float)) & np.isfinite(runs["_y"].astype(float))]
        _need(
            runs["model"].nunique() >= 3,
            f"{runs['model'].nunique()} architectures with both values; needs >= 3",
        )

        def rho(frame: pd.DataFrame) -> float:
            m = frame.groupby("model")[["_x", "_y"]].mean()
            return float(stats.spearmanr(m["_x"], m["_y"]).statistic) if len(m) >= 3 else NAN

        effect = rho(runs)
        means = runs.groupby("model")[["_x", "_y"]].mean()
        if len(means) <= 8:
            null = [
                stats.spearmanr(means["_x"].to_numpy()[list(perm)], means["_y"]).statistic
                for perm in itertools.permutations(range(len(means)))
            ]
            p = permutation_p(effect, np.array(null), rule.direction, exact=True)
        else:
            p = float(stats.spearmanr(means["_x"], means["_y"], alternative=rule.direction).pvalue)
        codes = strata_codes(runs["model"].to_numpy())
        boots = (
            [
                rho(runs.iloc[np.repeat(np.arange(len(runs)), c)])
                for c in stratified_counts(codes, n_boot, rng)
            ]
            if n_boot
            else []
        )
        ci = percentile_ci(np.array(boots, float)) if boots else (NAN, NAN)
        return Finding(
            effect,
            ci,
            p,
            len(means),
            f"Spearman ρ over {len(means)} architectures of {self.x} and {self.y}: {_fmt(effect)} [{_fmt(ci[0])}, {_fmt(ci[1])}]",
            runs[["run_dir", "model"]].assign(
                x=runs["_x"], y=runs["_y"], x_name=self.x, y_name=self.y, group=self.group, cell=runs["cell"]
            ),
            "association",
        )
