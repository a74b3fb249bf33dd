"""Checkers: pure functions from a history to a verdict.

`check_file(path)` reads, validates and checks a history in one streaming pass;
`check_steps(steps)` checks already-read `(event, invoke)` pairs.
"""

from checkers.anomalies import ANOMALIES, FAMILIES, FAMILY_OF, MODE_ALLOWED, allowed_for
from checkers.verdict import Verdict, check_file, check_steps

__all__ = [
    "ANOMALIES",
    "FAMILIES",
    "FAMILY_OF",
    "MODE_ALLOWED",
    "Verdict",
    "allowed_for",
    "check_file",
    "check_steps",
]
