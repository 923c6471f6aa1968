"""Defaults shared by the analysis API and the command line (kept import-light for `--help`)."""

DEFAULT_OUT = "analysis"  # analysis output directory inside the sweep directory
DEFAULT_PROJECT = "robustdiag"  # W&B project of the summary run
WANDB_MODES = ("online", "offline", "disabled")
DEFAULT_BOOTSTRAP = 2000  # resamples per confidence interval
