"""The exit codes of every `faultline` command, and the one rule that maps a verdict to one.

A CI job gates on these, so they never change meaning:

- 0 `VALID`: nothing wrong was found (for a campaign: every expectation held);
- 1 `ANOMALIES`: anomalies were found (a campaign: an expectation was violated);
- 2 `BAD_INPUT`: bad input or a setup error; nothing was checked;
- 3 `UNKNOWN`: nothing was disproved, but acknowledged messages were never read, so
  nothing was proved either (a longer final read could settle it);
- 4 `HARNESS_ERROR`: faultline itself was wrong: the sim's ground-truth oracle found a
  send recorded `fail` (certainly not appended) in a broker's log (`harness.oracle`).
  The history cannot be trusted, so this wins over every verdict of the system; a
  campaign exits 4 if any run had one;
- 130 `INTERRUPTED`: stopped by Ctrl-C (128 + SIGINT, as shells report it);
- 137 `CRASHED`: `faultline broker` died on purpose as SIGKILL would (128 + 9).
"""

from __future__ import annotations

VALID = 0
ANOMALIES = 1
BAD_INPUT = 2
UNKNOWN = 3
HARNESS_ERROR = 4
INTERRUPTED = 130
CRASHED = 137

# What `--help` and README say about them, in one place.
HELP = ("Exit codes: 0 valid, 1 anomalies found, 2 bad input or setup error, 3 unknown "
        "(acknowledged messages never read; nothing disproved), 4 harness error (sim: "
        "faultline recorded `fail` for a send a broker appended; a faultline bug, not the "
        "system's), 130 interrupted.")


def for_verdict(valid: bool | str, *, harness_errors: int = 0) -> int:
    """The exit code of a checker verdict's `valid` (True, False or "unknown"), or
    HARNESS_ERROR when the run's oracle found any harness error."""
    if harness_errors:
        return HARNESS_ERROR
    if valid is True:
        return VALID
    if valid == "unknown":
        return UNKNOWN
    return ANOMALIES
