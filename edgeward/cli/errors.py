"""The CLI's errors: each carries the one line the user sees and the exit status."""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class CliError(Exception):
    """An error reported as ``edgeward: <message>`` with exit status ``code``."""

    code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    """The command line is wrong (exit 2, as argparse does)."""

    code = EXIT_USAGE


class HubUnreachable(CliError):
    """No usable answer from the hub at all: later requests would fail the same way."""


class ApiError(CliError):
    """The hub answered with an error ``Status``; ``reason`` is its Kubernetes reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class TokenRefused(ApiError):
    """The hub wants a token, or refused ours (401): every later request would be refused too."""
