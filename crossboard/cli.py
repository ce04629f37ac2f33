"""The bridge between tasks.py and the package: one line per error, the right exit code."""
from __future__ import annotations

import functools
import signal
import sys

from invoke.exceptions import Exit

from .errors import CrossboardError, exit_code_for


def reports_errors(task_body):
    """Run a task body; turn crossboard errors and Ctrl-C into one line and an exit code."""

    @functools.wraps(task_body)
    def wrapper(*args, **kwargs):
        # CI systems cancel with SIGTERM: unwind as for Ctrl-C, so containers are removed and the
        # manifest says the build was interrupted.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return task_body(*args, **kwargs)
        except (CrossboardError, KeyboardInterrupt) as error:
            message = str(error) or "interrupted"
            print(f"crossboard: error: {message}", file=sys.stderr, flush=True)
            raise Exit(code=exit_code_for(error)) from None

    return wrapper


def _interrupt(signum, frame):
    raise KeyboardInterrupt
