"""What an app's build code can reach (2026-12-07 audit, M2), with each builder, for real: a build script
that fails the build when it sees a network interface besides the loopback, and writes a file into the
cargo home it is given, which must be crossboard's own (the work folder's), never the user's ~/.cargo."""

import dataclasses
from pathlib import Path

import pytest
from conftest import QUIET
from fakes import copy_project

from crossboard.board.load import load_board
from crossboard.pipeline.pipeline import build, work_folder

pytestmark = pytest.mark.docker

PROBE_BUILD_RS = """
fn main() {
    let interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    if interfaces.iter().any(|name| name != "lo") {
        panic!("build code has a network: {interfaces:?}");
    }
    let home = std::env::var("CARGO_HOME").unwrap();
    std::fs::write(format!("{home}/planted-by-build-script"), "x").unwrap();
}
"""


@pytest.fixture
def probe_project(tmp_path: Path) -> Path:
    boards = copy_project(tmp_path)
    probe = boards.parent / "apps/probe"
    (probe / "src").mkdir(parents=True)
    (probe / "Cargo.toml").write_text('[package]\nname = "probe"\nversion = "0.1.0"\nedition = "2021"\n')
    (probe / "build.rs").write_text(PROBE_BUILD_RS)
    (probe / "src/main.rs").write_text('fn main() { println!("probe"); }\n')
    return boards


@pytest.mark.parametrize("builder", ["cross", "cargo"])
def test_an_apps_build_code_has_no_network_and_only_crossboards_cargo_home(probe_project, settings, toolchain_image, builder):
    board = load_board("qemu-arm64", probe_project, overrides={"apps": [{"path": "apps/probe"}]})
    own = dataclasses.replace(settings, out_dir=probe_project.parent / "out")
    user_home = Path.home() / ".cargo/planted-by-build-script"
    user_home.unlink(missing_ok=True)
    manifest = build(board, own, dataclasses.replace(QUIET, only=frozenset({"apps"}), app_builder=builder))
    assert manifest.app_binaries == {"apps/probe": {"binaries": ["probe"], "run": "probe"}}
    assert (work_folder(board, own) / "cargo-home/planted-by-build-script").is_file()
    assert not user_home.exists()
