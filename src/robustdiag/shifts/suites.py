"""The published corruption sets and their families (Hendrycks & Dietterich 2019; RobustBench's order).

* ``STANDARD_15``: the 15 corruptions of CIFAR-10-C / ImageNet-C's headline number (mean accuracy, or mCE,
  over these 15 x 5 severities), in RobustBench's order (``robustbench.data.CORRUPTIONS``).
* ``EXTRA_4``: the four held-out "extra" corruptions (speckle noise, Gaussian blur, spatter, saturate).
* ``FAMILIES``: noise, blur, weather, digital as in the paper's Figure 1 (the extras join their kind).
"""

from __future__ import annotations

STANDARD_15: tuple[str, ...] = (
    "shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur", "brightness", "fog",
    "zoom_blur", "frost", "glass_blur", "impulse_noise", "contrast", "jpeg_compression", "elastic_transform",
)  # fmt: skip
EXTRA_4: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_19: tuple[str, ...] = STANDARD_15 + EXTRA_4
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}
FAMILY_OF: dict[str, str] = {name: family for family, names in FAMILIES.items() for name in names}

# (record name, corruptions) of the sets whose mean the record reports when all were measured at 1-5
SETS: tuple[tuple[str, tuple[str, ...]], ...] = (("standard15", STANDARD_15), ("extra4", EXTRA_4))


def family(name: str) -> str:
    """The family of a corruption (``other`` for anything outside the benchmark, e.g. a published file)."""
    return FAMILY_OF.get(name, "other")
