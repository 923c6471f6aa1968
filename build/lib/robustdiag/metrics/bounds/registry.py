"""Which ops a module becomes: one converter per module class, registered with :func:`register`.

The most specific registered class of a module wins (its MRO is searched), so a subclass can get its own
rule without caring about the order of registration. A new architecture's bound is one module in
:mod:`robustdiag.metrics.bounds.families` whose converters are decorated with ``@register(MyBlock)``; the
package imports every module there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import Tensor, nn

from robustdiag.metrics.bounds.ops import _SUPPORTED, Chain, LinearOp, Op, UnsupportedArchitecture, supported
from robustdiag.metrics.fisher_linalg import INPUT_SPACES

Converter = Callable[[str, Any], list[Op]]
C = TypeVar("C", bound=Callable[..., list[Op]])
_CONVERTERS: dict[type, Converter] = {}


def register(*classes: type, supports: str | None = None) -> Callable[[C], C]:
    """Decorator: ``convert(name, module) -> list[Op]`` is the rule for modules of ``classes``.

    ``supports`` is one line for the "supported" list that errors show (e.g. "densenet*")."""
    if supports:
        _SUPPORTED.append(supports)

    def decorate(convert: C) -> C:
        for cls in classes:
            if cls in _CONVERTERS:
                raise ValueError(f"spectral_bound: {cls.__qualname__} already has a converter")
            _CONVERTERS[cls] = convert
        return convert

    return decorate


def module_ops(name: str, module: nn.Module) -> list[Op]:
    """The ops of one module, or an error naming it and the supported families."""
    for cls in type(module).__mro__:
        convert = _CONVERTERS.get(cls)
        if convert is not None:
            return convert(name, module)
    raise UnsupportedArchitecture(
        f"spectral_bound: no Lipschitz rule for `{name or 'model'}` ({type(module).__module__}."
        f"{type(module).__name__}). Supported: {supported()}."
    )


def as_function(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """The module as a function; in-place modules get a copy so the walk never overwrites a shared input."""
    if getattr(module, "inplace", False):
        return lambda h: module(h.clone())
    return module


def children(name: str, module: nn.Module, attrs: Sequence[str]) -> list[Op]:
    """Ops of the named attributes in forward order (None attributes are skipped)."""
    ops: list[Op] = []
    for attr in attrs:
        child = getattr(module, attr, None)
        if child is not None:
            ops += module_ops(f"{name}.{attr}" if name else attr, child)
    return ops


def network_ops(model: nn.Module, input_space: str = "pixel") -> Chain:
    """The walk for a whole model: the Classifier's normalisation (pixel space only) then its network."""
    if input_space not in INPUT_SPACES:
        raise ValueError(f"input_space={input_space!r} is not one of {list(INPUT_SPACES)}")
    normalize, net = getattr(model, "normalize", None), getattr(model, "net", None)
    if isinstance(normalize, nn.Module) and isinstance(net, nn.Module):
        ops = module_ops("net", net)
        if input_space == "pixel":  # affine by the Classifier contract: (x − mean) / std
            std = getattr(normalize, "std", None)
            exact = float(1.0 / std.detach().double().abs().min()) if isinstance(std, Tensor) else None
            ops = [LinearOp("normalize", "Normalize", normalize, exact=exact)] + ops
        return Chain("model", ops)
    if input_space == "normalized":
        raise ValueError("input_space='normalized' needs a Classifier with `.normalize` and `.net`")
    return Chain("model", module_ops("", model))
