"""Bulk removal: safe archive handling, detection, restoring (unblending, inpainting) and per-file reports."""

from clearmark.removal import restore as restore  # registers the default restorer with the inpainters
