"""Errors a user can fix, and the exit codes of the ``clearmark`` command.

The ``clearmark`` app (:mod:`clearmark.cli`) prints what :func:`user_error` makes of an
error (a :class:`ClearmarkError`, a refused connection, a denied permission) as one line,
``error: ...``, and exits with :data:`EXIT_FAILED`; errors it does not know keep their
traceback, because they are bugs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clearmark.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1  # nothing was done: bad input or configuration, no permission, a service down
EXIT_PARTIAL = 3  # the run finished, but some members failed (copied unchanged or left out; see the report)
# 2 is click's: a bad option or argument.


class ClearmarkError(Exception):
    """An error the user can fix: the message says what went wrong, ``hint`` what to do."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} {self.hint}" if self.hint else message


def user_error(exc: BaseException, settings: Settings | None = None) -> str | None:
    """What went wrong and what to do, in one line, for an error the user can fix; ``None`` for a bug.

    Known: a :class:`~clearmark.errors.ClearmarkError`; a connection that failed (a
    ``ConnectionError`` anywhere in the exception's chain: refused, reset, timed out,
    as boto3, requests, urllib3 and MLflow raise them), named after the configured S3
    or MLflow endpoint of ``settings`` it went to; a ``PermissionError``.
    """
    if isinstance(exc, ClearmarkError):
        return str(exc)
    chain = _chain(exc)
    if any(isinstance(link, ConnectionError) for link in chain):
        return _unreachable(chain, settings)
    denied = next((link for link in chain if isinstance(link, PermissionError)), None)
    if denied is not None:
        where = f"{denied.filename}" if denied.filename else "a file or folder"
        return f"permission denied on {where} ({denied.strerror or denied}). Choose a path you may write to, or change its permissions."
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain


def _unreachable(chain: list[BaseException], settings: Settings | None) -> str:
    """Which configured service did not answer, and how to start or point at it."""
    from urllib.parse import urlsplit

    text = " ".join(str(link) for link in chain)
    endpoints = (
        ("Object storage (S3)", settings.s3_endpoint_url, "CLEARMARK_S3_ENDPOINT_URL"),
        ("MLflow", settings.mlflow_tracking_uri, "CLEARMARK_MLFLOW_TRACKING_URI"),
    ) if settings is not None else ()
    for service, url, variable in endpoints:
        parts = urlsplit(url or "")
        if parts.hostname and parts.port and re.search(rf"{re.escape(parts.hostname)}:{parts.port}\b|port={parts.port}\b", text):
            return (
                f"{service} at {url} does not answer. Start the embedded stack with `clearmark stack up` "
                f"(`clearmark stack status` shows it), or set {variable} to a running server."
            )
    return f"a connection failed ({chain[0]}). Check that the services clearmark uses answer: `clearmark stack status`."
