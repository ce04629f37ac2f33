"""`invoke deploy`: out/<board>/ put to work on one board or many in parallel."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts.files import write_atomically
from ..artifacts.manifest import FinishedBuild, finished_build
from ..board.load import LoadedBoard
from ..board.schema import App, ModuleExpect
from ..errors import CrossboardError, StepFailed, UserError, exit_code_for
from ..progress import Progress, size
from ..remote.access import Access
from ..remote.connection import Cancellation, Session
from ..remote.transfer import Upload, hashes_command, parse_hashes, push
from . import ktap
from .actions import (
    AppReport,
    ModuleReport,
    as_dict,
    boot_tests,
    check_privilege,
    load_module,
    run_app,
    start_service,
    stop_service,
)
from .ktap import KunitResult
from .preflight import FACTS_COMMAND, BoardFacts, app_problem, module_problem, parse_facts

REPORT_NAME = "deploy.json"
INTERRUPT_GRACE = 2.0  # seconds the boards' threads get to write their reports after an interrupt
HASHES_FOLLOW = "crossboard-hashes-follow"


@dataclass(frozen=True)
class DeployOptions:
    wait_seconds: float = 30
    keep_loaded: bool = False
    modules: frozenset[str] = frozenset()  # empty: every module the build made
    echo: bool = True
    alone: bool = True  # one board: progress may be a bar; several share the terminal, so plain lines


def app_to_run(build: FinishedBuild, path: str) -> str | None:
    """The binary of the app at `path` that deploy runs: the one the build chose, or the app's only one."""
    made = [artifact.file_name for artifact in build.of_kind("app") if artifact.source == path]
    chosen = build.app_run.get(path)
    return chosen if chosen in made else (made[0] if len(made) == 1 else None)


def open_board_early(board: LoadedBoard, options: DeployOptions, access: Access) -> Future:
    """Connect while something else runs (the inner loop's compile), for deploy_many(opened=...). A
    daemon thread: a failed build exits at once, not after waiting for a board that is down."""
    opening: Future = Future()

    def open_now() -> None:
        try:
            opening.set_result(access.open(board, options.wait_seconds))
        except BaseException as error:  # the deploy that takes the connection reports it
            opening.set_exception(error)

    threading.Thread(target=open_now, name=f"connect-{board.name}", daemon=True).start()
    return opening


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class DeployReport:
    """What happened on one board, also when something failed; deploy.json holds `as_json()`."""

    board: str
    host: str | None  # None: a labgrid place says it
    started: str = field(default_factory=_now)
    error: str = ""
    exit_code: int | None = None  # the README's exit code of `error`, when it is crossboard's word
    reached: bool = False
    facts: BoardFacts | None = None
    transfer: str = ""  # how the files went, when some did
    sent: list[str] = field(default_factory=list)
    modules: list[ModuleReport] = field(default_factory=list)
    apps: list[AppReport] = field(default_factory=list)
    boot_tests: list[dict] = field(default_factory=list)  # KUnit results of the suites that ran at boot

    def as_json(self, interrupted: bool = False) -> dict:
        report: dict[str, Any] = {"board": self.board, "host": self.host, "ok": False, "error": self.error}
        report |= {"started": self.started, "sent": self.sent, "modules": [as_dict(m) for m in self.modules]}
        report |= {"apps": [as_dict(a) for a in self.apps], "boot_tests": self.boot_tests}
        report |= {"reached": True} if self.reached else {}
        if self.facts is not None:
            report |= {"board_release": self.facts.release, "board_kernel_build": self.facts.build_id}
        report |= ({"transfer": self.transfer} if self.transfer else {}) | (
            {"exit_code": self.exit_code} if self.exit_code is not None else {}
        )
        report["ok"] = not self.error and all(entry["ok"] for entry in report["modules"] + report["apps"])
        report["ok"] = report["ok"] and not _failed_tests(report)
        if interrupted:  # whatever the closed connection made of it
            report["ok"], report["error"] = False, "interrupted"
        return report | {"finished": _now()}


def deploy_board(
    board: LoadedBoard,
    out_root: Path,
    options: DeployOptions,
    access: Access,
    opening: Future | None = None,
    cancellation: Cancellation | None = None,
) -> dict:
    """Deploy to one board; the report says what happened, also when something failed. `opening`: its
    connection, opened early by open_board_early; `cancellation`: the user's interrupt, which closes it."""
    out_dir = board.out_dir(out_root)
    report = DeployReport(board.name, board.spec.connection.host)
    try:
        build = finished_build(out_dir, board.name)
        _check_asked_modules(board, build, options)
        with opening.result() if opening else access.open(board, options.wait_seconds, cancellation) as remote:
            report.reached = True
            if cancellation:  # opened here or early, it is closed on an interrupt
                cancellation.track(remote)
            facts = _send(remote, board, build, options, report)
            _load_modules(remote, board, build, facts, options, report)
            if not options.modules:
                _run_apps(remote, board, build, facts, report)
    except CrossboardError as error:
        report.error, report.exit_code = str(error), exit_code_for(error)
    except Exception as error:  # a bug of ours: this board's report says so, the other boards go on
        report.error = f"internal error: {type(error).__name__}: {error}"
    result = report.as_json(interrupted=cancellation is not None and cancellation.cancelled)
    if out_dir.is_dir():
        write_atomically(out_dir / REPORT_NAME, (json.dumps(result, indent=2) + "\n").encode())
    return result


def _check_asked_modules(board: LoadedBoard, build: FinishedBuild, options: DeployOptions) -> None:
    built = sorted(artifact.module_name for artifact in build.of_kind("module"))
    if unknown := sorted(options.modules - set(built)):
        raise UserError(
            f"--module: the build of {board.name} has no module {', '.join(unknown)} (modules: {', '.join(built) or 'none'})"
        )


def _send(remote: Session, board: LoadedBoard, build: FinishedBuild, options: DeployOptions, report: DeployReport) -> BoardFacts:
    """The build's modules and apps onto the board, those it has already left out; the board's facts."""
    remote_dir = board.spec.deploy.remote_dir
    uploads = [Upload(build.local(a), a.path, a.sha256) for a in build.of_kind("module") + build.of_kind("app")]
    # one round trip: the board's facts, then the hashes of the files already there
    listing = remote.run(
        f"{FACTS_COMMAND}echo {HASHES_FOLLOW}\n" + hashes_command(remote_dir, [upload.remote for upload in uploads])
    ).stdout
    facts_text, _, hashes_text = listing.partition(f"{HASHES_FOLLOW}\n")
    report.facts = facts = parse_facts(facts_text)
    mode = Progress.mode_for(options.echo, plain=not options.alone)
    progress = Progress(f"[{board.name}] upload", unit="", pattern=None, render=size, every=5, mode=mode)
    sent = push(remote, remote_dir, uploads, progress=progress, current=parse_hashes(hashes_text))
    report.sent = [upload.remote for upload in sent]
    if report.sent:  # asking otherwise would start the board's SFTP server for nothing
        report.transfer = remote.transport_name
    return facts


def _load_modules(
    remote: Session, board: LoadedBoard, build: FinishedBuild, facts: BoardFacts, options: DeployOptions, report: DeployReport
) -> None:
    """Each module the deploy is for, checked against the running kernel, loaded and unloaded as the
    board file says; the KUnit results of the boot first."""
    deploy = board.spec.deploy
    modules = [a for a in build.of_kind("module") if not options.modules or a.module_name in options.modules]
    if modules:
        check_privilege(remote, facts)
        report.boot_tests = boot_tests(remote)
    for artifact in modules:
        name = artifact.module_name
        problem = module_problem(name, artifact.release or "", facts, build.kernel_builds)
        if problem:
            report.modules.append(ModuleReport(name, refused=problem, before_the_board=True))
            continue
        keep = options.keep_loaded or deploy.keep_loaded
        expect = deploy.expect.get(name, ModuleExpect())
        report.modules.append(load_module(remote, f"{deploy.remote_dir}/{artifact.path}", name, expect, keep, facts.loaded))


def _run_apps(remote: Session, board: LoadedBoard, build: FinishedBuild, facts: BoardFacts, report: DeployReport) -> None:
    """The services started first (they serve the others), then each other app run to its end, then
    each service checked and stopped (kept, where the board file says), also when something failed."""
    remote_dir = board.spec.deploy.remote_dir
    runnable = []
    for app in board.spec.apps:
        binary = app_to_run(build, app.path)
        problem = (
            f"the build has no binary of {app.path}: run invoke build --board {board.name}"
            if binary is None
            else app_problem(binary, build.app_glibc.get(binary, ""), facts)
        )
        if binary is None or problem:
            report.apps.append(AppReport(binary or app.path, refused=problem or "", before_the_board=True))
        else:
            runnable.append((app, binary))
    services: list[tuple[App, AppReport]] = []
    try:
        for app, binary in (entry for entry in runnable if entry[0].service):
            services.append((app, AppReport(binary, service=True)))  # stopped below even if its start fails
            services[-1] = (app, start_service(remote, remote_dir, f"{remote_dir}/apps/{binary}", binary, app))
        for app, binary in (entry for entry in runnable if not entry[0].service):
            report.apps.append(run_app(remote, f"{remote_dir}/apps/{binary}", binary, app))
    finally:
        for app, service in services:
            try:
                stop_service(remote, remote_dir, service, app)
            except CrossboardError as error:  # the connection lost, say: the deploy's own error says why
                service.error = service.error or f"could not be checked or stopped: {error}"
            report.apps.append(service)


def describe(report: dict) -> list[str]:
    """The terminal's view of one board's report."""
    lines = [
        f"[{report['board']}] {report['host']}: {'ok' if report['ok'] else 'FAILED'}"
        + (f" (board runs {report['board_release']})" if report.get("board_release") else "")
    ]
    if report["error"]:
        lines.append(f"  error: {report['error']}")
    via = f" (by {report['transfer']})" if report.get("transfer") else ""
    if report.get("reached"):
        lines.append(f"  sent{via}: {', '.join(report['sent']) or 'nothing (all up to date)'}")
    else:
        lines.append("  sent: nothing (the board was not reached)")
    for module in report["modules"]:
        if module.get("refused"):
            lines.append(f"  module {module['name']}: refused: {module['refused']}")
            continue
        state = "ok" if module["ok"] else f"FAILED {module['error']}"
        lines.append(f"  module {module['name']}: {state}")
        lines += [f"    | {line}" for line in module["load_messages"] + module["unload_messages"]]
        lines += [f"    missing: {text}" for text in module["missing"]]
    lines += _test_table(report)
    for app in report["apps"]:
        if app.get("refused"):
            lines.append(f"  app {app['name']}: refused: {app['refused']}")
            continue
        if app.get("service"):
            state = "kept running" if app["kept"] else "stopped"
            problem = app["error"] or f"its output lacks {', '.join(map(repr, app['missing']))}"
            outcome = f"ready in {app['ready_seconds']} s, {state}" if app["ok"] else f"FAILED {problem}"
            lines.append(f"  app {app['name']} (service): {outcome}")
        else:
            lines.append(f"  app {app['name']}: exit {app['exit_code']}{'' if app['ok'] else ' FAILED'}")
        lines += [f"    | {line}" for line in app["stdout"].splitlines()]
        lines += [f"    missing: {text}" for text in app["missing"]]
    return lines


def _tests(report: dict) -> list[dict]:
    """Every KUnit result of the deploy: the boot's, then each loaded module's."""
    return report["boot_tests"] + [test for module in report["modules"] for test in module.get("tests", [])]


def _failed_tests(report: dict) -> list[str]:
    return [KunitResult(**test).name for test in _tests(report) if test["status"] == "failed"]


def _test_table(report: dict) -> list[str]:
    """KUnit's results, a line per suite, then each failed test by name."""
    results = [KunitResult(**test) for test in _tests(report)]
    if not results:
        return []
    rows = [("kunit suite", "ok", "failed", "skipped")] + [(suite, *map(str, counts)) for suite, *counts in ktap.summary(results)]
    width = max(len(row[0]) for row in rows)
    lines = [f"  {row[0]:<{width}}  {row[1]:>5}  {row[2]:>6}  {row[3]:>7}" for row in rows]
    return lines + [f"  FAILED {name}" for name in _failed_tests(report)]


def deploy_many(
    boards: list[LoadedBoard],
    out_root: Path,
    options: DeployOptions,
    access: Access,
    opened: dict[str, Future] | None = None,
) -> list[dict]:
    """Each board in its own thread; one failing does not stop the others. Raises when any failed.
    `opened`: connections opened early, by board name."""
    opened = opened or {}
    options = dataclasses.replace(options, alone=len(boards) == 1)
    cancellation = Cancellation()
    results: dict[int, dict] = {}

    finished = [threading.Event() for _ in boards]

    def work(index: int, board: LoadedBoard) -> None:
        try:
            results[index] = deploy_board(board, out_root, options, access, opened.get(board.name), cancellation)
        finally:
            finished[index].set()

    # Daemon threads, waited for through events: Thread.join interrupted by a signal marks a thread that
    # still runs as stopped (CPython 3.11), and nothing may keep the process alive after an interrupt.
    for index, board in enumerate(boards):
        threading.Thread(target=work, args=(index, board), name=f"deploy-{board.name}", daemon=True).start()
    try:
        for done in finished:
            while not done.wait(0.2):  # short waits: Ctrl-C and SIGTERM reach this thread between them
                pass
    except KeyboardInterrupt:
        cancellation.cancel()
        deadline = time.monotonic() + INTERRUPT_GRACE
        for done in finished:  # their reports say `interrupted`, written as the connections close
            done.wait(max(0.0, deadline - time.monotonic()))
        raise
    reports = [results[index] for index in range(len(boards))]
    if options.echo:
        for report in reports:
            print("\n".join(describe(report)))
        if len(reports) > 1:
            print(f"{'board':<16} {'result':<8} {'modules':>8} {'apps':>5}")
            for report in reports:
                good = sum(m["ok"] for m in report["modules"]), sum(a["ok"] for a in report["apps"])
                print(
                    f"{report['board']:<16} {'ok' if report['ok'] else 'FAILED':<8} "
                    f"{good[0]}/{len(report['modules']):>6} {good[1]}/{len(report['apps']):>3}"
                )
    failed = [report for report in reports if not report["ok"]]
    if failed:
        # bad input (a board's setup, a --module that the build lacks) is the README's exit 2 when every
        # board that failed failed by it; a board that failed any other way is a failed step, 1
        bad_input = all(report.get("exit_code") == 2 for report in failed)
        # the board's own error, where it has one, is the line's end: the report above says the rest
        names = ", ".join(report["board"] + (f" ({report['error']})" if report["error"] else "") for report in failed)
        raise (UserError if bad_input else StepFailed)(f"deploy failed on {len(failed)} of {len(reports)} boards: {names}")
    return reports
