"""Projected gradient descent (L∞ and L2) and FGSM, batched, in [0, 1] pixel space.

Each step costs one forward and one input-backward: parameters are frozen while the attack runs
(:func:`~robustdiag.attacks.gradients.frozen_parameters`), and the cross-entropy is summed over the
batch so every sample follows its own gradient. After every step the perturbation is projected onto
the ε-ball and the image clipped to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustdiag.attacks.geometry import (
    canonical_norm,
    clip_to_box,
    project_to_ball,
    sample_in_ball,
    steepest_ascent_direction,
)
from robustdiag.attacks.gradients import frozen_parameters, loss_and_input_gradient, warn_if_training
from robustdiag.attacks.validation import check_eps, check_positive, check_positive_int

PGD_NORMS: tuple[str, ...] = ("linf", "l2")
_RANGE_SLACK = 1e-6  # tolerated rounding outside [0, 1] in clean inputs


def default_step_size(norm: str, eps: float, steps: int) -> float:
    """The step used when none is given.

    L∞: eps/4 (2/255 at eps 8/255, paper 2's code setting). L2: 2.5·eps/steps (Madry et al. 2018).
    """
    return eps / 4 if norm == "linf" else 2.5 * eps / steps


def check_attack_inputs(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None) -> None:
    """Raise a clear error for inputs an attack cannot use: shapes, dtypes, pixel range, generator device."""
    if x.ndim < 2 or not x.is_floating_point():
        raise ValueError(f"x must be float pixels of shape (B, C, H, W), got {tuple(x.shape)} {x.dtype}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if x.numel():
        low, high = (v.item() for v in torch.aminmax(x.detach()))
        if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
            raise ValueError(
                f"x must be pixels in [0, 1], got values in [{low:.3g}, {high:.3g}]: attacks work in "
                "pixel space and the model normalises inside (robustdiag.models.Classifier)"
            )
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {x.device}; "
            "create it with torch.Generator(device=x.device)"
        )


class _WorstCase:
    """Per sample, the most adversarial point seen so far: misclassified first, then highest loss."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x_adv = x.clone()  # (B, C, H, W)
        self.fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # (B,)
        self.loss = torch.full((x.shape[0],), -torch.inf, dtype=torch.float32, device=x.device)  # (B,)
        self.logits: torch.Tensor | None = None  # (B, K) at x_adv, once a point has been offered

    def update(
        self, x_adv: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None = None
    ) -> None:
        """Keep ``x_adv`` where it beats the stored point: (b, C, H, W) points with logits (b, K) and labels
        (b,) of the samples ``rows`` (b,) of the batch (all of them when None)."""
        if rows is None:
            rows = torch.arange(x_adv.shape[0], device=x_adv.device)
        loss = F.cross_entropy(logits.float(), y, reduction="none")  # (b,)
        fooled = logits.argmax(dim=1) != y  # (b,)
        was_fooled = self.fooled[rows]
        better = (fooled & ~was_fooled) | ((fooled == was_fooled) & (loss > self.loss[rows]))  # (b,)
        if self.logits is None:
            self.logits = torch.zeros(
                self.x_adv.shape[0], logits.shape[1], dtype=logits.dtype, device=logits.device
            )
        chosen = rows[better]
        self.x_adv[chosen] = x_adv[better]
        self.logits[chosen] = logits[better]
        self.loss[chosen] = loss[better]
        self.fooled[rows] = was_fooled | fooled


class PGD:
    """Projected gradient descent on the cross-entropy, L∞ or L2, with random restarts.

    Per sample it returns the most adversarial iterate it visited (misclassified first, then highest
    loss; the iterates' losses come free with each step's forward pass, the last iterate costs one
    extra forward per restart), which is never weaker than returning the last iterate.

    Args:
        norm: "linf" or "l2".
        eps: radius in [0, 1] pixel units (8/255 ≈ 0.0314 for CIFAR L∞, 0.5 for CIFAR L2).
        step_size: step length in the norm; None gives eps/4 for L∞ (2/255 at 8/255) and
            2.5·eps/steps for L2.
        steps: gradient steps per restart (each: one forward + one input-backward).
        random_start: start from a uniform random point of the ε-ball (else from x).
        restarts: independent runs; needs ``random_start`` when > 1.
        name: record key; defaults to "pgd_<norm>".
        early_stop: stop attacking a sample once an iterate fools the model (AutoAttack's practice).
            Robust accuracy is the same (a fooled sample stays fooled) and an evaluation of a non-robust
            model costs a few steps instead of ``steps``; the returned point of a fooled sample is then the
            first that fooled it rather than the highest-loss one. Off for training and the adversarial
            shift, whose images should be the strongest; on in the ``attack`` group's evaluations.
    """

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 20,
        random_start: bool = True,
        restarts: int = 1,
        name: str | None = None,
        early_stop: bool = False,
    ) -> None:
        self.norm = canonical_norm(norm, valid=PGD_NORMS)
        self.eps = check_eps(eps, self.norm)
        self.steps = check_positive_int(steps, "steps")
        self.restarts = check_positive_int(restarts, "restarts")
        if step_size is None:
            self.step_size = default_step_size(self.norm, self.eps, self.steps)
        else:
            self.step_size = check_positive(step_size, "step_size")
        self.random_start = bool(random_start)
        if self.restarts > 1 and not self.random_start:
            raise ValueError(
                f"restarts={self.restarts} needs random_start=True (restarts from x are identical)"
            )
        self.name = name if name is not None else f"pgd_{self.norm}"
        if not isinstance(early_stop, bool):
            raise ValueError(f"early_stop={early_stop!r} must be true or false")
        self.early_stop = early_stop

    @property
    def strength(self) -> float:
        """Gradient steps per sample, the ordering :func:`compare_attacks` uses by default."""
        return float(self.steps * self.restarts)

    def __repr__(self) -> str:
        return (
            f"PGD(norm={self.norm!r}, eps={self.eps:.6g}, step_size={self.step_size:.6g}, steps={self.steps}, "
            f"random_start={self.random_start}, restarts={self.restarts}, name={self.name!r}, "
            f"early_stop={self.early_stop})"
        )

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Adversarial pixels (B, C, H, W) in [0, 1] with ‖x_adv − x‖ ≤ eps per sample."""
        return self.attack_with_logits(model, x, y, generator=generator)[0]

    def attack_with_logits(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The adversarial pixels (B, C, H, W) and the model's logits (B, K) at them, from the attack's own
        forward passes: an evaluation needs no further forward to score the result."""
        check_attack_inputs(x, y, generator)
        warn_if_training(model, self.name)
        x = x.detach()
        worst = _WorstCase(x)
        with frozen_parameters(model):
            for _ in range(self.restarts):
                self._run_once(model, x, y, generator, worst)
        assert worst.logits is not None  # every restart offers its last iterate
        return worst.x_adv, worst.logits

    def _start(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Starting point: a uniform random point of the ε-ball around x, or x itself."""
        if not self.random_start:
            return x.clone()
        return clip_to_box(x, sample_in_ball(x, self.norm, self.eps, generator=generator))

    def _step(self, x: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One ascent step from ``x_adv``, projected onto the ε-ball around ``x`` and clipped to [0, 1]."""
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)  # keep x_adv finite; checks warn
        moved = x_adv + self.step_size * steepest_ascent_direction(grad, self.norm)  # (B, C, H, W)
        return clip_to_box(x, project_to_ball(moved - x, self.norm, self.eps))

    def _run_once(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None,
        worst: _WorstCase,
    ) -> None:
        """One restart: ``steps`` ascent steps, every visited point offered to ``worst``.

        With ``early_stop`` only the samples not fooled yet take the next step (the batch shrinks).
        """
        x_adv = self._start(x, generator)  # (B, C, H, W) drawn for the whole batch, early stop or not
        rows = torch.arange(x.shape[0], device=x.device)  # (b,) samples still attacked
        if self.early_stop and bool(worst.fooled.any()):  # fooled in an earlier restart
            rows, x_adv = self._still_attacked(rows, x_adv, worst)
        for _ in range(self.steps):
            if rows.numel() == 0:
                return
            logits, grad = loss_and_input_gradient(model, x_adv, y[rows])  # (b, K), (b, C, H, W)
            worst.update(x_adv, logits, y[rows], rows)
            x_adv = self._step(x[rows], x_adv, grad)
            if self.early_stop:
                rows, x_adv = self._still_attacked(rows, x_adv, worst)
        if rows.numel():
            with torch.no_grad():
                worst.update(x_adv, model(x_adv), y[rows], rows)

    @staticmethod
    def _still_attacked(
        rows: torch.Tensor, x_adv: torch.Tensor, worst: _WorstCase
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop the samples ``worst`` has seen fooled: their rows (b,) and iterates (b, C, H, W)."""
        keep = ~worst.fooled[rows]  # (b,)
        if bool(keep.all()):
            return rows, x_adv
        return rows[keep], x_adv[keep]


class FGSM:
    """Fast gradient sign method: one L∞ step of length eps from x (Goodfellow et al. 2015).

    Args:
        eps: L∞ radius in [0, 1] pixel units (8/255 ≈ 0.0314 for CIFAR).
        name: record key.
    """

    norm = "linf"
    strength = 1.0  # one gradient step

    def __init__(self, eps: float = 8 / 255, name: str = "fgsm") -> None:
        self.eps = check_eps(eps, self.norm)
        self.name = name

    def __repr__(self) -> str:
        return f"FGSM(eps={self.eps:.6g}, name={self.name!r})"

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Adversarial pixels x + eps·sign(∇ₓ CE) clipped to [0, 1]; ``generator`` is unused (deterministic)."""
        check_attack_inputs(x, y, generator)
        warn_if_training(model, self.name)
        with frozen_parameters(model):
            _, grad = loss_and_input_gradient(model, x, y)  # (B, C, H, W)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        return clip_to_box(x.detach(), self.eps * grad.sign())
