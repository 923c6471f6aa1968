"""Model-level robustness diagnostics: path/activation separation, input-Fisher spectral norm, bounds."""
