"""invoke new.module / new.app: what they write, what they refuse, and that a refusal leaves nothing."""

import os
import subprocess
import sys

import pytest
from fakes import copy_project, invoke

from crossboard import PROJECT_ROOT
from crossboard.board.load import load_board
from crossboard.errors import UserError
from crossboard.new import new_app, new_module

pytestmark = pytest.mark.fast


def test_a_new_module_and_app_are_written_and_listed_with_nothing_else_in_the_board_file_changed(tmp_path):
    boards = copy_project(tmp_path)
    before = (boards / "qemu-arm64.yaml").read_text()
    module = new_module(load_board("qemu-arm64", boards), "blinky")
    app = new_app(load_board("qemu-arm64", boards), "greeter")
    kbuild = (module / "Kbuild").read_text()
    assert kbuild.startswith("obj-m := blinky.o\n") and "rustflags-y += --cfg module_authors" in kbuild
    source = (module / "blinky.rs").read_text()
    assert 'name: "blinky"' in source and "struct Blinky;" in source and 'pr_info!("blinky loaded\\n")' in source
    assert 'name = "greeter"' in (app / "Cargo.toml").read_text()
    board = load_board("qemu-arm64", boards)
    assert board.spec.modules[-1] == "modules/blinky" and board.spec.apps[-1].path == "apps/greeter"
    assert board.spec.deploy.expect["blinky"].load == ["blinky loaded"]
    assert board.spec.apps[-1].expect_stdout == ["greeter runs on aarch64"]
    after = (boards / "qemu-arm64.yaml").read_text().splitlines()
    assert [line for line in before.splitlines() if line not in after] == []  # only additions
    added = [line for line in after if line not in before.splitlines()]
    assert added == [
        "  - modules/blinky",
        "  - path: apps/greeter",
        '    expect_stdout: ["greeter runs on aarch64"]',
        "    blinky:",
        '      load: ["blinky loaded"]',
        '      unload: ["blinky unloaded"]',
    ]


@pytest.mark.parametrize(
    "kind, name, message",
    [
        ("module", "Blinky", "lower-case letters, digits and _"),
        ("module", "blink-y", "lower-case letters, digits and _"),
        ("module", "hello_rust", "modules/hello_rust: already exists"),
        ("app", "9lives", "lower-case letters, digits, _ and -"),
        ("app", "hello", "apps/hello: already exists"),
        # names that pass the pattern but give a module that does not compile, or a package cargo refuses
        ("module", "self", "is a Rust keyword or a crate every module links with"),
        ("module", "kernel", "is a Rust keyword or a crate every module links with"),
        ("app", "deps", "is one cargo refuses for a package"),
        ("app", "build", "is one cargo refuses for a package"),
    ],
)
def test_a_bad_or_taken_name_is_refused_and_nothing_is_written(tmp_path, kind, name, message):
    boards = copy_project(tmp_path)
    before = (boards / "qemu-arm64.yaml").read_bytes()
    folders = sorted(p.name for p in (boards.parent / f"{kind}s").iterdir())
    with pytest.raises(UserError, match=message):
        (new_module if kind == "module" else new_app)(load_board("qemu-arm64", boards), name)
    assert (boards / "qemu-arm64.yaml").read_bytes() == before
    assert sorted(p.name for p in (boards.parent / f"{kind}s").iterdir()) == folders


def test_invoke_new_says_what_it_made_and_refuses_in_one_line(tmp_path):
    boards = copy_project(tmp_path)
    made = invoke("new.module", "blinky", CROSSBOARD_BOARDS=str(boards))
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("qemu-arm64: made modules/blinky and listed it in qemu-arm64.yaml")
    again = invoke("new.module", "blinky", CROSSBOARD_BOARDS=str(boards))
    assert again.returncode == 2 and again.stderr.strip().endswith("modules/blinky: already exists; choose another name")


def test_a_module_named_like_a_prelude_type_gets_a_type_of_its_own(tmp_path):
    boards = copy_project(tmp_path)
    for name in ("result", "this_module"):
        source = (new_module(load_board("qemu-arm64", boards), name) / f"{name}.rs").read_text()
        assert "struct ResultModule;" in source or "struct ThisModuleModule;" in source


def test_a_board_file_that_is_a_link_stays_a_link_and_its_target_is_edited(tmp_path):
    boards = copy_project(tmp_path)
    shared = tmp_path / "lab-boards" / "qemu-arm64.yaml"
    shared.parent.mkdir()
    (boards / "qemu-arm64.yaml").rename(shared)
    (boards / "qemu-arm64.yaml").symlink_to(shared)
    new_module(load_board("qemu-arm64", boards), "blinky")
    assert (boards / "qemu-arm64.yaml").is_symlink() and "modules/blinky" in shared.read_text()


def test_a_local_override_that_lists_its_own_modules_is_said_before_anything_is_written(tmp_path):
    boards = copy_project(tmp_path)
    (boards / "qemu-arm64.local.yaml").write_text("modules: [modules/hello_rust]\n")
    before = (boards / "qemu-arm64.yaml").read_bytes()
    with pytest.raises(UserError, match=r"qemu-arm64.local.yaml sets modules:, .* blinky would not be built"):
        new_module(load_board("qemu-arm64", boards), "blinky")
    assert (boards / "qemu-arm64.yaml").read_bytes() == before and not (boards.parent / "modules/blinky").exists()


def test_two_new_modules_at_once_are_both_listed(tmp_path):
    """The audit's r08: two runs at the same moment, and the board file listed one."""
    boards = copy_project(tmp_path)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "invoke", "new.module", name],
            cwd=PROJECT_ROOT,
            env={**os.environ, "CROSSBOARD_BOARDS": str(boards)},
        )
        for name in ("alpha", "beta")
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    listed = load_board("qemu-arm64", boards).spec.modules
    assert "modules/alpha" in listed and "modules/beta" in listed
