"""What one sweep analysis produced: tables, figures, files and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from robustdiag.analysis.columns import Target


@dataclass
class AnalysisResult:
    """Everything ``analyze_sweep`` computed; the same numbers are in the files under ``out_dir``.

    ``runs`` holds every readable record (runs.csv); ``complete`` the analysed ones, with the derived
    ``drop/...`` accuracy-drop columns. Tables are empty DataFrames when their data is absent
    (``notes`` says why).
    """

    sweep_dir: Path
    out_dir: Path
    runs: pd.DataFrame
    complete: pd.DataFrame
    problems: pd.DataFrame
    counts: dict[str, int]
    n_expected: int | None
    diagnostics: list[str]
    headline: list[str]
    targets: list[Target]
    correlations: pd.DataFrame
    separability: pd.DataFrame
    per_sample_auroc: pd.DataFrame
    shift_drop: pd.DataFrame
    ranking: pd.DataFrame
    ranking_agreement: pd.DataFrame
    figures: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, object] = field(default_factory=dict)
    n_bootstrap: int = 2000
    seed: int = 0
    wandb_run: str | None = None  # where the W&B summary run went (directory or URL), if logged
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)  # claims.csv: one row per (claim, dataset)
    claim_results: list = field(default_factory=list)  # ClaimResult objects
    corruption_accuracy: pd.DataFrame = field(default_factory=pd.DataFrame)  # run x corruption x severity
    corruption_errors: pd.DataFrame = field(default_factory=pd.DataFrame)  # run x corruption: CE, relative CE
    mce: pd.DataFrame = field(default_factory=pd.DataFrame)  # run: mCE, relative mCE (with --ce-baseline)

    @property
    def sweep_name(self) -> str:
        """The sweep's directory name (the W&B group)."""
        return self.sweep_dir.name

    @property
    def report_path(self) -> Path:
        return self.out_dir / "report.md"

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"
