"""Former `faultline sim`, folded into `faultline run --check-determinism` (issue 6).

Only the name `first_divergence` remains here, for importers that predate the move;
it lives in `harness.runner`.
"""

from harness.runner import first_divergence

__all__ = ["first_divergence"]
