"""Claims as data: a YAML file per paper, each claim with its test, unit, decision rule and preconditions.

A claims file (``robustdiag/conf/claims/paper1.yaml``)::

    paper: paper1
    title: Bernoulli path separation (Khaitan & Banerjee, arXiv 2605.21313)
    claims:
      - id: P1.1
        statement: Generalising networks show more path separation than memorising ones.
        paper_says: Non-memorising networks show greater class separation.
        direction: greater            # the effect the paper claims: greater | less (than rule.null)
        unit: (architecture, seed) pair of runs
        beyond_design: false          # true: the claim is about the diagnostic beyond the regime
        requires: {groups: [generalise, memorise], min_pairs: 3}
        test: {_target_: robustdiag.analysis.claims.tests.PairedDifference,
               value: metric/path_separation/excess, a: generalise, b: memorise}
        rule: {alpha: 0.05, null_value: 0.0, min_effect: 0.0}

Decision rule (fixed before the data are seen), with CI the 95% bootstrap interval of the effect and p
the Holm-adjusted p-value within the paper (threshold t = null_value + min_effect for
``greater``, null_value − min_effect for ``less``):

* ``holds``: p < alpha and the whole CI lies beyond t in the claimed direction;
* ``fails``: the whole CI lies on the other side of t (the claimed effect is confidently absent);
* ``inconclusive``: otherwise;
* ``not testable here``: a precondition is unmet (the reason is reported).

Deterministic checks (a test that returns p = NaN, e.g. the float64 identity error) hold when the effect
is beyond t in the claimed direction and fail otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

DIRECTIONS = ("greater", "less")
GROUPS = ("generalise", "memorise", "noisy", "adversarial")
CLAIM_KEYS = {
    "id", "statement", "paper_says", "direction", "unit", "beyond_design", "requires", "test", "rule", "figure",
}  # fmt: skip
REQUIRE_KEYS = {"groups", "min_pairs", "min_runs", "min_seeds", "min_models", "min_levels", "keys"}
RULE_KEYS = {"alpha", "null_value", "min_effect"}


class ClaimsError(ValueError):
    """A claims file that cannot be used: the message names the file, the claim, the key and the fix."""


@dataclass(frozen=True)
class Rule:
    alpha: float = 0.05
    null_value: float = 0.0  # the effect under "no effect" (or the threshold of a check)
    min_effect: float = 0.0
    direction: str = "greater"  # the claim's direction: one-sided p-values test it


@dataclass(frozen=True)
class Requirements:
    """Declared preconditions: run groups present, paired units, runs, seeds per cell, models, levels, keys."""

    groups: tuple[str, ...] = ()
    min_pairs: int = 0
    min_runs: int = 0
    min_seeds: int = 0
    min_models: int = 0
    min_levels: int = 0
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    statement: str
    paper_says: str
    direction: str
    unit: str
    beyond_design: bool
    requires: Requirements
    test: Any  # an instantiated test from robustdiag.analysis.claims.tests
    rule: Rule
    figure: bool = True


@dataclass
class ClaimSet:
    paper: str
    title: str
    claims: list[Claim] = field(default_factory=list)
    source: str = ""


def _fail(source: str, where: str, message: str) -> ClaimsError:
    return ClaimsError(f"claims file {source}: {where}: {message}")


def _check_keys(source: str, where: str, node: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise _fail(source, where, f"unknown key(s) {unknown}; valid keys: {sorted(allowed)}")


def _requirements(source: str, where: str, node: Mapping[str, Any] | None) -> Requirements:
    node = dict(node or {})
    _check_keys(source, f"{where}.requires", node, REQUIRE_KEYS)
    groups = tuple(node.get("groups", ()))
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise _fail(
            source, f"{where}.requires.groups", f"unknown group(s) {unknown}; valid groups: {list(GROUPS)}"
        )
    counts = {
        k: int(node.get(k, 0)) for k in ("min_pairs", "min_runs", "min_seeds", "min_models", "min_levels")
    }
    return Requirements(groups=groups, keys=tuple(node.get("keys", ())), **counts)


def _rule(source: str, where: str, node: Mapping[str, Any] | None, direction: str) -> Rule:
    node = dict(node or {})
    _check_keys(source, f"{where}.rule", node, RULE_KEYS)
    try:
        rule = Rule(**{k: float(v) for k, v in node.items()}, direction=direction)
    except (TypeError, ValueError) as err:
        raise _fail(source, f"{where}.rule", f"values must be numbers: {err}") from err
    if not 0.0 < rule.alpha < 1.0:
        raise _fail(source, f"{where}.rule.alpha", f"{rule.alpha} must lie in (0, 1)")
    if rule.min_effect < 0:
        raise _fail(
            source, f"{where}.rule.min_effect", f"{rule.min_effect} must be >= 0 (a size, not a sign)"
        )
    return rule


def _test(source: str, where: str, node: Any) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from robustdiag.analysis.claims import tests

    if not isinstance(node, Mapping) or "_target_" not in node:
        raise _fail(source, f"{where}.test", f"needs a _target_; valid tests: {', '.join(tests.TESTS)}")
    target = str(node["_target_"])
    if target.rsplit(".", 1)[-1] not in tests.TESTS or not target.startswith(
        "robustdiag.analysis.claims.tests."
    ):
        raise _fail(
            source, f"{where}.test._target_",
            f"{target!r} is not a claim test; valid tests: "
            + ", ".join(f"robustdiag.analysis.claims.tests.{t}" for t in tests.TESTS),
        )  # fmt: skip
    try:
        return instantiate(OmegaConf.create(dict(node)))
    except (InstantiationException, TypeError, ValueError) as err:
        cause = err.__cause__ or err
        raise _fail(source, f"{where}.test", f"{type(cause).__name__}: {cause}") from err


def parse_claims(data: Mapping[str, Any], source: str = "<memory>") -> ClaimSet:
    """Validate and build a :class:`ClaimSet` from a parsed claims file."""
    if not isinstance(data, Mapping) or "claims" not in data or "paper" not in data:
        raise _fail(source, "top level", "needs `paper`, `title` and a list `claims`")
    paper = str(data["paper"])
    items = data["claims"]
    if not isinstance(items, Sequence) or not items:
        raise _fail(source, "claims", "must be a non-empty list")
    claims: list[Claim] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"claims[{i}]"
        if not isinstance(item, Mapping):
            raise _fail(source, where, "must be a mapping")
        _check_keys(source, where, item, CLAIM_KEYS)
        missing = [k for k in ("id", "statement", "direction", "unit", "test") if k not in item]
        if missing:
            raise _fail(source, where, f"missing key(s) {missing}")
        claim_id = str(item["id"])
        where = f"claim {claim_id}"
        if claim_id in seen:
            raise _fail(source, where, "duplicate id; every claim id must be unique within a file")
        seen.add(claim_id)
        direction = str(item["direction"])
        if direction not in DIRECTIONS:
            raise _fail(source, f"{where}.direction", f"{direction!r} is not one of {list(DIRECTIONS)}")
        claims.append(
            Claim(
                id=claim_id,
                paper=paper,
                statement=str(item["statement"]),
                paper_says=str(item.get("paper_says", item["statement"])),
                direction=direction,
                unit=str(item["unit"]),
                beyond_design=bool(item.get("beyond_design", False)),
                requires=_requirements(source, where, item.get("requires")),
                test=_test(source, where, item["test"]),
                rule=_rule(source, where, item.get("rule"), direction),
                figure=bool(item.get("figure", True)),
            )
        )
    return ClaimSet(paper=paper, title=str(data.get("title", paper)), claims=claims, source=source)


def load_claims(path: Path) -> ClaimSet:
    """Read and validate one claims YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ClaimsError(
            f"claims file {path} does not exist; pass a YAML file (see robustdiag/conf/claims/)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ClaimsError(f"claims file {path} is not valid YAML: {err}") from err
    return parse_claims(data, str(path))
