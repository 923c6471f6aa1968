"""analyze_sweep on hand-made records with planted relations reproduces them (checked against scipy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_records import ATTACK, MODELS, PlantedRun, base_record, build_sweep, write_job
from scipy import stats
from sklearn.metrics import roc_auc_score

from robustdiag.analysis import AnalysisResult, NoRunsError, analyze_sweep
from robustdiag.analysis.correlations import correlation_table
from robustdiag.analysis.separability import separability_table

N_BOOT = 400
ADV = f"attack/{ATTACK}/acc"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[AnalysisResult, list[PlantedRun]]:
    root = tmp_path_factory.mktemp("planted") / "sweep"
    runs = build_sweep(root)
    return analyze_sweep(root, n_bootstrap=N_BOOT, seed=0), runs


def _column(runs: list[PlantedRun], key: str) -> np.ndarray:
    return np.array([float(r.record[key]) for r in runs])


def _row(table: pd.DataFrame, diagnostic: str, target: str) -> pd.Series:
    rows = table[
        (table["diagnostic"] == diagnostic) & (table["target"] == target) & (table["scope"] == "pooled")
    ]
    assert len(rows) == 1, (diagnostic, target)
    return rows.iloc[0]


def test_planted_correlation_is_reproduced_exactly(planted) -> None:
    result, runs = planted
    row = _row(result.correlations, "metric/fisher/mean", ADV)
    assert row["n"] == 12
    assert row["spearman"] == pytest.approx(-1.0) and row["kendall"] == pytest.approx(-1.0)
    assert row["pearson"] == pytest.approx(-1.0)  # adv = 0.9 - 0.08 * fisher, no noise
    assert (row["spearman_ci_low"], row["spearman_ci_high"]) == pytest.approx((-1.0, -1.0))


@pytest.mark.parametrize(
    ("diagnostic", "target"),
    [
        ("metric/fisher/median", ADV),
        ("metric/spectral_bound/log10_bound", "shift/mean_corruption_acc"),
        ("metric/path_separation/excess", "shift/gaussian_noise/2/acc"),
        ("metric/probe/value", "clean/test_acc"),
    ],
)
def test_coefficients_and_p_values_equal_scipy(planted, diagnostic: str, target: str) -> None:
    result, runs = planted
    x, y = _column(runs, diagnostic), _column(runs, target)
    row = _row(result.correlations, diagnostic, target)
    for name, func in (
        ("spearman", stats.spearmanr),
        ("pearson", stats.pearsonr),
        ("kendall", stats.kendalltau),
    ):
        expected = func(x, y)
        assert row[name] == pytest.approx(expected.statistic, abs=1e-12)
        assert row[f"{name}_p"] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_accuracy_drop_targets_are_clean_minus_robust(planted) -> None:
    result, runs = planted
    drop = _column(runs, "eval/clean_acc") - _column(runs, ADV)
    row = _row(result.correlations, "metric/fisher/mean", f"drop/attack/{ATTACK}")
    assert row["target_kind"] == "drop_adversarial"
    assert row["spearman"] == pytest.approx(
        stats.spearmanr(_column(runs, "metric/fisher/mean"), drop).statistic
    )
    kinds = set(result.correlations["target_kind"])
    assert kinds == {
        "adversarial",
        "mean_corruption",
        "shift",
        "clean",
        "drop_adversarial",
        "drop_mean_corruption",
        "drop_shift",
    }


def test_independent_diagnostic_interval_covers_zero(planted) -> None:
    result, _ = planted
    row = _row(result.correlations, "metric/probe/value", ADV)
    for name in ("spearman", "pearson", "kendall"):
        assert row[f"{name}_ci_low"] < 0 < row[f"{name}_ci_high"]


def test_every_interval_contains_its_point_estimate(planted) -> None:
    table = planted[0].correlations
    table = table[table["scope"] == "pooled"]
    for name in ("spearman", "pearson", "kendall"):
        assert table[f"{name}_ci_low"].notna().all()
        assert (table[f"{name}_ci_low"] <= table[name] + 1e-12).all()
        assert (table[name] <= table[f"{name}_ci_high"] + 1e-12).all()


def test_constant_diagnostics_are_left_out_and_headline_first(planted) -> None:
    result, _ = planted
    assert "metric/constant/value" not in result.diagnostics
    assert result.diagnostics[:4] == [
        "metric/fisher/mean",
        "metric/path_separation/excess",
        "metric/activation_separation/excess",
        "metric/spectral_bound/log10_bound",
    ]
    assert {"metric/fisher/median", "metric/probe/value"} <= set(result.diagnostics)
    assert result.headline == result.diagnostics[:4]


def test_bootstrap_is_seeded_and_does_not_move_point_estimates(planted) -> None:
    result, _ = planted
    complete, diagnostics, targets = result.complete, result.diagnostics[:2], result.targets[:3]
    first = correlation_table(complete, diagnostics, targets, n_boot=N_BOOT, seed=0)
    again = correlation_table(complete, diagnostics, targets, n_boot=N_BOOT, seed=0)
    other = correlation_table(complete, diagnostics, targets, n_boot=N_BOOT, seed=1)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_series_equal(first["spearman"], other["spearman"])
    assert not np.allclose(first["pearson_ci_low"], other["pearson_ci_low"])
    expected = result.correlations[result.correlations["diagnostic"].isin(diagnostics)]
    expected = expected[expected["target"].isin([t.column for t in targets])].reset_index(drop=True)
    holm = "spearman_p_holm"  # adjusted over the whole table, so it depends on the table's size
    pd.testing.assert_frame_equal(first.drop(columns=holm), expected.drop(columns=holm))  # same numbers


def test_memorising_vs_generalising_separability(planted) -> None:
    result, runs = planted
    table = result.separability.set_index("diagnostic")
    path = table.loc["metric/path_separation/excess"]
    assert (path["n_generalise"], path["n_memorise"]) == (6, 6)
    assert path["auroc"] == 1.0 and (path["auroc_ci_low"], path["auroc_ci_high"]) == (1.0, 1.0)
    assert path["hedges_g"] > 3 and path["hedges_g_ci_low"] <= path["hedges_g"] <= path["hedges_g_ci_high"]
    act = table.loc["metric/activation_separation/excess"]
    is_gen = np.array([r.regime == "generalise" for r in runs])
    values = _column(runs, "metric/activation_separation/excess")
    assert act["auroc"] == pytest.approx(roc_auc_score(is_gen, values))
    gen, mem = values[is_gen], values[~is_gen]
    pooled = np.sqrt((gen.var(ddof=1) * 5 + mem.var(ddof=1) * 5) / 10)
    assert act["cohens_d"] == pytest.approx((gen.mean() - mem.mean()) / pooled)
    assert act["auroc_ci_low"] < 0.5 < act["auroc_ci_high"]
    assert np.isnan(path["dose_spearman"])  # only q = 0 and q = 1: no dose-response


def test_label_noise_dose_response_within_the_memorising_recipe() -> None:
    runs = pd.DataFrame(
        {
            "regime": ["generalise", "generalise"] + ["label_noise"] * 5 + ["memorise", "memorise"],
            "labels": ["true", "true", "true", "noisy", "noisy", "noisy", "random", "random", "random"],
            "q": [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, np.nan],  # memorise without q: q = 1
            "metric/path_separation/excess": [0.5, 0.49, 0.31, 0.25, 0.2, 0.15, 0.1, 0.11, 0.09],
            "train/recipe": ["standard"] * 2 + ["memorising"] * 7,
        }
    )
    row = separability_table(runs, ["metric/path_separation/excess"], n_boot=200, seed=0).iloc[0]
    dose = runs.iloc[2:]  # generalise runs differ in recipe: not part of the dose-response
    expected = stats.spearmanr([0, 0.25, 0.5, 0.75, 1, 1, 1], dose["metric/path_separation/excess"])
    assert row["dose_n"] == 7 and row["dose_q_values"] == "0 0.25 0.5 0.75 1"
    assert row["dose_spearman"] == pytest.approx(expected.statistic)
    assert row["dose_p"] == pytest.approx(expected.pvalue)
    assert row["dose_ci_low"] <= row["dose_spearman"] <= row["dose_ci_high"]
    # groups come from the recorded facts: true labels (either recipe) vs random labels; 0 < q < 1 stays out
    assert (row["n_generalise"], row["n_memorise"]) == (3, 3)


def test_per_sample_auroc_per_run_and_pooled(planted) -> None:
    result, _ = planted
    table = result.per_sample_auroc
    runs = table[table["scope"] == "run"]
    assert len(runs) == 12 and set(runs["attack"]) == {ATTACK}
    samples = pd.read_csv(result.sweep_dir / "3" / "per_sample.csv")
    keep = (samples["correct"] == 1) & samples["metric/fisher/lambda"].notna()
    fooled = samples.loc[keep, f"attack/{ATTACK}/robust"] == 0
    row = runs[runs["run_dir"] == "3"].iloc[0]
    assert row["n"] == keep.sum() and row["n_fooled"] == fooled.sum()
    assert row["auroc"] == pytest.approx(roc_auc_score(fooled, samples.loc[keep, "metric/fisher/lambda"]))
    assert row["auroc_ci_low"] <= row["auroc"] <= row["auroc_ci_high"]
    pooled = table[table["scope"] == "pooled"].iloc[0]
    assert pooled["n"] == runs["n"].sum() and pooled["auroc"] > 0.8
    assert table[table["scope"] == "pooled_rank"].iloc[0]["auroc"] > 0.8


def test_shift_drop_follows_accuracy_drop(planted) -> None:
    table = planted[0].shift_drop
    path = table[table["diagnostic"] == "metric/path_separation/excess"]
    runs = path[path["scope"] == "run"]
    assert len(runs) == 12 and (runs["n"] == 3).all() and (runs["spearman"] == 1.0).all()
    assert path[path["scope"] == "pooled"].iloc[0]["n"] == 36


def test_architecture_ranking_and_agreement(planted) -> None:
    result, runs = planted
    ranking = result.ranking
    assert set(ranking["model"]) == set(MODELS) and set(ranking["regime"]) == {"generalise", "memorise"}
    assert (ranking["n_runs"] == 3).all()
    gen = ranking[ranking["regime"] == "generalise"].set_index("model")
    fisher = [
        np.mean([r.record["metric/fisher/mean"] for r in runs if r.model == m and r.regime == "generalise"])
        for m in MODELS
    ]
    assert gen.loc[list(MODELS), "metric/fisher/mean"].tolist() == pytest.approx(fisher)
    assert gen.loc["vit_tiny", "rank/metric/fisher/mean"] == 1 and gen.loc["vit_tiny", f"rank/{ADV}"] == 2
    agreement = result.ranking_agreement
    row = agreement[(agreement["diagnostic"] == "metric/fisher/mean") & (agreement["target"] == ADV)]
    assert (row["kendall_tau"] == -1.0).all() and (row["n_models"] == 2).all()


def test_output_files_figures_and_report(planted) -> None:
    result, _ = planted
    out = result.out_dir
    assert out == result.sweep_dir / "analysis"
    for name in (
        "runs",
        "problems",
        "correlations",
        "separability",
        "per_sample_auroc",
        "ranking",
        "ranking_agreement",
        "corruption_accuracy",
    ):
        assert (out / f"{name}.csv").stat().st_size > 0
    assert len(pd.read_csv(out / "correlations.csv")) == len(result.correlations)
    assert (result.correlations["scope"] == "pooled").sum() == 6 * 11
    assert {"within regime generalise", "within regime memorise"} <= set(result.correlations["scope"])
    base = {k for k in result.figures if not k.startswith("claim_")}
    assert base == {
        "scatter_pgd_linf",
        "per_layer_resnet18",
        "per_layer_vit_tiny",
        "separation_vs_severity",
        "corruption_severity",
        "diagnostics_vs_severity",
        "lambda_distributions",
    }
    tested = result.claims[result.claims["verdict"] != "not testable here"]
    assert {f"claim_{c}_synthetic" for c in tested["claim"]} == set(result.figures) - base
    for path in result.figures.values():
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
    report = result.report_path.read_text()
    for heading in (
        "What was found",
        "Correlations across runs",
        "Memorising vs generalising",
        "Per-sample AUROC",
        "Architecture ranking",
        "Problems",
        "Provenance",
    ):
        assert f"## {heading}" in report
    for path in result.figures.values():
        assert f"(figures/{path.name})" in report
    assert (
        "**12 complete runs analysed**" in report
        and "| fisher/mean | pgd_linf/acc | 12 | -1.00 [-1.00, -1.00]" in report
    )
    assert "`abc1234` (12)" in report
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["counts"]["complete"] == 12 and summary["provenance"]["records"]["run/commit"] == {
        "abc1234": 12
    }


def test_problems_are_reported_and_the_rest_analysed(make_sweep) -> None:
    root, runs = make_sweep(tables=False)
    failed = base_record("resnet18", "generalise", 7) | {"status": "failed", "error": "NaN loss at epoch 3"}
    write_job(root / "12", failed, overrides=["model=resnet18", "train=generalise", "seed=7"])
    write_job(
        root / "13", base_record("resnet18", "generalise", 8) | {"status": "running"}, overrides=["seed=8"]
    )
    write_job(root / "14", "{not json", overrides=["seed=9"])
    write_job(root / "15", None, overrides=["seed=10"])
    lacking = dict(runs[0].record)
    lacking.pop(ADV)
    lacking["seed"] = 11
    write_job(root / "16", lacking, overrides=["seed=11"])

    result = analyze_sweep(root, n_bootstrap=50)

    assert result.counts["complete"] == 13
    problems = pd.read_csv(result.out_dir / "problems.csv")
    assert set(problems["kind"]) == {"failed", "running", "corrupt", "missing", "missing_keys"}
    assert "NaN loss at epoch 3" in problems.set_index("run_dir").loc[12, "detail"]
    row = _row(result.correlations, "metric/fisher/mean", ADV)
    assert row["n"] == 12  # the record without the attack key is dropped for this pair only
    assert _row(result.correlations, "metric/fisher/mean", "clean/test_acc")["n"] == 13
    report = result.report_path.read_text()
    assert "1 failed" in report and "NaN loss at epoch 3" in report
    notes = " ".join(result.notes)
    assert (
        "per-layer figure skipped" in notes
        and "λ figure skipped" in notes
        and "per-sample AUROC skipped" in notes
    )
    assert "scatter_pgd_linf" in result.figures


def test_single_architecture_sweep_skips_ranking(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    runs = [r for r in build_sweep(tmp_path / "full", tables=False, multirun=False) if r.model == "resnet18"]
    for i, run in enumerate(runs):
        write_job(root / str(i), run.record, overrides=[f"seed={run.seed}", f"train={run.regime}"])
    stale_figure = tmp_path / "out" / "figures" / "per_layer_old_model.png"
    stale_figure.parent.mkdir(parents=True)
    stale_figure.write_bytes(PNG_MAGIC)  # left by an earlier analysis into the same directory
    (tmp_path / "out" / "ranking.csv").write_text("regime,model\n")
    result = analyze_sweep(root, tmp_path / "out", n_bootstrap=20)
    assert result.ranking.empty and any("ranking skipped" in n for n in result.notes)
    assert not (tmp_path / "out" / "ranking.csv").exists() and (tmp_path / "out" / "report.md").exists()
    assert not stale_figure.exists()
    assert sorted(p.name for p in result.figures_dir.glob("*.png")) == sorted(
        p.name for p in result.figures.values()
    )


def test_nothing_complete_raises_with_an_explanation(tmp_path: Path) -> None:
    with pytest.raises(NoRunsError, match="nothing to analyse") as err:
        analyze_sweep(tmp_path, n_bootstrap=10)
    assert "metrics.json" in str(err.value)
    write_job(tmp_path / "0", base_record("m", "generalise", 0) | {"status": "failed", "error": "boom"})
    with pytest.raises(NoRunsError, match="1 failed"):
        analyze_sweep(tmp_path, n_bootstrap=10)
    with pytest.raises(ValueError, match="n_bootstrap"):
        analyze_sweep(tmp_path, n_bootstrap=-1)


def test_records_without_diagnostics_still_give_a_report(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for i, (model, seed) in enumerate((m, s) for m in MODELS for s in range(3)):
        record = base_record(model, "generalise", seed) | {
            "clean/test_acc": 0.9 - 0.01 * i,
            ADV: 0.3 + 0.02 * i,
        }
        write_job(root / str(i), record, overrides=[f"model={model}", f"seed={seed}"])
    result = analyze_sweep(root, n_bootstrap=20)
    assert result.diagnostics == [] and result.correlations.empty and result.figures == {}
    assert any("no diagnostic column" in n for n in result.notes)
    assert set(result.ranking["model"]) == set(MODELS) and result.ranking_agreement.empty
    report = result.report_path.read_text()
    assert "_No diagnostics or no targets._" in report and "## Architecture ranking" in report


def test_flags_written_as_true_false_text_are_read() -> None:
    from robustdiag.analysis.per_sample import fooled_among_correct

    table = pd.DataFrame(
        {
            "correct": ["True", "True", "False", "True", "True"],  # what pandas writes for a bool column
            f"attack/{ATTACK}/robust": [True, False, False, True, False],
            "metric/fisher/lambda": [1.0, 5.0, 9.0, 2.0, np.nan],
        }
    )
    values, fooled = fooled_among_correct(table, "metric/fisher/lambda", ATTACK)
    assert values.tolist() == [1.0, 5.0, 2.0] and fooled.tolist() == [False, True, False]


@pytest.mark.parametrize("stage", ["make_figures", "write_outputs"])
def test_an_analysis_killed_midway_reruns_to_the_same_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """A kill during the analysis (simulated at a stage) leaves partial files; the rerun's tables equal an
    uninterrupted analysis's, byte for byte."""
    from robustdiag.analysis import pipeline

    root = tmp_path / "sweep"
    build_sweep(root)
    analyze_sweep(root, tmp_path / "clean", n_bootstrap=20)

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, stage, die)
        with pytest.raises(Killed):
            analyze_sweep(root, tmp_path / "killed", n_bootstrap=20)
    analyze_sweep(root, tmp_path / "killed", n_bootstrap=20)
    clean = sorted(p.relative_to(tmp_path / "clean") for p in (tmp_path / "clean").glob("*.csv"))
    assert clean and clean == sorted(
        p.relative_to(tmp_path / "killed") for p in (tmp_path / "killed").glob("*.csv")
    )
    for name in clean:
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
