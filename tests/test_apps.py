"""Apps as people write them: three well-known applications from crates.io, fetched by cargo and pinned
by their own Cargo.lock, built for the virtual board and run there. ripgrep as the member of a workspace
(its binary `rg`, a build script, and with `pcre2` a C library compiled for aarch64), findutils (several
binaries, of which two are deployed; the oniguruma C library), hexyl (one binary, the plain shape); and
our own service app, started, checked and stopped by the deploy."""

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import QUIET, booted
from fakes import copy_project

from crossboard.board.load import load_board
from crossboard.deploy.run import DeployOptions, deploy_many
from crossboard.pipeline.pipeline import build
from crossboard.remote.access import Access
from crossboard.virtual import qemu

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.qemu]
CRATES = {"ripgrep": "15.2.0", "findutils": "0.8.0", "hexyl": "0.14.0"}  # each builds with trixie's rustc 1.85
APPS = [
    {"path": "apps/tools", "package": "ripgrep", "features": ["pcre2"], "args": ["--version"]},
    {"path": "apps/findutils", "bins": ["find", "xargs"], "run": "find", "args": ["--version"]},
    {"path": "apps/hexyl", "args": ["--version"]},
    # our own service: started before the others, ready when it listens, checked, stopped at the end
    {
        "path": "apps/hello-service",
        "args": ["7878"],
        "service": {"ready": {"port": 7878}},
        "expect_stdout": ["hello-service listening on port 7878"],
    },
]


def fetch_crates(folder: Path) -> dict[str, Path]:
    """Each crate's published source, as cargo downloads it from crates.io (into a CARGO_HOME of the test's)."""
    env = {**os.environ, "CARGO_HOME": str(folder / "cargo-home")}
    for name, version in CRATES.items():
        subprocess.run(["cargo", "info", f"{name}@{version}"], env=env, check=True, capture_output=True, timeout=300)
    sources = next((folder / "cargo-home/registry/src").iterdir())
    return {name: sources / f"{name}-{version}" for name, version in CRATES.items()}


@pytest.fixture(scope="module")
def crates_project(tmp_path_factory, settings, qemu_build):
    """A project copy whose qemu-arm64 builds the three crates instead of apps/hello, into out/ of its own."""
    root = tmp_path_factory.mktemp("crates")
    boards = copy_project(root)
    project = boards.parent
    crates = fetch_crates(root)
    tools = project / "apps/tools"  # a workspace with ripgrep as its member, as a lab's own tree would hold it
    shutil.copytree(crates["ripgrep"], tools / "ripgrep")
    shutil.copy(tools / "ripgrep/Cargo.lock", tools / "Cargo.lock")
    (tools / "Cargo.toml").write_text('[workspace]\nmembers = ["ripgrep"]\nresolver = "2"\n')
    shutil.copytree(crates["findutils"], project / "apps/findutils")
    shutil.copytree(crates["hexyl"], project / "apps/hexyl")
    board = load_board("qemu-arm64", boards, overrides={"apps": APPS})
    own = dataclasses.replace(settings, out_dir=root / "out")
    return board, own, build(board, own, QUIET)


def test_real_crates_build_into_the_binaries_cargo_made(crates_project):
    _, _, manifest = crates_project
    assert manifest.app_binaries == {
        "apps/tools": {"binaries": ["rg"], "run": "rg"},
        "apps/findutils": {"binaries": ["find", "xargs"], "run": "find"},
        "apps/hexyl": {"binaries": ["hexyl"], "run": "hexyl"},
        "apps/hello-service": {"binaries": ["hello-service"], "run": "hello-service"},
    }
    apps = sorted(artifact["path"] for artifact in manifest.artifacts if artifact["kind"] == "app")
    assert apps == ["apps/find", "apps/hello-service", "apps/hexyl", "apps/rg", "apps/xargs"]
    for name in ("rg", "find", "xargs", "hexyl", "hello-service"):
        kind = subprocess.run(["file", "-b", str(manifest.out_dir / "apps" / name)], capture_output=True, text=True).stdout
        assert "ARM aarch64" in kind, (name, kind)
    assert set(manifest.app_glibc) == {"rg", "find", "xargs", "hexyl", "hello-service"}


def test_real_crates_run_on_the_virtual_board(crates_project):
    board, settings, _ = crates_project
    from sshd import free_port

    board = load_board(board.name, board.file.parent, overrides={"apps": APPS, "connection": {"port": free_port()}})
    for _ in booted(qemu.VirtualBoard(board, settings)):
        report = deploy_many([board], settings.out_dir, DeployOptions(echo=False), Access(settings.known_hosts))[0]
        assert report["ok"], report
        runs = {app["name"]: app for app in report["apps"]}
        assert set(runs) == {"rg", "find", "hexyl", "hello-service"}
        assert "ripgrep 15.2.0" in runs["rg"]["stdout"] and "+pcre2" in runs["rg"]["stdout"]
        assert "0.8.0" in runs["find"]["stdout"]
        assert "hexyl 0.14.0" in runs["hexyl"]["stdout"]
        assert {"apps/rg", "apps/find", "apps/xargs", "apps/hexyl"} <= set(report["sent"])  # every binary deployed
        service = runs["hello-service"]
        assert service["service"] and service["ok"] and not service["kept"] and service["ready_seconds"] < 30
        with Access(settings.known_hosts).open(board) as remote:  # stopped: nothing listens on its port any more
            listening = remote.run("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null").stdout
        assert ":1EC6 00000000:0000 0A" not in listening and ":1EC6 " not in listening, listening
