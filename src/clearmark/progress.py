"""Progress bars that read well where they end up: live on a terminal, log lines elsewhere.

Airflow 3 files everything a task writes to stderr at error level, and a bar redrawn with
carriage returns becomes one long line in any log file.  So off a terminal the same tqdm
bar is sent as an INFO record of the ``clearmark.progress`` logger, at most every
:data:`LOG_INTERVAL_S` seconds and once at the end; in Airflow those records land in the
task log at info level, and the CLI prints them on stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

LOG_INTERVAL_S = 30.0
log = logging.getLogger("clearmark.progress")


class _LogLines:
    """The file tqdm writes to off a terminal: each redraw becomes one log record."""

    def write(self, text: str) -> int:
        line = text.strip("\r\n ")
        if line:
            log.info(line)
        return len(text)

    def flush(self) -> None:
        """Records are complete when written."""


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        """The stream is always the current ``sys.stderr``."""


def log_to_stderr() -> None:
    """Print clearmark's own log records (progress off a terminal, notices) on stderr; idempotent."""
    logger = logging.getLogger("clearmark")
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, _CurrentStderr) for handler in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)


def progress_bar(iterable: Iterable[Any] | None = None, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)`` on a terminal; off one, the bar as periodic log lines."""
    from tqdm import tqdm

    if options.get("disable") or sys.stderr.isatty():
        return tqdm(iterable, **options)
    return tqdm(iterable, file=_LogLines(), mininterval=LOG_INTERVAL_S, ascii=True, **options)
