"""Perturbation geometry in [0, 1] pixel space: norms, ε-ball projections, steepest-ascent steps.

Every function works on a whole batch at once; a perturbation ``delta`` has the shape of the images,
(B, C, H, W) or any (B, ...), and norms are taken per sample over all other dimensions.
"""

from __future__ import annotations

import torch

NORMS: tuple[str, ...] = ("linf", "l2", "l1")  # canonical spellings, lowercase
_ALIASES: dict[str, str] = {"inf": "linf", "li": "linf", "l_inf": "linf", "2": "l2", "1": "l1"}
_TINY = 1e-12  # guards divisions by a zero norm


def canonical_norm(norm: str, *, key: str = "norm", valid: tuple[str, ...] = NORMS) -> str:
    """Return the canonical lowercase name of ``norm`` ("Linf" -> "linf"), or raise naming ``key``."""
    name = str(norm).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in valid:
        raise ValueError(f"{key}={norm!r} is not a supported norm; valid values: {', '.join(valid)}")
    return name


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of ``delta`` (B, ...) -> (B,)."""
    flat = delta.flatten(1)  # (B, D)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"norm={norm!r} is not a supported norm; valid values: {', '.join(NORMS)}")


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample values (B,) so they broadcast against ``like`` (B, ...)."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def project_to_ball(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Euclidean projection of each sample of ``delta`` onto the ``norm`` ball of radius ``eps``.

    L∞ and L2 only (the projections PGD needs); L1 balls are handled by AutoAttack itself.
    """
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        lengths = perturbation_norm(delta, "l2")  # (B,)
        scale = (eps / lengths.clamp_min(_TINY)).clamp(max=1.0)  # (B,)
        return delta * _per_sample(scale, delta)
    raise ValueError(f"norm={norm!r} has no PGD projection; valid values: linf, l2")


def clip_to_box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Adversarial pixels ``x + delta`` clipped to [0, 1].

    Clipping only moves each coordinate towards ``x`` (which lies in [0, 1]), so a ``delta`` inside an
    L∞ or L2 ball stays inside it: the result is feasible for both constraints.
    """
    return (x + delta).clamp(0.0, 1.0)


def steepest_ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit-norm direction of steepest ascent for a linearised loss: sign(g) for L∞, g/‖g‖₂ for L2."""
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        lengths = perturbation_norm(grad, "l2")  # (B,)
        return grad / _per_sample(lengths.clamp_min(_TINY), grad)
    raise ValueError(f"norm={norm!r} has no PGD step; valid values: linf, l2")


def sample_in_ball(
    like: torch.Tensor, norm: str, eps: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform random points in the ``norm`` ball of radius ``eps``, one per sample of ``like``.

    L∞: i.i.d. U[-eps, eps] per coordinate. L2: a uniform direction (normalised Gaussian) times a
    radius eps·U^(1/D), which is uniform in the ball's volume.
    """
    shape, device, dtype = like.shape, like.device, like.dtype
    if norm == "linf":
        unit = torch.rand(shape, generator=generator, device=device, dtype=dtype)  # (B, ...)
        return (2.0 * unit - 1.0) * eps
    if norm == "l2":
        gauss = torch.randn(shape, generator=generator, device=device, dtype=dtype)  # (B, ...)
        direction = steepest_ascent_direction(gauss, "l2")  # (B, ...) unit L2 norm
        dim = like[0].numel()
        u = torch.rand(shape[0], generator=generator, device=device, dtype=dtype)  # (B,)
        radius = eps * u.pow(1.0 / dim)  # (B,)
        return direction * _per_sample(radius, like)
    raise ValueError(f"norm={norm!r} has no random start; valid values: linf, l2")
