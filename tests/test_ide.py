"""invoke ide against a real build: the editor files name only paths that exist on this machine, and
rust-analyzer of the profile's rustc release, reading them there, resolves every import of hello_rust."""

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import QUIET
from fakes import copy_project, held_packages

from crossboard.board.load import load_board
from crossboard.pipeline.ide import write_editor_files
from crossboard.pipeline.pipeline import build, build_folders

pytestmark = [pytest.mark.docker, pytest.mark.kernel]


def absolute_paths(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith("/") else []
    if isinstance(value, list):
        return [path for item in value for path in absolute_paths(item)]
    if isinstance(value, dict):
        return [path for item in value.values() for path in absolute_paths(item)]
    return []


@pytest.fixture(scope="module")
def editor_files(qemu_build, settings, tmp_path_factory):
    """A project copy (its module folder gets the files, not the project's), built on qemu-arm64's kernel."""
    folder = tmp_path_factory.mktemp("ide")
    board = load_board("qemu-arm64", copy_project(folder), overrides={"apps": []})
    ours = dataclasses.replace(settings, out_dir=folder / "out")  # the project's out/qemu-arm64 stays as built
    build(board, ours, QUIET)
    return board, write_editor_files(board, ours, echo=False)


def test_every_path_the_editor_files_name_exists_on_this_machine(editor_files):
    board, written = editor_files
    module = board.module_dirs()[0]
    assert written == [module / "rust-project.json", module / "compile_commands.json"]
    project = json.loads((module / "rust-project.json").read_text())
    paths = absolute_paths(project)
    assert str(module / "hello_rust.rs") in paths  # the file the user edits, not the build's copy
    assert any(path.endswith("/rust/kernel/lib.rs") for path in paths)
    assert any(path.endswith("lib/rustlib/src/rust/library/core/src/lib.rs") for path in paths)
    assert not [path for path in paths if path.startswith("/crossboard/")]
    assert [path for path in paths if not Path(path).exists()] == []


def test_the_sysroot_the_editor_runs_from_is_where_no_build_can_write(editor_files, settings):
    """The audit's L10: the proc-macro server the host's rust-analyzer runs sat in the build folder, which
    every build container mounts read-write."""
    board, _ = editor_files
    sysroot = Path(json.loads((board.module_dirs()[0] / "rust-project.json").read_text())["sysroot"])
    assert sysroot.is_relative_to(settings.cache_dir / "editor")
    assert not any(sysroot.is_relative_to(folder) for folder in build_folders(board, settings).values())


def test_rust_analyzer_of_the_profiles_release_resolves_every_import(editor_files, docker, settings, toolchain_image):
    """rust-analyzer runs in a throwaway container of the trixie image with this machine's project and
    cache folders mounted at the same paths, so it reads the files exactly as an editor here would."""
    board, _ = editor_files
    module = board.module_dirs()[0]
    version = held_packages(docker, toolchain_image.ref)["rustc"]  # rust-analyzer of the very rustc the image holds
    script = (
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --no-install-recommends "
        f"rust-analyzer={version} >/dev/null && rust-analyzer diagnostics {module}"
    )
    mounts = {str(path): {"bind": str(path), "mode": "ro"} for path in (board.project_root, settings.cache_dir)}
    container = docker.containers.run(toolchain_image.ref, ["sh", "-c", script], volumes=mounts, network_mode="host", detach=True)
    try:
        code = container.wait(timeout=600)["StatusCode"]
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0, output
    assert "unresolved" not in output.lower(), output
