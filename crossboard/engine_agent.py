"""The far end of a build on an engine that cannot see the project (engine_build.py): run inside the
toolchain image, it builds as `invoke build --runtime host` would, and leaves its error, if any, in a
file for the near end to report as its own one line.

    python3 -m crossboard.engine_agent REQUEST_FILE RESULT_FILE
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

from .errors import CrossboardError, exit_code_for


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(request_file: str, result_file: str) -> int:
    from .commands import build
    from .pipeline.context import BuildOptions
    from .settings import Settings

    # the near end stops a build it was told to stop with SIGTERM: unwind as for Ctrl-C
    signal.signal(signal.SIGTERM, _interrupt)
    request = json.loads(Path(request_file).read_text())
    options = BuildOptions(**{**request["options"], "only": frozenset(request["options"]["only"])})
    try:
        build(request["board"], Settings.from_environment(), options, "host", request["kernel_source"], request["toolchain"])
    except (CrossboardError, KeyboardInterrupt) as error:
        return _report(result_file, str(error) or "interrupted", exit_code_for(error))
    except Exception as error:  # a bug of ours: one line there too, as the command line says it
        if os.environ.get("CROSSBOARD_DEBUG"):
            traceback.print_exc()
        return _report(result_file, f"internal error on the engine: {type(error).__name__}: {error} (a bug in crossboard)", 1)
    return 0


def _report(result_file: str, message: str, code: int) -> int:
    Path(result_file).write_text(json.dumps({"error": message, "code": code}))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
