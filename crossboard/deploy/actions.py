"""What deploy does on a board once the files are there: load modules, read their kernel messages,
run the apps. Every value that reaches the remote shell is quoted."""

from __future__ import annotations

import shlex
import time
import uuid
from dataclasses import asdict, dataclass, field

from ..board.schema import App, ModuleExpect
from ..errors import UserError
from ..remote.connection import Session
from . import ktap
from .preflight import BoardFacts


@dataclass
class ModuleReport:
    name: str
    loaded: bool = False
    unloaded: bool = False
    refused: str = ""
    error: str = ""
    load_messages: list[str] = field(default_factory=list)
    unload_messages: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    tests: list[dict] = field(default_factory=list)  # its KUnit suites' results, run as it loaded
    before_the_board: bool = False  # refused by the checks before anything ran on the board

    @property
    def ok(self) -> bool:
        return not (self.refused or self.error or self.missing or any(test["status"] == "failed" for test in self.tests))


@dataclass
class AppReport:
    name: str
    exit_code: int | None = None  # a service's: when it ended by itself
    stdout: str = ""
    stderr: str = ""
    refused: str = ""
    missing: list[str] = field(default_factory=list)
    service: bool = False
    ready_seconds: float | None = None  # a service: how long it took to get ready
    kept: bool = False  # a service left running
    error: str = ""  # a service that did not get ready, or did not keep running
    before_the_board: bool = False  # refused by the checks before anything ran on the board

    @property
    def ok(self) -> bool:
        ended_well = self.service or self.exit_code == 0
        return not self.refused and not self.error and ended_well and not self.missing


def as_dict(report: ModuleReport | AppReport) -> dict:
    """As deploy.json has it: what was refused before the board was asked is its name and why."""
    if report.refused and report.before_the_board:
        return {"name": report.name, "refused": report.refused, "ok": False}
    fields = asdict(report)
    del fields["before_the_board"]
    return {**fields, "ok": report.ok}


def check_privilege(board: Session, facts: BoardFacts) -> None:
    """Loading modules and reading the kernel log need root: as root, or through sudo -n (whether sudo
    asks for a password shows on the first privileged command)."""
    user = facts.user or board.target.user
    if user == "root":
        return
    if not board.sudo:
        raise UserError(
            f"{board.target.name}: {user} is not root and connection.sudo is false: "
            "set connection.sudo: true (with NOPASSWD sudo on the board) or log in as root"
        )


MARK_PREFIX = "crossboard-mark-"  # written to the kernel log before each action whose messages deploy reads


def _messages_since_mark(board: Session, action: str) -> tuple[int, str, list[str]]:
    """Run `action` as root between a mark written to the kernel log and a read of it, in one round
    trip; only the kernel messages after the mark belong to the action."""
    mark = f"{MARK_PREFIX}{uuid.uuid4().hex}"
    script = f'echo {mark} > /dev/kmsg; {action}; echo "{mark} exit=$?"; dmesg'
    result = board.run(script, privileged=True)
    head, _, log = result.stdout.partition(f"{mark} exit=")
    code_text, _, log = log.partition("\n")
    lines = log.splitlines()
    after = next((i for i in range(len(lines) - 1, -1, -1) if mark in lines[i]), -1)
    code = int(code_text) if code_text.isdigit() else result.code or 1
    return code, (result.stderr or head).strip(), lines[after + 1 :]


def boot_tests(board: Session) -> list[dict]:
    """The KUnit results in the kernel log from before crossboard first loaded a module there: the suites
    built into the kernel, run at boot (the `kernel` crate's doctests). Empty when the log has lost them."""
    lines = board.run("dmesg", privileged=True).stdout.splitlines()
    first_mark = next((i for i, line in enumerate(lines) if MARK_PREFIX in line), len(lines))
    return [asdict(result) for result in ktap.parse(lines[:first_mark])]


def _missing(expected: list[str], lines: list[str]) -> list[str]:
    return [text for text in expected if not any(text in line for line in lines)]


# Which modules crossboard loaded: a marker each in a tmpfs, so a reboot forgets them with the modules.
LOADED_BY_US = "/run/crossboard/loaded"
NOT_OURS = 90  # the exit code of a load refused because a module of that name is loaded and not ours


def load_module(
    board: Session, remote_path: str, name: str, expect: ModuleExpect, keep_loaded: bool, loaded: frozenset[str]
) -> ModuleReport:
    """Replace a copy crossboard loaded before, insmod, check the kernel's messages, rmmod unless kept.
    A module of that name that crossboard did not load (the board's own) is never unloaded."""
    report = ModuleReport(name)
    marker = shlex.quote(f"{LOADED_BY_US}/{name}")
    load = f"insmod {shlex.quote(remote_path)} && mkdir -p {LOADED_BY_US} && : > {marker}"
    if name in loaded:
        # one round trip for the reload: the inner loop pays for each one
        load = f"if [ -e {marker} ]; then rmmod {shlex.quote(name)} && {load}; else exit {NOT_OURS}; fi"
    code, output, report.load_messages = _messages_since_mark(board, load)
    if code == NOT_OURS:
        report.refused = (
            f"a module named {name} is loaded and crossboard did not load it (it may be the "
            f"board's own): not replacing it; unload it yourself (rmmod {name}) if it should go"
        )
        return report
    if code != 0:
        report.error = f"{'rmmod of the loaded copy or ' if name in loaded else ''}insmod failed: {output}"
        return report
    report.loaded = True
    report.missing = _missing(expect.load, report.load_messages)
    report.tests = [asdict(result) for result in ktap.parse(report.load_messages)]
    if keep_loaded:
        return report
    code, output, report.unload_messages = _messages_since_mark(board, f"rmmod {shlex.quote(name)} && rm -f {marker}")
    if code != 0:
        report.error = f"rmmod failed: {output}"
        return report
    report.unloaded = True
    report.missing += _missing(expect.unload, report.unload_messages)
    return report


# Runs an app ("$@") so that it ends with its connection: a command started over SSH without a terminal
# keeps running when the connection closes (an interrupted deploy, a lost link), but its stdin, which
# crossboard keeps open, then ends. The guard's own output goes nowhere, so it never holds the channel.
APP_GUARD = """exec 3<&0
"$@" </dev/null &
app=$!
{ cat <&3; kill -TERM "$app"; } >/dev/null 2>&1 &
guard=$!
wait "$app"
code=$?
kill "$guard" 2>/dev/null
exit "$code"
"""


def run_app(board: Session, remote_path: str, name: str, app: App) -> AppReport:
    report = AppReport(name)
    command = " ".join(
        shlex.quote(part) for part in ["sh", "-c", APP_GUARD, "app", "timeout", str(app.timeout), remote_path, *app.args]
    )
    result = board.run(command, timeout=app.timeout + 30)
    report.exit_code, report.stdout, report.stderr = result.code, result.stdout, result.stderr
    if result.code == 124:
        report.stderr += f"\n(stopped after {app.timeout} s)"
    report.missing = _missing(app.expect_stdout, result.stdout.splitlines())
    return report


# Shell functions both service scripts use: whether the pid recorded for a service is still that
# service's group (pids are reused), and stopping its whole group, SIGTERM then SIGKILL after 5 s.
# A board's busybox may not sleep fractions of a second: then it sleeps a second.
SERVICE_FUNCTIONS = """ours() {
  tr '\\0' '\\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qxF "$base"
}
pause() {
  sleep 0.2 2>/dev/null || sleep 1
}
stop_group() {
  kill -TERM -"$1" 2>/dev/null
  deadline=$(($(date +%s) + 5))
  while kill -0 -"$1" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do pause; done
  kill -KILL -"$1" 2>/dev/null
}
"""

# A service (an app that runs in the background): started in a session of its own, so that stopping it
# stops what it started too, with its output into files beside its pid; an earlier copy that a deploy
# left running is stopped first. Then waited for, a bounded time, until it listens on its port (the
# kernel's socket tables: LISTEN is state 0A) or has printed its line. Prints one word: ready, exited
# (with its exit code), late, or no-setsid.
SERVICE_START = (
    SERVICE_FUNCTIONS
    + """state=$1 name=$2 timeout=$3 port=$4 line=$5; shift 5
command -v setsid >/dev/null 2>&1 || { echo no-setsid; exit 0; }
mkdir -p "$state"
base="$state/$name"
if [ -f "$base.pid" ]; then
  old=$(cat "$base.pid")
  ours "$old" && stop_group "$old"
fi
rm -f "$base.status" "$base.out" "$base.err"  # what an earlier copy printed is not this one's
setsid sh -c '"$@" </dev/null >"$0.out" 2>"$0.err"; echo $? >"$0.status"' "$base" "$@" </dev/null >/dev/null 2>&1 &
echo $! > "$base.pid"
listening() {
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v port=":$(printf %04X "$port")" '
    substr($2, length($2) - 4) == port && $4 == "0A" { found = 1 } END { exit !found }'
}
deadline=$(($(date +%s) + timeout + 1))  # at least timeout seconds, by whole seconds
while [ "$(date +%s)" -lt "$deadline" ]; do
  if { [ -n "$port" ] && listening; } || { [ -n "$line" ] && grep -qF -- "$line" "$base.out" 2>/dev/null; }; then
    echo ready; exit 0
  fi
  if [ -f "$base.status" ]; then echo "exited $(cat "$base.status")"; exit 0; fi
  pause
done
echo late
"""
)

# The service checked (still running?), then stopped unless kept; prints its state (running, or exited
# with its code), then its output and errors after their markers.
SERVICE_STOP = (
    SERVICE_FUNCTIONS
    + """state=$1 name=$2 keep=$3 marker=$4
base="$state/$name"
pid=$(cat "$base.pid" 2>/dev/null)
if [ -f "$base.status" ]; then echo "exited $(cat "$base.status")"
elif [ -n "$pid" ] && ours "$pid"; then echo running
else echo "exited unknown"; fi
if [ "$keep" = no ] && [ -n "$pid" ]; then
  { ours "$pid" || kill -0 -"$pid" 2>/dev/null; } && stop_group "$pid"
  rm -f "$base.pid"
fi
echo "$marker"; tail -c 65536 "$base.out" 2>/dev/null
echo; echo "$marker"; tail -c 65536 "$base.err" 2>/dev/null
"""
)


def service_state_dir(remote_dir: str) -> str:
    return f"{remote_dir}/services"


def start_service(board: Session, remote_dir: str, remote_path: str, name: str, app: App) -> AppReport:
    """Start the service and wait until it is ready; the report says how long that took, or why not."""
    assert app.service is not None
    ready = app.service.ready
    arguments = [service_state_dir(remote_dir), name, str(app.timeout), str(ready.port or ""), ready.line or ""]
    command = shlex.join(["sh", "-c", SERVICE_START, "service", *arguments, remote_path, *app.args])
    started = time.monotonic()
    result = board.run(command, timeout=app.timeout + 30)
    report = AppReport(name, service=True, ready_seconds=round(time.monotonic() - started, 2))
    report.error = service_start_problem(result.stdout, app)
    return report


def service_start_problem(output: str, app: App) -> str:
    """Why the service is not up, from SERVICE_START's word ("" when ready)."""
    assert app.service is not None
    word, _, code = output.strip().rpartition("\n")[2].partition(" ")
    what = f"port {app.service.ready.port}" if app.service.ready.port else f"the line {app.service.ready.line!r}"
    if word == "ready":
        return ""
    if word == "exited":
        return f"exited with code {code} before it was ready (waiting for {what})"
    if word == "late":
        return f"not ready within {app.timeout} s (waiting for {what})"
    if word == "no-setsid":
        return "could not be started: the board has no setsid (util-linux, or busybox's)"
    return f"could not be started: {output.strip() or 'no output'}"


def stop_service(board: Session, remote_dir: str, report: AppReport, app: App) -> None:
    """Check the service still runs, stop it unless the board file keeps it, and take its output."""
    assert app.service is not None
    keep = app.service.keep_running and not report.error
    marker = f"crossboard-{uuid.uuid4().hex}"
    arguments = [service_state_dir(remote_dir), report.name, "yes" if keep else "no", marker]
    result = board.run(shlex.join(["sh", "-c", SERVICE_STOP, "service", *arguments]), timeout=60)
    state, report.stdout, report.stderr = parse_service_stop(result.stdout, marker)
    if state != "running":
        code = state.removeprefix("exited ")
        report.exit_code = int(code) if code.isdigit() else None
        report.error = report.error or f"no longer running when checked ({state})"
    report.kept = keep and state == "running"
    report.missing = _missing(app.expect_stdout, report.stdout.splitlines())


def parse_service_stop(output: str, marker: str) -> tuple[str, str, str]:
    """(its state: "running" or "exited CODE", its output, its errors) from SERVICE_STOP's output."""
    state, _, rest = output.partition("\n")
    _, _, rest = rest.partition(f"{marker}\n")
    stdout, _, stderr = rest.partition(f"\n{marker}\n")  # the script's own newline before it
    return state.strip(), stdout, stderr
