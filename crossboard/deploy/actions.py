"""What deploy does on a board once the files are there: load modules, read their kernel messages,
run the apps. Every value that reaches the remote shell is quoted."""

from __future__ import annotations

import shlex
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

    @property
    def ok(self) -> bool:
        return not (self.refused or self.error or self.missing or any(test["status"] == "failed" for test in self.tests))


@dataclass
class AppReport:
    name: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    refused: str = ""
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused and self.exit_code == 0 and not self.missing


def as_dict(report: ModuleReport | AppReport) -> dict:
    """As deploy.json has it: what was refused is its name and why (it never got as far as the board)."""
    if report.refused:
        return {"name": report.name, "refused": report.refused, "ok": False}
    return {**asdict(report), "ok": report.ok}


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
