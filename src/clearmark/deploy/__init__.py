"""Deployment checks: preflight of a configuration before services start."""
