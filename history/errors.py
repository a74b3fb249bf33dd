"""The one error a history file can raise: where it is wrong and what is wrong there."""

from __future__ import annotations


class HistoryError(Exception):
    """A history file is malformed at a given line.

    `str(error)` is `path:line: what is wrong`, the form compilers use, so editors and
    terminals can jump to the spot. `line` is 1-based; 0 means the file as a whole.
    """

    def __init__(self, path: str, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")
