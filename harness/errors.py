"""Errors that carry a user-facing sentence (never shown as a traceback)."""
from __future__ import annotations


class HarnessError(Exception):
    """An error the user can fix; ``str(err)`` is one clear sentence. ``exit_code`` per RESULTS.md §3."""

    exit_code = 1


class ConfigError(HarnessError):
    """A bad config value or command-line option; names the dotted key path."""

    exit_code = 2

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class TargetError(HarnessError):
    """The target could not be reached, or the embedded target did not start."""

    exit_code = 5
