"""Kaggle datasets through the official ``kagglehub`` client, with errors that say what to fix.

Credentials are whatever kagglehub accepts: ``KAGGLE_API_TOKEN``, or
``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, or ``~/.kaggle/kaggle.json`` (folder from
``KAGGLE_CONFIG_DIR``).  Under Airflow the DAG maps the login/password of the
connection ``kaggle_default`` to ``KAGGLE_USERNAME``/``KAGGLE_KEY``.  Downloads land
in kagglehub's cache (``KAGGLEHUB_CACHE``, default ``~/.cache/kagglehub``) and are
reused on the next run of the same dataset version.  Registers the source kind ``kaggle``
(imported by the package ``clearmark.data``, so the kind exists wherever sources are read).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from clearmark.data.sources import SourceKind, SourceUnavailable, register_source

if TYPE_CHECKING:
    from clearmark.data.sources import SourceSpec
    from clearmark.settings import Settings

HANDLE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(/versions/[0-9]+)?$")
CREDENTIALS_ADVICE = (
    "Set KAGGLE_USERNAME and KAGGLE_KEY (from kaggle.com > Settings > API > Create New Token), "
    "or KAGGLE_API_TOKEN, or put kaggle.json in ~/.kaggle (or $KAGGLE_CONFIG_DIR). Under Airflow, "
    "fill the login (user name) and password (key) of the connection 'kaggle_default'."
)


class KaggleError(SourceUnavailable):
    """A Kaggle download failed; the message says what to check."""


def kaggle_endpoint() -> str:
    """The API endpoint kagglehub talks to (``KAGGLE_API_ENVIRONMENT`` selects it)."""
    from kagglesdk.kaggle_env import get_endpoint, get_env

    return get_endpoint(get_env())


def require_credentials() -> None:
    """Raise :class:`KaggleError` naming the variables to set when kagglehub has no credentials."""
    from kagglehub.config import get_kaggle_credentials

    try:
        credentials = get_kaggle_credentials()
    except ValueError as exc:  # a kaggle.json that is not valid JSON or lacks a key
        raise KaggleError(f"Kaggle credentials are unusable: {exc}. {CREDENTIALS_ADVICE}") from exc
    if credentials is None:
        raise KaggleError(f"No Kaggle credentials found. {CREDENTIALS_ADVICE}")


def download_dataset(handle: str) -> Path:
    """Download (or reuse from kagglehub's cache) the dataset ``owner/name[/versions/N]``; returns its folder."""
    import kagglehub
    import requests

    if not HANDLE_PATTERN.match(handle):
        raise KaggleError(f"Kaggle handle {handle!r} is not of the form 'owner/dataset' or 'owner/dataset/versions/N'.")
    require_credentials()
    endpoint = kaggle_endpoint()
    try:
        return Path(kagglehub.dataset_download(handle))
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in {401, 403}:
            raise KaggleError(
                f"Kaggle at {endpoint} refused access to dataset {handle} (HTTP {status}). The credentials are wrong "
                f"or this account has not accepted the dataset's terms on kaggle.com. {CREDENTIALS_ADVICE}"
            ) from exc
        if status == 404:
            raise KaggleError(
                f"Kaggle dataset {handle} was not found at {endpoint} (HTTP 404); check the 'handle' in the sources file."
            ) from exc
        raise KaggleError(f"Kaggle at {endpoint} answered HTTP {status} for dataset {handle}: {exc}") from exc
    except requests.ConnectionError as exc:
        raise KaggleError(
            f"Kaggle API at {endpoint} is unreachable for dataset {handle}: check the network, proxy settings "
            "(HTTPS_PROXY) and KAGGLE_API_ENVIRONMENT."
        ) from exc
    except requests.Timeout as exc:
        raise KaggleError(f"Kaggle API at {endpoint} timed out for dataset {handle}; retry later or check the network.") from exc


@register_source("kaggle")
class KaggleSource(SourceKind):
    """A Kaggle dataset, by handle."""

    location = "handle"

    def check(self, source: SourceSpec) -> None:
        if not (source.handle and HANDLE_PATTERN.match(source.handle)):
            raise ValueError("kind 'kaggle' needs 'handle: owner/dataset' (optionally '/versions/N')")

    def fetch(self, source: SourceSpec, settings: Settings) -> Path:
        return download_dataset(str(source.handle))
