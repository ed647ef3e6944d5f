"""Free-disk check for the embedded SeaweedFS's data folder.

A bottom module: the stack runs it before starting SeaweedFS, and storage runs it to
explain the store's InternalError, so neither has to import the other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# SeaweedFS's volume server turns every volume read-only once less than 1 % of its disk is free
# (`weed mini` has no flag for it); writes then fail only after minutes of retries.
SEAWEED_MIN_FREE_FRACTION = 0.01
DISK_HEADROOM_BYTES = 1 << 30  # room for the data a run writes before the threshold bites


class DiskSpaceError(RuntimeError):
    """Too little free disk for SeaweedFS to accept writes; the message says what to do."""


def check_disk_space(data_dir: Path) -> None:
    """Raise :class:`DiskSpaceError` unless SeaweedFS would accept writes in ``data_dir`` with headroom."""
    usage = shutil.disk_usage(data_dir)
    needed = usage.total * SEAWEED_MIN_FREE_FRACTION + DISK_HEADROOM_BYTES
    if usage.free < needed:
        gib = 1 << 30
        raise DiskSpaceError(
            f"Not enough free disk for SeaweedFS in {data_dir}: {usage.free / gib:.1f} GiB free of {usage.total / gib:.0f} GiB, "
            f"it needs {needed / gib:.1f} GiB (SeaweedFS refuses every write once less than 1 % of the disk is free, plus 1 GiB "
            f"of headroom). Free disk space, or set CLEARMARK_HOME to a directory on a disk with more room."
        )
