"""Seeding trio's scheduler, so the order tasks run in is a function of the seed.

trio shuffles each batch of runnable tasks with the module-level `random.Random`
`trio._core._run._r`. When `_ALLOW_DETERMINISTIC_SCHEDULING` is true (trio sets it
for Hypothesis) it first sorts the batch by each task's creation counter, so the
shuffle depends only on `_r`'s state and not on the order wakeups happened to be
queued in. Setting both, and seeding `_r`, makes one `trio.run` reproducible.
Both are process-global, so they are restored when the run ends.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from trio._core import _run as trio_run_module


def derive_rng(seed: int, *labels: str) -> random.Random:
    """An independent `random.Random` for `labels`, determined by `seed` alone.

    String seeds are hashed with SHA-512 by `random.Random`, so the result does not
    depend on PYTHONHASHSEED.
    """
    return random.Random("/".join([str(seed), *labels]))


@contextmanager
def seeded_scheduler(seed: int) -> Iterator[None]:
    """Within the block, trio schedules tasks in an order determined by `seed`."""
    saved_state = trio_run_module._r.getstate()
    saved_flag = trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING
    trio_run_module._r.seed(derive_rng(seed, "trio-scheduler").getrandbits(64))
    trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        yield
    finally:
        trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        trio_run_module._r.setstate(saved_state)
