"""Apps as people write them, in the build's logic: which binaries an app made comes from cargo's own
messages (here the recording runtime's cargo, which makes each [[bin]] target as cargo does), what the
board file says of them, and one line for what does not fit. Real crates are tests/test_apps.py."""

import json

import pytest
from fakes import RecordingRuntime, copy_project, fake_board, fake_kernel_tarball

from crossboard.artifacts.manifest import finished_build
from crossboard.board.schema import App
from crossboard.deploy.run import app_to_run
from crossboard.errors import UserError
from crossboard.pipeline.cargo import CargoMessages, build_flags, chosen_binaries, package_of
from crossboard.pipeline.context import BuildOptions
from crossboard.pipeline.pipeline import build, build_folders
from crossboard.settings import Settings
from crossboard.toolchain.stream import Tee

pytestmark = pytest.mark.fast


def test_cargo_messages_are_kept_and_everything_else_goes_to_the_log(tmp_path):
    with Tee(tmp_path / "apps.log", echo=False) as log:
        messages = CargoMessages(log)
        artifact = {
            "reason": "compiler-artifact",
            "target": {"kind": ["bin"], "name": "rg"},
            "executable": "/target/x/release/rg",
        }
        library = {"reason": "compiler-artifact", "target": {"kind": ["lib"], "name": "grep"}, "executable": None}
        text = f"   Compiling grep v0.3.2\n{json.dumps(library)}\n{json.dumps(artifact)}\n    Finished `release`\n".encode()
        for cut in range(0, len(text), 7):  # chunks that split lines anywhere
            messages.write(text[cut : cut + 7])
    assert messages.executables() == ["rg"]
    assert (tmp_path / "apps.log").read_text() == "   Compiling grep v0.3.2\n    Finished `release`\n"


def test_the_binaries_to_deploy_and_the_one_to_run():
    app = App(path="apps/tool")
    assert chosen_binaries(app, 0, ["rg"], None) == (["rg"], "rg")  # a [[bin]] under another name than the package's
    assert chosen_binaries(app, 0, ["a", "b"], "b") == (["a", "b"], "b")  # default-run
    assert chosen_binaries(App(path="x", bins=["b"]), 0, ["a", "b"], None) == (["b"], "b")
    assert chosen_binaries(App(path="x", run="a"), 0, ["a", "b"], "b") == (["a", "b"], "a")
    with pytest.raises(
        UserError, match=r"apps\[0\] apps/tool makes several binaries \(a, b\): say which one deploy runs with `run:`"
    ):
        chosen_binaries(app, 0, ["a", "b"], None)


def test_a_binary_cargo_did_not_make_is_one_line_naming_what_it_made():
    with pytest.raises(UserError, match=r"apps\[1\] apps/tool \(package t\): cargo made no binary tool; it made rg"):
        chosen_binaries(App(path="apps/tool", package="t", run="tool"), 1, ["rg"], None)
    with pytest.raises(UserError, match=r"apps\[0\] x: cargo made no binary \(no \[\[bin\]\] target"):
        chosen_binaries(App(path="x"), 0, [], None)


def test_flags_say_what_the_board_file_says():
    app = App(path="w", package="member", features=["fancy", "dep/x"], default_features=False)
    assert build_flags(app, has_lock=True) == [
        "--message-format=json-render-diagnostics",
        "--package",
        "member",
        "--features",
        "fancy,dep/x",
        "--no-default-features",
        "--locked",
    ]
    assert build_flags(App(path="a"), has_lock=False) == ["--message-format=json-render-diagnostics"]


def write_workspace(root):
    (root / "crates/tool").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[workspace]\nmembers = ["crates/*"]\n')
    (root / "crates/tool/Cargo.toml").write_text('[package]\nname = "tool"\nversion = "0.1.0"\ndefault-run = "tl"\n')
    (root / "target/debug/build/x").mkdir(parents=True)
    (root / "target/debug/build/x/Cargo.toml").write_text('[package]\nname = "not-a-member"\n')


def test_a_workspace_member_is_found_by_its_package_name_and_a_missing_one_is_one_line(tmp_path):
    write_workspace(tmp_path)
    assert package_of(App(path="w", package="tool"), 0, tmp_path)["default-run"] == "tl"
    with pytest.raises(UserError, match=r"apps\[2\] w: no package nope in the workspace \(packages: tool\)"):
        package_of(App(path="w", package="nope"), 2, tmp_path)
    with pytest.raises(UserError, match=r"apps\[0\] w: no \[package\] in its Cargo.toml \(a workspace: name the member"):
        package_of(App(path="w"), 0, tmp_path)


def test_an_app_whose_binary_is_not_named_after_its_package_is_built_collected_and_run(tmp_path):
    """The crates.io tool of issue 32: `[[bin]] name = "rg"` ended in FileNotFoundError in collect."""
    boards = copy_project(tmp_path)
    project = boards.parent
    (project / "apps/hello/Cargo.toml").write_text(
        '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n\n[[bin]]\nname = "greet"\npath = "src/main.rs"\n'
    )
    url, sha256 = fake_kernel_tarball(tmp_path)
    board = fake_board(boards, "fake", f"tarball: {{url: '{url}', sha256: {sha256}}}")
    settings = Settings(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", base_image="-", debian_mirror="-")
    runtime = RecordingRuntime(build_folders(board, settings))
    manifest = build(board, settings, BuildOptions(echo=False, app_builder="cargo"), runtime=runtime)
    assert [a["path"] for a in manifest.artifacts if a["kind"] == "app"] == ["apps/greet"]
    assert manifest.app_binaries == {"apps/hello": {"binaries": ["greet"], "run": "greet"}}
    built = finished_build(manifest.out_dir, "fake")
    assert app_to_run(built, "apps/hello") == "greet" and built.app_glibc == {"greet": ""}


def test_crates_are_fetched_before_the_build_and_a_cargo_configuration_a_build_left_is_removed_first(tmp_path):
    """A build script can write the work folder's cargo home (the build's CARGO_HOME); a config.toml
    there naming a rustc wrapper would run at the next fetch, which has the network (audit M2)."""
    boards = copy_project(tmp_path)
    url, sha256 = fake_kernel_tarball(tmp_path)
    board = fake_board(boards, "fake", f"tarball: {{url: '{url}', sha256: {sha256}}}")
    settings = Settings(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", base_image="-", debian_mirror="-")
    runtime = RecordingRuntime(build_folders(board, settings))
    planted = runtime.folders["work"] / "cargo-home/config.toml"
    planted.parent.mkdir(parents=True)
    planted.write_text('[build]\nrustc-wrapper = "/tmp/evil"\n')
    build(board, settings, BuildOptions(echo=False, app_builder="cargo"), runtime=runtime)
    assert not planted.exists()
    cargo_commands = [argv for argv in runtime.commands if argv[0] == "cargo"]
    assert [argv[:2] for argv in cargo_commands] == [["cargo", "fetch"], ["cargo", "build"]]
    assert cargo_commands[1][-1] == "--offline"
