"""A coverage-guided campaign plan: runs in generations, each steered by the last.

With `faultline campaign --guided`, each configuration's runs are handed out in
generations of `batch` seeds. A generation starts only when the previous one has
finished; its results are fed to the configuration's `nemesis.guided.Guide` in plan
order (seed, then configuration), never in the order workers finished them, so the
same seeds give the same sequence of schedules on one worker or many. Each request
carries its schedule, so workers that share no disk with the campaign run it too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import msgspec

from harness.campaign.matrix import Matrix
from harness.campaign.task import RunRecord, RunRequest
from harness.coverage import Coverage, schedule_contexts
from harness.run_config import ConfigError, RunConfig
from harness.runner import _topic_homes, generate_for
from nemesis.guided import Guide
from nemesis.ops import Schedule

# Seeds per generation (per configuration) unless the campaign says otherwise.
DEFAULT_BATCH = 4
GUIDED_TARGETS = ("sim", "process")


def base_schedule(config: RunConfig, seed: int) -> Schedule:
    """The plain generator's schedule for `config` with `seed` (its --schedule, when it
    follows one, whatever the seed), as the runner would make it."""
    given = config.fault_schedule()
    if given is not None:
        return given
    clients = config.client_names if config.target == "sim" else []
    return generate_for(config, nodes=config.node_names, clients=clients,
                        topics=list(_topic_homes(config)), seed=seed)


class GuidedPlan:
    """The campaign driver's queue of runs (`take`, `settle`, `len`, `clear`) for a
    guided campaign; see the module docstring."""

    def __init__(self, matrix: Matrix, requests: Sequence[RunRequest], *,
                 batch: int = DEFAULT_BATCH) -> None:
        if batch < 1:
            raise ConfigError(f"--guided-batch must be at least 1, not {batch}")
        if not matrix.seeds:
            raise ConfigError("a guided campaign needs at least one seed")
        self.guides: dict[int, Guide] = {}
        for cell in matrix.runnable:
            config = cell.config(matrix.seeds[0])
            if config.target not in GUIDED_TARGETS:
                raise ConfigError(f"--guided needs the sim or process target; configuration "
                                  f"{cell.index} runs on {config.target}")
            logs = [f"{t}/{p}" for t in _topic_homes(config) for p in range(config.partitions)]
            self.guides[cell.index] = Guide(matrix.seeds[0], _base_for(config), logs=logs,
                                            contexts=schedule_contexts)
        order = {seed: i for i, seed in enumerate(matrix.seeds)}
        self._generations: deque[list[RunRequest]] = deque()
        current: list[RunRequest] = []
        for request in requests:  # seed-major
            if current and order[request.seed] // batch != order[current[0].seed] // batch:
                self._generations.append(current)
                current = []
            current.append(request)
        if current:
            self._generations.append(current)
        self._ready: deque[RunRequest] = deque()
        self._running: list[RunRequest] = []  # the generation under way, in plan order
        self._done: dict[str, RunRecord | None] = {}

    def __len__(self) -> int:
        """Runs not handed out yet."""
        return len(self._ready) + sum(len(g) for g in self._generations)

    def take(self) -> RunRequest | None:
        """The next run, or None while the current generation has runs in flight."""
        if not self._ready:
            if any(r.run_name not in self._done for r in self._running):
                return None
            self._feed_finished()
            if not self._generations:
                return None
            self._running = [self._with_schedule(r) for r in self._generations.popleft()]
            self._ready.extend(self._running)
        return self._ready.popleft()

    def settle(self, request: RunRequest, record: RunRecord | None) -> None:
        """A run handed out finished (`record`), or was skipped (None)."""
        self._done[request.run_name] = record

    def clear(self) -> None:
        """Hand out nothing more."""
        self._ready.clear()
        self._generations.clear()

    def _with_schedule(self, request: RunRequest) -> RunRequest:
        schedule = self.guides[request.cell].propose(request.seed)
        return RunRequest(cell=request.cell, seed=request.seed, config=request.config,
                          run_name=request.run_name, schedule=msgspec.to_builtins(schedule))

    def _feed_finished(self) -> None:
        for request in self._running:
            record = self._done.get(request.run_name)
            if record is None or record.error is not None or request.schedule is None:
                continue
            schedule = msgspec.convert(request.schedule, Schedule)
            states = Coverage.from_json(record.coverage).states
            self.guides[request.cell].feed(schedule, states)
        self._running = []


def _base_for(config: RunConfig) -> Callable[[int], Schedule]:
    def base(seed: int) -> Schedule:
        return base_schedule(config, seed)
    return base
