"""Claims as data, their tests and verdicts: what turns a sweep into conclusions (DESIGN §4.8).

``robustdiag/conf/claims/<paper>.yaml`` declares each claim (statement, direction, unit, test, decision rule,
preconditions); :func:`evaluate_claims` runs them on the complete runs of each dataset and returns one
:class:`ClaimResult` per (claim, dataset), with Holm-adjusted p-values within each paper and a verdict
``holds`` / ``fails`` / ``inconclusive`` / ``not testable here``.
"""

from robustdiag.analysis.claims.data import ClaimData, group_of
from robustdiag.analysis.claims.evaluate import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_TESTABLE,
    VERDICTS,
    ClaimResult,
    claims_table,
    default_claim_files,
    evaluate_claims,
    load_claim_sets,
    verdict,
)
from robustdiag.analysis.claims.spec import Claim, ClaimsError, ClaimSet, Rule, load_claims, parse_claims
from robustdiag.analysis.claims.tests import Finding, NotTestable

__all__ = [
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "NOT_TESTABLE",
    "VERDICTS",
    "Claim",
    "ClaimData",
    "ClaimResult",
    "ClaimSet",
    "ClaimsError",
    "Finding",
    "NotTestable",
    "Rule",
    "claims_table",
    "default_claim_files",
    "evaluate_claims",
    "group_of",
    "load_claim_sets",
    "load_claims",
    "parse_claims",
    "verdict",
]
