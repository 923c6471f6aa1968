"""Claims as data: the decision rule, preconditions, bad claims files, and the inference underneath."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from claims_sweeps import sweep
from scipy import stats

from robustdiag.analysis.claims import (
    ClaimData,
    ClaimsError,
    Finding,
    Rule,
    evaluate_claims,
    load_claims,
    parse_claims,
    verdict,
)
from robustdiag.analysis.inference import holm, icc_oneway, rank_partial, sign_flip_test
from robustdiag.config import PACKAGE_CONFIG_DIR

CONF_DIR = Path(PACKAGE_CONFIG_DIR)


def finding(effect: float, low: float, high: float, p: float = 0.001) -> Finding:
    return Finding(effect, (low, high), p, 10, "")


# ------------------------------------------------------------------------------------------ decision rule
@pytest.mark.parametrize(
    ("effect", "ci", "p", "direction", "expected"),
    [
        (0.3, (0.1, 0.5), 0.001, "greater", "holds"),
        (0.3, (0.1, 0.5), 0.2, "greater", "inconclusive"),  # CI clear but p (Holm) not below alpha
        (0.3, (-0.1, 0.5), 0.001, "greater", "inconclusive"),  # CI straddles the threshold
        (-0.3, (-0.5, -0.1), 0.9, "greater", "fails"),  # confidently the other way
        (-0.3, (-0.5, -0.1), 0.001, "less", "holds"),
        (0.3, (0.1, 0.5), 0.9, "less", "fails"),
    ],
)
def test_verdict_follows_the_declared_rule(effect, ci, p, direction, expected) -> None:
    rule = Rule(alpha=0.05, null_value=0.0, direction=direction)
    assert verdict(finding(effect, *ci, p), p, rule, direction) == expected


def test_min_effect_moves_the_threshold() -> None:
    rule = Rule(alpha=0.05, null_value=0.0, min_effect=0.2)
    assert verdict(finding(0.3, 0.1, 0.5), 0.001, rule, "greater") == "inconclusive"
    assert verdict(finding(0.1, 0.05, 0.15), 0.001, rule, "greater") == "fails"  # confidently below 0.2


def test_deterministic_checks_hold_or_fail_on_the_value() -> None:
    rule = Rule(null_value=1e-6, direction="less")
    check = Finding(3e-15, (3e-15, 3e-15), float("nan"), 4, "")
    assert verdict(check, float("nan"), rule, "less") == "holds"
    broken = Finding(1e-3, (1e-3, 1e-3), float("nan"), 4, "")
    assert verdict(broken, float("nan"), rule, "less") == "fails"


# ------------------------------------------------------------------------------------------- claims files
def test_shipped_claims_files_load_with_unique_ids() -> None:
    for paper in ("paper1", "paper2"):
        claim_set = load_claims(CONF_DIR / "claims" / f"{paper}.yaml")
        ids = [c.id for c in claim_set.claims]
        assert len(ids) == len(set(ids)) >= 10
        assert any(c.beyond_design for c in claim_set.claims)


def claim(**changes: object) -> dict:
    base = {
        "id": "X1",
        "statement": "s",
        "direction": "greater",
        "unit": "run",
        "test": {"_target_": "robustdiag.analysis.claims.tests.ShiftDrop", "metric": "path_separation"},
    }
    base.update(changes)
    return {"paper": "p", "claims": [base]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            claim(test={"_target_": "robustdiag.analysis.claims.tests.NoSuchTest"}),
            "is not a claim test; valid tests:",
        ),
        (claim(test={"_target_": "os.system"}), "is not a claim test"),
        (claim(test={"metric": "x"}), "needs a _target_"),
        (
            claim(test={"_target_": "robustdiag.analysis.claims.tests.ShiftDrop", "metrc": "x"}),
            "claim X1.test",
        ),
        (claim(direction="bigger"), "'bigger' is not one of ['greater', 'less']"),
        (claim(rule={"alpha": 2}), "rule.alpha"),
        (claim(rule={"alpha": "x"}), "values must be numbers"),
        (claim(rule={"nul": 0}), "unknown key(s) ['nul']"),
        (claim(requires={"groups": ["memorize"]}), "unknown group(s) ['memorize']"),
        (claim(colour="red"), "unknown key(s) ['colour']"),
        ({"paper": "p", "claims": []}, "must be a non-empty list"),
        ({"claims": [{}]}, "needs `paper`"),
    ],
)
def test_bad_claims_files_are_refused_with_the_key_and_the_fix(data: dict, message: str) -> None:
    with pytest.raises(ClaimsError) as error:
        parse_claims(data, "my.yaml")
    assert "claims file my.yaml" in str(error.value) and message in str(error.value)


def test_duplicate_ids_and_bad_yaml_are_refused(tmp_path: Path) -> None:
    data = claim()
    data["claims"] = data["claims"] * 2
    with pytest.raises(ClaimsError, match="duplicate id"):
        parse_claims(data, "dup.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("paper: [unclosed")
    with pytest.raises(ClaimsError, match="not valid YAML"):
        load_claims(bad)
    with pytest.raises(ClaimsError, match="does not exist"):
        load_claims(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------ preconditions
def shipped(paper: str):  # type: ignore[no-untyped-def]
    return load_claims(CONF_DIR / "claims" / f"{paper}.yaml")


def results_by_id(data: ClaimData) -> dict:
    results = evaluate_claims([shipped("paper1"), shipped("paper2")], [data], n_boot=50, seed=0)
    return {r.claim.id: r for r in results}


def test_one_regime_single_seed_and_missing_keys_are_not_testable_with_reasons(tmp_path: Path) -> None:
    data = sweep(tmp_path, np.random.default_rng(0), planted=False)
    one = data.runs[(data.runs["group"] == "generalise") & (data.runs["seed"] == 0)]
    found = results_by_id(ClaimData.from_runs(tmp_path, "synthetic", one))
    assert found["P1.1"].verdict == "not testable here"
    assert "no memorise runs" in found["P1.1"].reason
    assert "seed" in found["P2.11"].reason  # stability needs >= 2 seeds
    assert "metric/spectral_bound/log10_bound" in found["P2.13"].reason  # the records have no such key
    assert all(r.reason for r in found.values() if r.verdict == "not testable here")


def test_mixed_datasets_are_tested_separately(tmp_path: Path) -> None:
    data = sweep(tmp_path, np.random.default_rng(0), planted=True)
    mixed = pd.concat([data.runs, data.runs.assign(data="other")], ignore_index=True)
    sets = [ClaimData.from_runs(tmp_path, name, mixed) for name in ("synthetic", "other")]
    results = evaluate_claims([shipped("paper2")], sets, n_boot=50, seed=0)
    assert {r.data for r in results} == {"synthetic", "other"}
    assert all(len(s.runs) == 20 for s in sets)


def test_runs_that_missed_their_goal_are_left_out_and_named(tmp_path: Path) -> None:
    data = sweep(tmp_path, np.random.default_rng(0), planted=True)
    runs = data.runs.copy()
    runs.loc[0, "train/goal_reached"] = 0.0
    runs["clean/train_acc"] = 0.5
    kept = ClaimData.from_runs(tmp_path, "synthetic", runs)
    assert len(kept.runs) == 19 and len(kept.excluded) == 1 and runs.loc[0, "run_dir"] in kept.excluded[0]


# ---------------------------------------------------------------------------------------------- inference
def test_sign_flip_exact_p_values() -> None:
    rng = np.random.default_rng(0)
    assert sign_flip_test(np.ones(4), rng=rng, alternative="greater") == pytest.approx(1 / 16)
    assert sign_flip_test(np.ones(4), rng=rng) == pytest.approx(2 / 16)
    assert sign_flip_test(-np.ones(4), rng=rng, alternative="greater") == pytest.approx(1.0)


def test_holm_matches_the_step_down_definition() -> None:
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([0.01, float("nan")])[1])


def test_icc_of_pure_cell_effects_is_one_and_of_noise_near_zero() -> None:
    cells = np.repeat(np.arange(4), 5)
    icc, p = icc_oneway(cells.astype(float), cells)
    assert icc == pytest.approx(1.0) and p == 0.0
    noise = np.random.default_rng(0).normal(size=2000)
    icc, p = icc_oneway(noise, np.repeat(np.arange(400), 5))
    assert abs(icc) < 0.1 and p > 0.01


def test_rank_partial_removes_the_design_and_keeps_within_cell_signal() -> None:
    rng = np.random.default_rng(0)
    cells = np.repeat(np.arange(4), 6)
    within = rng.normal(size=24)
    y = 10 * cells + within
    design_only = cells + rng.normal(0, 0.01, 24)  # a fake diagnostic: the cell label plus noise
    est, dof = rank_partial(design_only, y, cells, [], n_boot=0, rng=rng)
    assert stats.spearmanr(design_only, y).statistic > 0.9 and abs(est.value) < 0.5 and est.p > 0.05
    est, _ = rank_partial(within + cells, y, cells, [], n_boot=100, rng=rng)
    assert est.value > 0.8 and est.p < 0.01 and est.ci[0] > 0.5 and dof == 24 - 4 - 1


def test_analyze_cli_refuses_a_bad_claims_file_with_one_message(tmp_path: Path, capsys) -> None:
    from robustdiag.analyze import main

    bad = tmp_path / "mine.yaml"
    bad.write_text("paper: p\nclaims:\n  - {id: A, statement: s, direction: up, unit: run, test: {}}\n")
    assert main([str(tmp_path), "--claims", str(bad), "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert "mine.yaml" in err and "claim A" in err and "Traceback" not in err
