"""Distribution shifts: Hendrycks & Dietterich corruptions as batched tensor ops, published files, adversarial.

Every shift satisfies :class:`robustdiag.types.Shift`; YAML files in ``robustdiag/conf/shift/`` name them by
``_target_``. Run one over a large tensor with :func:`apply_shift`.
"""

from robustdiag.shifts.adversarial import AdversarialShift
from robustdiag.shifts.apply import apply_shift, make_generator, shift_seed
from robustdiag.shifts.base import SEVERITY_RANGE, TABLE_CHOICES, Corruption, check_severity
from robustdiag.shifts.blur import DefocusBlur, GaussianBlur, GlassBlur, MotionBlur, ZoomBlur
from robustdiag.shifts.digital import Brightness, Contrast, ElasticTransform, Pixelate, Saturate
from robustdiag.shifts.files import CorruptionFiles
from robustdiag.shifts.jpeg import JpegCompression, jpeg_roundtrip
from robustdiag.shifts.natural import Cifar101, TestSetFolder, TestSetShift, is_natural
from robustdiag.shifts.noise import GaussianNoise, ImpulseNoise, ShotNoise, SpeckleNoise
from robustdiag.shifts.suites import ALL_19, EXTRA_4, FAMILIES, STANDARD_15, family
from robustdiag.shifts.weather import Fog, Frost, Snow, Spatter, plasma_fractal


def _computed_corruptions() -> dict[str, type[Corruption]]:
    """Every imported :class:`Corruption` subclass with a record name: no list to keep in step."""
    found: dict[str, type[Corruption]] = {}
    pending = list(Corruption.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.name:
            found[cls.name] = cls
    return dict(sorted(found.items()))


CORRUPTIONS: dict[str, type[Corruption]] = _computed_corruptions()
"""The computed corruptions by record name (for tests and benchmarks; configs use ``_target_``)."""

__all__ = [
    "ALL_19",
    "CORRUPTIONS",
    "Cifar101",
    "EXTRA_4",
    "FAMILIES",
    "STANDARD_15",
    "SEVERITY_RANGE",
    "TABLE_CHOICES",
    "AdversarialShift",
    "Brightness",
    "Contrast",
    "Corruption",
    "CorruptionFiles",
    "DefocusBlur",
    "ElasticTransform",
    "Fog",
    "Frost",
    "GaussianBlur",
    "GaussianNoise",
    "GlassBlur",
    "ImpulseNoise",
    "JpegCompression",
    "MotionBlur",
    "Pixelate",
    "Saturate",
    "ShotNoise",
    "Snow",
    "TestSetFolder",
    "TestSetShift",
    "Spatter",
    "SpeckleNoise",
    "ZoomBlur",
    "apply_shift",
    "check_severity",
    "family",
    "is_natural",
    "jpeg_roundtrip",
    "make_generator",
    "plasma_fractal",
    "shift_seed",
]
