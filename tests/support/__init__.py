"""Test helpers shared by several test modules (stand-in servers, hostile inputs, tiny models)."""
