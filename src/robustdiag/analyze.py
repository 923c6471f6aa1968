"""``robustdiag-analyze <sweep dir>``: analyse every run record of a sweep (thin entry point)."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from robustdiag.analysis.options import DEFAULT_BOOTSTRAP, DEFAULT_OUT, DEFAULT_PROJECT, WANDB_MODES

EPILOG = """\
outputs (in --out, default <sweep dir>/analysis):
  report.md                    the claims table first, then what was found, tables, figures, provenance
  claims.csv                   each paper claim: effect, 95% CI, n and unit, Holm p, verdict and reason
  runs.csv, problems.csv       every record read; missing/failed/running/corrupt grid points
  correlations.csv             Spearman/Pearson/Kendall + bootstrap 95% CIs and n, diagnostic x target
  separability.csv             memorising vs generalising: AUROC, Cohen's d / Hedges' g, dose-response
  per_sample_auroc.csv         AUROC of per-sample lambda(x) for being fooled, per run and pooled
  shift_drop_correlations.csv  diagnostic drop vs accuracy drop under shifts
  ranking.csv, ranking_agreement.csv   architecture ranking (sweeps with several models)
  figures/*.png, analysis.json, wandb/ (offline W&B summary run unless --no-wandb)

exit status: 0 when at least one complete record was analysed, 1 when there is nothing to analyse.
example: robustdiag-analyze multirun/2026-01-01/12-00-00 --bootstrap 5000
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustdiag-analyze",
        description=(
            "Correlate robustness diagnostics with adversarial and shifted accuracy across the runs\n"
            "of a sweep. Reads the run records on disk (never the W&B API)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sweep_dir", type=Path, help="sweep directory (hydra.sweep.dir) or a parent of several"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output directory (default: <sweep dir>/{DEFAULT_OUT})"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        metavar="N",
        help=f"bootstrap resamples per CI (default {DEFAULT_BOOTSTRAP}; 0: no CIs)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one W&B summary run for the sweep (default on; offline unless credentials exist)",
    )
    parser.add_argument(
        "--wandb-project", default=DEFAULT_PROJECT, help=f"W&B project (default {DEFAULT_PROJECT})"
    )
    parser.add_argument("--wandb-group", default=None, help="W&B group (default: the sweep directory's name)")
    parser.add_argument(
        "--wandb-mode",
        choices=WANDB_MODES,
        default=None,
        help="force a W&B mode (default: offline without credentials)",
    )
    parser.add_argument(
        "--claims",
        nargs="+",
        type=Path,
        default=None,
        metavar="YAML",
        help="claims files to test (default: every robustdiag/conf/claims/*.yaml of the app; see docs/reproductions.md)",
    )
    parser.add_argument("--no-claims", action="store_true", help="skip the claims table")
    parser.add_argument(
        "--ce-baseline",
        default=None,
        metavar="RUN_DIR|CSV",
        help="a baseline model's corruption errors (its job directory, or a CSV corruption,severity,error with "
        "fractions and a row clean,0,<error>): adds CE, mCE and relative mCE (corruption_errors.csv, mce.csv)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the report path")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the analysis, print the summary; returns the exit status."""
    args = build_parser().parse_args(argv)
    from robustdiag.analysis import NoRunsError, analyze_sweep, console_summary  # heavy: after --help
    from robustdiag.analysis.claims import ClaimsError, load_claim_sets
    from robustdiag.analysis.wandb_summary import log_summary

    if args.bootstrap < 0:
        print(f"robustdiag-analyze: --bootstrap must be >= 0, got {args.bootstrap}", file=sys.stderr)
        return 2
    logger = None
    if args.wandb:
        logger = functools.partial(
            log_summary,
            project=args.wandb_project,
            group=args.wandb_group,
            mode=args.wandb_mode,
            dir=args.out,
        )
    try:
        claim_sets = [] if args.no_claims else (load_claim_sets(args.claims) if args.claims else None)
    except ClaimsError as err:
        print(f"robustdiag-analyze: {err}", file=sys.stderr)
        return 2
    command = shlex.join(["robustdiag-analyze", *(sys.argv[1:] if argv is None else argv)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = analyze_sweep(
                args.sweep_dir,
                args.out,
                n_bootstrap=args.bootstrap,
                seed=args.seed,
                wandb_logger=logger,
                command=command,
                claim_sets=claim_sets,
                ce_baseline=args.ce_baseline,
            )
        except (NoRunsError, FileNotFoundError, ValueError) as err:
            print(f"robustdiag-analyze: {err}", file=sys.stderr)
            return 1
    print(result.report_path if args.quiet else console_summary(result))
    shown = set(result.warnings)  # the summary already printed these
    for message in dict.fromkeys(str(w.message) for w in caught):
        if message not in shown:
            print(f"WARNING: {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
