"""Helpers shared by tests (services used by tests and by worker subprocesses)."""
