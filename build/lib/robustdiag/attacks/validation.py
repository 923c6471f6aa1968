"""Construction-time checks for attack settings; every error names the key and the valid range."""

from __future__ import annotations

import math
from numbers import Integral, Real


def check_eps(eps: float, norm: str, *, key: str = "eps") -> float:
    """Return ``eps`` as a float after checking it is a finite, non-negative radius in pixel units.

    Pixels are in [0, 1], so an L∞ radius above 1 covers the whole image cube and almost always
    means the value was written in 0–255 units (``eps=8`` for 8/255). L2 and L1 radii above 1 are
    legitimate (ImageNet L2 ε = 3 is a common setting), so they are not capped here.
    """
    if isinstance(eps, bool) or not isinstance(eps, Real) or not math.isfinite(float(eps)):
        raise ValueError(f"{key}={eps!r} must be a finite number (the attack radius in [0, 1] pixel units)")
    value = float(eps)
    if value < 0:
        raise ValueError(f"{key}={value} must be >= 0 (the attack radius in [0, 1] pixel units)")
    if norm == "linf" and value >= 1:
        raise ValueError(
            f"{key}={value:g} is out of range for an L∞ attack: {key} is in [0, 1] pixel units, and {value:g} "
            "lets the attack set every pixel to anything "
            f"(8/255 ≈ 0.0314 is the usual CIFAR setting). Did you mean {key}={value:g}/255 "
            f"≈ {value / 255:.4f}?"
        )
    return value


def check_positive_int(value: int, key: str) -> int:
    """Return ``value`` as an int after checking it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise ValueError(f"{key}={value!r} must be an integer >= 1")
    return int(value)


def check_positive(value: float, key: str) -> float:
    """Return ``value`` as a float after checking it is finite and > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(float(value))
        or value <= 0
    ):
        raise ValueError(f"{key}={value!r} must be a finite number > 0 (pixel units)")
    return float(value)
