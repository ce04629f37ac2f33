"""Error kinds and the one place that maps them to exit codes (as kas does).

A UserError is something the user can fix in their input (board file, option, module folder);
an InfrastructureError is the machine around us (Docker engine, network, disk); a StepFailed
is a build or deploy step that ran and failed. Tasks raise; only `exit_code_for` decides codes.
"""

from __future__ import annotations


class CrossboardError(Exception):
    """Base of every error crossboard reports as one line, without a traceback."""


class UserError(CrossboardError):
    """Bad input: a board file, an option, a module folder."""


class InfrastructureError(CrossboardError):
    """The machine around us failed: Docker engine, network, a missing host tool."""


class StepFailed(CrossboardError):
    """A build or deploy step ran and failed."""


class Cancelled(CrossboardError):
    """Work stopped because the user interrupted it (Ctrl-C, SIGTERM)."""


class FailedElsewhere(CrossboardError):
    """crossboard running elsewhere (on a remote Docker engine) failed: its message and exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


EXIT_CODES: dict[type[BaseException], int] = {
    UserError: 2,
    InfrastructureError: 3,
    StepFailed: 1,
    Cancelled: 130,
    KeyboardInterrupt: 130,
}


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, FailedElsewhere):  # mapped there already
        return error.exit_code
    for kind, code in EXIT_CODES.items():
        if isinstance(error, kind):
            return code
    return 1
