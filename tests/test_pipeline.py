"""The build pipeline's decisions, on a fake kernel tree with the recording runtime: which work runs
when which input changes, what the manifest says, locks on shared folders. Seconds, no Docker, no root."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
from fakes import RecordingRuntime, copy_project, fake_board, fake_kernel_tarball, invoke

from crossboard import PROJECT_ROOT
from crossboard.artifacts.manifest import load_manifest
from crossboard.errors import StepFailed, UserError
from crossboard.locking import holding
from crossboard.pipeline.context import BuildOptions
from crossboard.pipeline.pipeline import build, build_folders
from crossboard.settings import Settings

pytestmark = pytest.mark.fast
OPTIONS = BuildOptions(echo=False, app_builder="cargo")


@pytest.fixture
def lab(tmp_path):
    """A project copy with a fake board on a fake tarball kernel, and settings of its own."""
    boards = copy_project(tmp_path)
    url, sha256 = fake_kernel_tarball(tmp_path)
    settings = Settings(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", base_image="unused", debian_mirror="unused")
    source = f"tarball: {{url: '{url}', sha256: {sha256}}}"

    class Lab:
        project = boards.parent

        def board(self, name="fake", kernel_source=source):
            return fake_board(boards, name, kernel_source)

        def build(self, board=None, toolchain_id="sha256:fake-1", options=OPTIONS):
            board = board or self.board()
            runtime = RecordingRuntime(build_folders(board, settings), toolchain_id)
            manifest = build(board, settings, options, runtime=runtime)
            return manifest, runtime.commands

    Lab.settings = settings
    return Lab()


def kinds(commands) -> list[str]:
    """What each command was, in words a test can compare."""
    named = []
    for argv in commands:
        if argv[0] == "make":
            module = next((a.rsplit("/", 1)[1] for a in argv if a.startswith("M=")), None)
            named.append(
                f"make M={module}"
                if module
                else "make " + " ".join(a for a in argv[3:] if "=" not in a and not a.startswith("-"))
            )
        elif argv[:2] == ["sh", "-c"]:
            named.append("install-extmod-build" if "install-extmod-build" in argv[2] else "sh -c")
        elif argv[0] == "sh":
            named.append(argv[1].rsplit("/", 1)[1])
        elif argv[:2] == ["cargo", "fetch"]:
            named.append("cargo fetch")
        else:
            named.append(argv[0])
    return named


def test_a_first_build_runs_everything_and_a_second_runs_no_command(lab):
    first, commands = lab.build()
    assert {
        "make allnoconfig",
        "merge_config.sh",
        "make olddefconfig",
        "make Image modules",
        "make modules_install",
        "install-extmod-build",
        "make M=hello_rust",
        "cargo",
    } <= set(kinds(commands))
    again, commands = lab.build()
    assert commands == []
    assert again.status == "done"
    assert {record.name: record.status for record in again.steps} == {
        "source": "done",
        "toolchain-check": "skipped",
        "configure": "skipped",
        "dtbs": "skipped",
        "kernel": "skipped",
        "devel": "skipped",
        "modules": "done",
        "apps": "skipped",
        "collect": "skipped",
    }
    assert again.artifacts == first.artifacts
    assert (again.kernel_release, again.config_sha256, again.tools) == (first.kernel_release, first.config_sha256, first.tools)
    assert load_manifest(again.out_dir)["artifacts"] == first.artifacts


def test_a_changed_module_rebuilds_that_module_alone(lab):
    lab.build()
    source = lab.project / "modules/hello_rust/hello_rust.rs"
    source.write_text(source.read_text() + "\n// changed\n")
    manifest, commands = lab.build()
    assert kinds(commands) == ["make M=hello_rust"]
    assert manifest.step("collect").status == "done"


def test_a_changed_app_rebuilds_the_app_alone(lab):
    lab.build()
    (lab.project / "apps/hello/src/main.rs").write_text('fn main() { println!("changed"); }\n')
    _, commands = lab.build()
    assert kinds(commands) == ["cargo fetch", "cargo", "llvm-readelf"]  # crates with the network, the build without


def test_a_changed_fragment_configures_and_builds_the_kernel_and_modules_again_but_not_the_app(lab):
    lab.build()
    fragment = lab.project / "boards/fragments/rust.config"
    fragment.write_text(fragment.read_text() + "CONFIG_SAMPLE_RUST_PRINT=m\n")
    _, commands = lab.build()
    assert kinds(commands) == [
        "make allnoconfig",
        "merge_config.sh",
        "make olddefconfig",
        "make Image modules",
        "make modules_install",
        "install-extmod-build",
        "make M=hello_rust",
    ]


def test_a_new_toolchain_image_runs_everything_again(lab):
    lab.build()
    _, commands = lab.build(toolchain_id="sha256:fake-2")
    assert {"rustc", "make allnoconfig", "make Image modules", "make M=hello_rust", "cargo"} <= set(kinds(commands))


def test_a_deleted_or_edited_artifact_is_collected_again_without_make(lab):
    first, _ = lab.build()
    (first.out_dir / "Image").unlink()
    manifest, commands = lab.build()
    assert commands == [] and manifest.step("collect").status == "done"
    assert (first.out_dir / "Image").is_file()
    (first.out_dir / "apps/hello").write_bytes(b"tampered")
    manifest, commands = lab.build()
    assert commands == [] and manifest.step("collect").status == "done"
    assert (first.out_dir / "apps/hello").read_bytes() != b"tampered"


def test_a_local_tree_always_runs_make_and_another_tree_is_configured_again(lab, tmp_path):
    trees = []
    for name in ("a", "b"):
        tree = tmp_path / f"tree-{name}"
        (tree / "scripts").mkdir(parents=True)
        (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\n")
        trees.append(tree)
    lab.build(lab.board(kernel_source=f"path: {trees[0]}"))
    _, commands = lab.build(lab.board(kernel_source=f"path: {trees[0]}"))
    assert "make Image modules" in kinds(commands) and "make M=hello_rust" in kinds(commands)
    assert "merge_config.sh" not in kinds(commands)  # same tree, same config inputs
    _, commands = lab.build(lab.board(kernel_source=f"path: {trees[1]}"))
    assert "merge_config.sh" in kinds(commands)  # another tree is another configuration


def test_only_after_a_failed_build_does_not_mark_the_build_done(lab):
    lab.build()
    manifest_file = lab.settings.out_dir / "fake/manifest.json"
    data = json.loads(manifest_file.read_text())
    for record in data["steps"]:
        if record["name"] == "kernel":
            record["status"] = "failed"
    data["status"] = "failed"
    manifest_file.write_text(json.dumps(data))
    with pytest.raises(StepFailed, match=r"step kernel did not finish in an earlier build of fake"):
        lab.build(options=dataclasses.replace(OPTIONS, only=frozenset({"apps"})))
    assert load_manifest(lab.settings.out_dir / "fake")["status"] == "failed"


def test_an_unexpected_error_leaves_a_failed_manifest_not_a_running_one(lab, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the engine said something odd")

    monkeypatch.setattr(RecordingRuntime, "run", broken)
    with pytest.raises(RuntimeError):
        lab.build()
    manifest = load_manifest(lab.settings.out_dir / "fake")
    assert manifest["status"] == "failed"
    assert manifest["error"] == "RuntimeError: the engine said something odd"


@pytest.mark.parametrize(
    "arguments, error",
    [
        (["--only", "bogus"], "--only: unknown step bogus"),
        (["--app-builder", "zzz"], "--app-builder: unknown builder 'zzz'"),
        (["--runtime", "vm"], "--runtime: unknown runtime 'vm'"),
    ],
)
def test_bad_options_are_refused_before_any_output(arguments, error):
    done = invoke("build", "--dry-run", *arguments)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().startswith(f"crossboard: error: {error}")


def test_clones_of_the_project_have_their_own_work_folder_and_share_the_kernel(lab, tmp_path):
    board = lab.board()
    other_project = tmp_path / "clone"
    copy_project(other_project)
    other = fake_board(other_project / "project/boards", "fake", "debian: linux-source-6.12")
    ours, theirs = build_folders(board, lab.settings), build_folders(other, lab.settings)
    assert ours["build"] == theirs["build"]
    assert ours["work"] != theirs["work"]


BUILD_IN_A_PROCESS = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from crossboard.board.load import load_board
    from crossboard.pipeline.context import BuildOptions
    from crossboard.pipeline.pipeline import build, build_folders
    from crossboard.settings import Settings
    from fakes import RecordingRuntime
    settings = Settings(cache_dir=Path({cache!r}), out_dir=Path({out!r}), base_image="unused", debian_mirror="unused")
    board = load_board(sys.argv[1], Path({boards!r}))
    manifest = build(board, settings, BuildOptions(echo=True, app_builder="cargo"),
                     runtime=RecordingRuntime(build_folders(board, settings), slow=1.5))
    print("note:", manifest.step("source").note)
""")


def test_two_boards_on_one_tarball_built_at_once_unpack_it_once(lab, tmp_path):
    lab.board("fake")
    lab.board("fake-too")
    script = BUILD_IN_A_PROCESS.format(
        tests=str(PROJECT_ROOT / "tests"),
        cache=str(lab.settings.cache_dir),
        out=str(lab.settings.out_dir),
        boards=str(lab.project / "boards"),
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT
        )
        for name in ("fake", "fake-too")
    ]
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    notes = sorted(line for output in outputs for line in output.splitlines() if line.startswith("note:"))
    assert notes == ["note: already unpacked", "note: unpacked"]


def test_a_build_waits_for_a_held_board_folder_and_names_the_holder(lab):
    lab.board()
    script = BUILD_IN_A_PROCESS.format(
        tests=str(PROJECT_ROOT / "tests"),
        cache=str(lab.settings.cache_dir),
        out=str(lab.settings.out_dir),
        boards=str(lab.project / "boards"),
    )
    with holding(lab.settings.out_dir / "fake", "the output folder of fake"):
        process = subprocess.Popen(
            [sys.executable, "-c", script, "fake"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT
        )
        first = process.stdout.readline()
    output = first + process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert first.startswith("crossboard: waiting for the output folder of fake")
    assert f"held by pid {__import__('os').getpid()} on" in first


def test_a_missing_module_kbuild_is_a_user_error_before_anything_runs(lab):
    (lab.project / "modules/hello_rust/Kbuild").unlink()
    with pytest.raises(UserError, match=r"has no Kbuild file"):
        lab.build()
    assert not (lab.settings.out_dir / "fake").exists()


def test_the_plan_says_which_steps_would_run(lab):
    from crossboard.pipeline.pipeline import steps_that_would_run
    from crossboard.pipeline.steps import STEP_NAMES

    board = lab.board()

    def would(toolchain_id="sha256:fake-1"):
        return steps_that_would_run(
            board, lab.settings, OPTIONS, RecordingRuntime(build_folders(board, lab.settings), toolchain_id)
        )

    assert would() == list(STEP_NAMES)  # never built
    lab.build(board)
    assert would() == ["source", "modules"]  # they always run, and see for themselves that nothing changed
    assert would("sha256:fake-2") == list(STEP_NAMES)  # a new image: everything again
    fragment = lab.project / "boards/fragments/qemu-arm64.config"
    fragment.write_text(fragment.read_text() + "CONFIG_PRINTK_TIME=y\n")
    assert would() == ["source", "configure", "dtbs", "kernel", "devel", "modules", "apps", "collect"]


def test_every_profile_builds_into_its_own_folder_and_a_refused_one_does_not_stop_the_others(lab):
    from crossboard.pipeline.matrix import build_all_profiles, table

    def runtime_for(variant):
        # trixie-backports here has a rustc older than the fake kernel's minimum (1.78.0)
        old = {"rustc": "rustc 1.70.0 (fake)"} if variant.spec.toolchain == "trixie-backports" else {}
        return RecordingRuntime(build_folders(variant, lab.settings), f"sha256:{variant.spec.toolchain}", versions=old)

    rows = build_all_profiles(lab.board(), lab.settings, OPTIONS, "docker", runtime_for)
    assert [(row.profile, row.folder, row.result) for row in rows] == [
        ("trixie", "fake", "built"),
        ("trixie-backports", "fake@trixie-backports", "refused"),
    ]
    assert rows[0].detail == "6.12.0-fake" and rows[0].tools == "rustc 1.85.1, bindgen 0.71.1, llvm 19.1.7"
    assert "rustc 1.70.0 is older than the kernel's minimum 1.78.0" in rows[1].detail
    assert load_manifest(lab.settings.out_dir / "fake")["toolchain"] == "trixie"
    refused = load_manifest(lab.settings.out_dir / "fake@trixie-backports")
    assert refused["toolchain"] == "trixie-backports" and refused["status"] == "failed"
    # nothing past the check ran for the refused profile
    assert [step["name"] for step in refused["steps"] if step["status"] == "done"] == ["source"]
    lines = table(rows).splitlines()
    assert lines[0].split() == ["profile", "tools", "result", "time"]
    assert lines[1].startswith("trixie ") and "built: 6.12.0-fake" in lines[1]
    assert lines[2].startswith("trixie-backports ") and "refused: rustc 1.70.0" in lines[2]


def test_a_build_with_another_profile_plans_folders_of_its_own():
    result = invoke("build", "--board", "qemu-arm64", "--toolchain", "trixie-backports", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "build plan for qemu-arm64 with toolchain profile trixie-backports" in result.stdout
    assert "out/qemu-arm64@trixie-backports -> " in result.stdout
    refused = invoke("build", "--board", "qemu-arm64-uboot", "--toolchain", "trixie", "--dry-run")
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith(
        "--toolchain trixie: toolchain profile trixie does not hold linux-source-7.3 (it holds linux-source-6.12): "
        "name it in the profile's packages.txt, or choose a profile that holds it"
    )


def test_a_kernel_build_writes_a_devel_bundle_that_names_its_kernel_and_tools(lab):
    import tarfile

    manifest, _ = lab.build()
    bundles = [a for a in manifest.artifacts if a["kind"] == "devel"]
    assert [a["path"] for a in bundles] == ["kernel-devel-6.12.0-fake.tar.gz"]
    with tarfile.open(manifest.out_dir / bundles[0]["path"]) as archive:
        names = set(archive.getnames())
        info = json.loads(archive.extractfile("kernel-devel-6.12.0-fake/crossboard-devel.json").read())
    assert {"kernel-devel-6.12.0-fake/rust/libkernel.rmeta", "kernel-devel-6.12.0-fake/Module.symvers"} <= names
    assert "kernel-devel-6.12.0-fake/.builds-on" not in names
    assert info["kernel_release"] == "6.12.0-fake" and info["builds_on"] == "x86_64" and info["board"] == "fake"
    assert info["tools"]["rustc"] == "rustc 1.85.1 (fake)" and info["toolchain"] == "trixie"


def bundle_board(lab, name="against-bundle"):
    first, _ = lab.build()
    bundle = first.out_dir / next(a["path"] for a in first.artifacts if a["kind"] == "devel")
    return first, lab.board(name, kernel_source=f"devel: {bundle}")


def test_a_board_on_a_devel_bundle_builds_its_modules_and_apps_only(lab):
    first, board = bundle_board(lab)
    manifest, commands = lab.build(board)
    assert [record.name for record in manifest.steps] == ["source", "toolchain-check", "modules", "apps", "collect"]
    assert kinds(commands) == ["rustc", "bindgen", "clang", "make M=hello_rust", "cargo fetch", "cargo", "llvm-readelf"]
    module_make = next(argv for argv in commands if argv[0] == "make")
    assert not any(arg.startswith("O=") for arg in module_make)  # the bundle is source and build folder in one
    assert module_make[2].startswith(f"{lab.settings.cache_dir}/sources/devel_")
    assert sorted(a["kind"] for a in manifest.artifacts) == ["app", "config", "module"]
    assert manifest.kernel_release == first.kernel_release and manifest.kernel_build_id == first.kernel_build_id
    assert manifest.devel_bundle["board"] == "fake" and len(manifest.devel_bundle["sha256"]) == 64
    again, commands = lab.build(board)
    assert kinds(commands) == [] and again.step("collect").status == "skipped"


def test_a_devel_bundle_refuses_another_rustc_and_kernel_steps(lab):
    _, board = bundle_board(lab)
    runtime = RecordingRuntime(build_folders(board, lab.settings), versions={"rustc": "rustc 1.96.1 (fake)"})
    with pytest.raises(
        UserError, match=r"built with rustc 1.85.1 \(fake\) \(toolchain profile trixie\), this build has rustc 1.96.1"
    ):
        build(board, lab.settings, OPTIONS, runtime=runtime)
    assert not any(argv[0] == "make" for argv in runtime.commands)
    with pytest.raises(UserError, match="--only kernel: kernel.source is a devel bundle"):
        lab.build(board, options=dataclasses.replace(OPTIONS, only=frozenset({"kernel", "modules"})))


def test_a_damaged_devel_bundle_is_refused_and_nothing_is_kept(lab, tmp_path):
    damaged = tmp_path / "kernel-devel-broken.tar.gz"
    damaged.write_bytes(b"not a tarball")
    board = lab.board("damaged", kernel_source=f"devel: {damaged}")
    with pytest.raises(
        UserError, match=r"kernel.source.devel: .*kernel-devel-broken.tar.gz: not a readable tar archive; nothing was kept$"
    ):
        lab.build(board)
    assert [path.name for path in (lab.settings.cache_dir / "sources").iterdir() if not path.name.endswith(".lock")] == []
