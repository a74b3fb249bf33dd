"""The history model: JSON Lines events of DESIGN.md section 4, read and written as a stream."""

from history.errors import HistoryError
from history.reader import HistoryReader, Step, read_history
from history.writer import HistoryWriter, encode_event, write_history

__all__ = [
    "HistoryError",
    "HistoryReader",
    "HistoryWriter",
    "Step",
    "encode_event",
    "read_history",
    "write_history",
]
