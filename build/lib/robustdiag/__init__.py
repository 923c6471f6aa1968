"""robustdiag: model-level robustness diagnostics (path separation, input-Fisher spectral norm)."""

__version__ = "0.1.0"
