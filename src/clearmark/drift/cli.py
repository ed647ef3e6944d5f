"""Placeholder: the owner of this area replaces it with the area's commands."""

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root ``clearmark`` app."""
