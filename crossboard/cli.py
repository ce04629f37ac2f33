"""The bridge between tasks.py and the package: one line per error, the right exit code."""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback

from invoke.exceptions import Exit

from .errors import CrossboardError, UserError, exit_code_for


def reports_errors(task_body):
    """Run a task body; turn crossboard errors and Ctrl-C into one line and an exit code."""

    @functools.wraps(task_body)
    def wrapper(*args, **kwargs):
        # CI systems cancel with SIGTERM, a closed terminal sends SIGHUP: unwind as for Ctrl-C, so
        # containers are removed and the manifest says the build was interrupted.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGHUP, _interrupt)
        try:
            return task_body(*args, **kwargs)
        except (CrossboardError, KeyboardInterrupt) as error:
            message = str(error) or "interrupted"
            print(f"crossboard: error: {message}", file=sys.stderr, flush=True)
            raise Exit(code=exit_code_for(error)) from None
        except BrokenPipeError:  # the reader went away (`| head`): nothing more to say, as any command does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=128 + signal.SIGPIPE) from None
        except Exception as error:  # a bug of ours: one line, and the traceback when asked for
            if os.environ.get("CROSSBOARD_DEBUG"):
                traceback.print_exc()
            print(
                f"crossboard: internal error: {type(error).__name__}: {error} (a bug in crossboard: please report "
                "it; CROSSBOARD_DEBUG=1 shows the traceback)",
                file=sys.stderr,
                flush=True,
            )
            raise Exit(code=1) from None

    return wrapper


def seconds_option(text: str | None, option: str, default: float) -> float:
    """A number of seconds given on the command line (invoke passes it as text: its own conversion
    would end in a traceback)."""
    if text is None:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):  # also refuses nan
        raise UserError(f"{option}: expected a number of seconds (0 or more), got {text!r}")
    return seconds


def _interrupt(signum, frame):
    raise KeyboardInterrupt
