"""Turn a sweep into a claims table: preconditions, tests, Holm-adjusted p within each paper, verdicts."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from robustdiag.analysis.claims.data import ClaimData
from robustdiag.analysis.claims.spec import Claim, ClaimSet, Rule, load_claims
from robustdiag.analysis.claims.tests import Finding, NotTestable
from robustdiag.analysis.inference import holm

HOLDS, FAILS, INCONCLUSIVE, NOT_TESTABLE = "holds", "fails", "inconclusive", "not testable here"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_TESTABLE)
COLUMNS = [
    "paper", "claim", "data", "statement", "paper_says", "found", "direction", "effect", "ci_low", "ci_high",
    "n", "unit", "p", "p_holm", "alpha", "threshold", "verdict", "reason", "beyond_design",
]  # fmt: skip


@dataclass
class ClaimResult:
    claim: Claim
    data: str
    finding: Finding | None
    reason: str = ""  # why not testable
    p_holm: float = float("nan")
    verdict: str = NOT_TESTABLE
    figure: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        f, c = self.finding, self.claim
        nan = float("nan")
        return {
            "paper": c.paper, "claim": c.id, "data": self.data, "statement": c.statement, "paper_says": c.paper_says,
            "found": f.found if f else "", "direction": c.direction,
            "effect": f.effect if f else nan, "ci_low": f.ci[0] if f else nan, "ci_high": f.ci[1] if f else nan,
            "n": f.n if f else 0, "unit": c.unit, "p": f.p if f else nan, "p_holm": self.p_holm,
            "alpha": c.rule.alpha, "threshold": threshold(c.rule, c.direction), "verdict": self.verdict,
            "reason": self.reason, "beyond_design": c.beyond_design,
        }  # fmt: skip


def threshold(rule: Rule, direction: str) -> float:
    return rule.null_value + rule.min_effect if direction == "greater" else rule.null_value - rule.min_effect


def verdict(finding: Finding, p_holm: float, rule: Rule, direction: str) -> str:
    """The declared decision rule (see :mod:`robustdiag.analysis.claims.spec`)."""
    t = threshold(rule, direction)
    sign = 1.0 if direction == "greater" else -1.0
    effect = finding.effect
    if not math.isfinite(effect):
        return INCONCLUSIVE
    if not math.isfinite(finding.p):  # a deterministic check: no sampling variability
        return HOLDS if sign * (effect - t) > 0 else FAILS
    low, high = finding.ci
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    beyond = sign * (low - t) > 0 if direction == "greater" else sign * (high - t) > 0
    against = sign * (high - t) < 0 if direction == "greater" else sign * (low - t) < 0
    if beyond and p_holm < rule.alpha:
        return HOLDS
    if against:
        return FAILS
    return INCONCLUSIVE


def check_requirements(claim: Claim, data: ClaimData) -> str | None:
    """The reason a claim's declared preconditions are unmet, or None."""
    req, runs = claim.requires, data.runs
    present = set(runs["group"])
    missing = [g for g in req.groups if g not in present]
    if missing:
        return f"no {', '.join(missing)} runs in this sweep (groups present: {', '.join(sorted(present)) or 'none'})"
    scope = runs[runs["group"].isin(req.groups)] if req.groups else runs
    if req.min_runs and len(scope) < req.min_runs:
        return f"{len(scope)} runs; needs >= {req.min_runs}"
    if req.min_models and scope["model"].nunique() < req.min_models:
        return f"{scope['model'].nunique()} architecture(s); needs >= {req.min_models}"
    if req.min_seeds:
        seeds = scope.groupby("cell").size()
        if seeds.empty or int(seeds.min()) < req.min_seeds:
            return f"{int(seeds.min()) if len(seeds) else 0} seed(s) in some architecture × regime cell; needs >= {req.min_seeds}"
    if req.min_pairs and req.groups:
        pairs = scope.groupby("pair")["group"].nunique()
        n = int((pairs >= len(req.groups)).sum())
        if n < req.min_pairs:
            return f"{n} (architecture, seed) pairs with every group of {list(req.groups)}; needs >= {req.min_pairs}"
    if req.min_levels and "q" in runs.columns and runs["q"].nunique() < req.min_levels:
        return f"{runs['q'].nunique()} label-noise levels; needs >= {req.min_levels}"
    absent = [k for k in req.keys if not data.has(k)]
    if absent:
        return f"the records have no {', '.join(absent)} (select the metric/attack that writes it)"
    return None


def claim_rng(seed: int, claim: Claim, data: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(f"{claim.paper}/{claim.id}/{data}".encode())])


def evaluate_claims(
    claim_sets: Sequence[ClaimSet], datasets: Sequence[ClaimData], *, n_boot: int, seed: int
) -> list[ClaimResult]:
    """Every claim on every dataset; Holm adjustment within (paper, dataset); verdicts."""
    results: list[ClaimResult] = []
    for claim_set in claim_sets:
        for data in datasets:
            family: list[ClaimResult] = []
            for claim in claim_set.claims:
                reason = check_requirements(claim, data)
                finding = None
                if reason is None:
                    try:
                        finding = claim.test(
                            data, claim.rule, n_boot=n_boot, rng=claim_rng(seed, claim, data.data)
                        )
                    except NotTestable as why:
                        reason = str(why)
                family.append(ClaimResult(claim, data.data, finding, reason=reason or ""))
            adjusted = holm([r.finding.p if r.finding else float("nan") for r in family])
            for result, p in zip(family, adjusted):
                result.p_holm = p
                if result.finding is not None:
                    result.verdict = verdict(result.finding, p, result.claim.rule, result.claim.direction)
            results += family
    return results


def claims_table(results: Sequence[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([r.row() for r in results], columns=COLUMNS)


def default_claim_files(config_dir: Path) -> list[Path]:
    return sorted((Path(config_dir) / "claims").glob("*.yaml"))


def load_claim_sets(paths: Sequence[Path]) -> list[ClaimSet]:
    return [load_claims(Path(p)) for p in paths]
