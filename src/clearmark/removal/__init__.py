"""Bulk removal: safe archive handling, detection, inpainting and per-file reports."""
