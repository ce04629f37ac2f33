"""The toolchain image and the runtimes, against the real Docker engine."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from debian.debian_support import Version
from fakes import held_packages, held_version, invoke

from crossboard import PROJECT_ROOT
from crossboard.board.load import load_board
from crossboard.errors import StepFailed
from crossboard.pipeline.context import STAMPS
from crossboard.pipeline.pipeline import build_folders
from crossboard.pipeline.stamps import forget
from crossboard.settings import Settings
from crossboard.toolchain.image import context_hash, installed_packages, recipe_hash
from crossboard.toolchain.profiles import load_profile, profile_names
from crossboard.toolchain.runtime import OWNER_LABEL, RUNTIME_LABEL, DockerRuntime, HostRuntime, remove_orphans
from crossboard.toolchain.stream import Tee

pytestmark = pytest.mark.docker


def test_context_hash_follows_content_and_base():
    files = {"Dockerfile": b"FROM x\n"}
    first = context_hash(files, "crossboard/base:trixie")
    assert context_hash(dict(files), "crossboard/base:trixie") == first
    assert context_hash(files, "debian:trixie") != first
    assert context_hash(files | {"packages.txt": b"rustc=1\n"}, "crossboard/base:trixie") != first


def test_each_profile_has_its_own_context_and_tag(settings, toolchain_image, backports_image):
    trixie, backports = load_profile("trixie"), load_profile("trixie-backports")
    # the shared files, with each profile's own beside them
    assert {
        "Dockerfile",
        "record-versions",
        "apt-packages",
        "guest-packages.txt",
        "packages.lock",
    } <= trixie.context_files().keys()
    assert trixie.context_files()["Dockerfile"] == backports.context_files()["Dockerfile"]
    assert trixie.context_files()["packages.lock"] != backports.context_files()["packages.lock"]
    assert recipe_hash(settings, trixie) != recipe_hash(settings, backports)
    assert toolchain_image.ref.startswith("crossboard/toolchain:trixie-")
    assert backports_image.ref.startswith("crossboard/toolchain:trixie-backports-")
    assert backports.apt_suites == ("trixie-backports",) and trixie.apt_suites == ()
    assert "linux-source-7.3" in backports.kernel_sources() and "linux-source-7.3" not in trixie.kernel_sources()


def test_image_holds_the_pinned_toolchain(docker, toolchain_image):
    versions = docker.containers.run(
        toolchain_image.ref,
        ["sh", "-c", "rustc -vV; bindgen --version; clang --version; ld.lld --version; cat /etc/crossboard-versions"],
        remove=True,
    ).decode()
    profile = load_profile("trixie")
    rustc = held_version(docker, toolchain_image.ref, "rustc")
    assert rustc.startswith("1.85.") and f"release: {rustc}" in versions
    assert f"bindgen {held_version(docker, toolchain_image.ref, 'bindgen')}" in versions
    assert "clang version 19.1." in versions and "LLD 19.1." in versions
    assert "glibc-arm64=2.41" in versions
    labels = docker.images.get(toolchain_image.ref).labels
    recorded = held_packages(docker, toolchain_image.ref)
    assert recorded.keys() == {spec.name for spec in profile.packages()}
    # the image holds what the lock says, package by package, unless the archive moved (then it says so)
    installed = installed_packages(docker, toolchain_image.id)
    moved = dict(item.split("=", 1) for item in labels.get("org.crossboard.moved", "").split())
    assert {package for package, version in profile.lock().items() if installed.get(package) != version} == moved.keys()
    assert f"deb:rustc={recorded['rustc']}" in versions
    assert labels["org.crossboard.profile"] == "trixie"


def test_backports_image_holds_its_newer_toolchain(docker, backports_image):
    versions = docker.containers.run(
        backports_image.ref,
        [
            "sh",
            "-c",
            "rustc -vV; clang --version; ld.lld --version; llvm-ar --version; ls /usr/src; cat /etc/crossboard-versions",
        ],
        remove=True,
    ).decode()
    rustc, llvm = held_version(docker, backports_image.ref, "rustc"), held_version(docker, backports_image.ref, "llvm-21")
    assert Version(rustc) >= Version("1.85") and f"release: {rustc}" in versions
    # LLVM=1's unversioned tools are LLVM 21's, not the LLVM 19 bindgen's dependencies bring along
    assert f"clang version {llvm}" in versions and f"LLD {llvm}" in versions and f"LLVM version {llvm}" in versions
    assert "linux-source-7.3.tar.xz" in versions and "linux-source-6.12.tar.xz" in versions
    assert "bindgen=0.71.1" in versions
    assert docker.images.get(backports_image.ref).labels["org.crossboard.profile"] == "trixie-backports"


@pytest.fixture
def docker_runtime(docker, toolchain_image, tmp_path):
    runtime = DockerRuntime(docker, toolchain_image.ref, {"work": tmp_path / "work"}, label="test")
    with runtime:
        yield runtime


def test_docker_exec_returns_the_exit_code_and_streams_to_the_log(docker_runtime, tmp_path):
    with Tee(tmp_path / "step.log", echo=False) as tee:
        assert docker_runtime.run(["sh", "-c", "echo out; echo err >&2; exit 7"], tee) == 7
        with pytest.raises(StepFailed, match="exit code 3"):
            docker_runtime.check(["sh", "-c", "exit 3"], tee, what="failing step")
    # both streams reach the log (docker multiplexes them, so their order is not fixed)
    assert sorted((tmp_path / "step.log").read_text().splitlines()) == ["err", "out"]


def test_docker_files_in_a_mounted_folder_belong_to_the_caller(docker, toolchain_image, tmp_path):
    for user in (f"{os.getuid()}:{os.getgid()}", "1234:2345"):
        folder = tmp_path / user.replace(":", "-")
        folder.mkdir()
        os.chown(folder, *map(int, user.split(":")))  # as a user's own output folder would be
        with DockerRuntime(docker, toolchain_image.ref, {"work": folder}, label="test", user=user) as runtime:
            code, _ = runtime.output(["sh", "-c", f"echo x > {runtime.path('work')}/made"])
            assert code == 0
        made = folder / "made"
        assert f"{made.stat().st_uid}:{made.stat().st_gid}" == user


def test_build_code_cannot_touch_the_project_or_sources_nor_reach_the_network(docker, toolchain_image, tmp_path):
    folders = {name: tmp_path / name for name in ("project", "sources", "work")}
    with DockerRuntime(docker, toolchain_image.ref, folders, label="test") as runtime:
        assert runtime.output(["sh", "-c", "touch /crossboard/project/tasks.py"])[0] != 0
        assert runtime.output(["sh", "-c", "touch /crossboard/sources/Makefile"])[0] != 0
        assert runtime.output(["sh", "-c", "touch /crossboard/work/made"])[0] == 0
        assert runtime.output(["ls", "/sys/class/net"])[1].split() == ["lo"]
        assert "CapEff:\t0000000000000000" in runtime.output(["cat", "/proc/self/status"])[1]
        assert "NoNewPrivs:\t1" in runtime.output(["cat", "/proc/self/status"])[1]
        with runtime.widened(writable=frozenset({"sources"}), network=True) as wider:
            assert wider.output(["sh", "-c", "touch /crossboard/sources/Makefile"])[0] == 0
            assert wider.output(["sh", "-c", "touch /crossboard/project/tasks.py"])[0] != 0
            assert wider.output(["ls", "/sys/class/net"])[1].split() != ["lo"]
    assert not running_test_containers(docker)


class InterruptingTee(Tee):
    def write(self, chunk):
        raise KeyboardInterrupt


def running_test_containers(docker):
    return docker.containers.list(filters={"label": f"{RUNTIME_LABEL}=test"})


def test_an_interrupt_mid_step_leaves_no_container_running(docker, toolchain_image, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with DockerRuntime(docker, toolchain_image.ref, {"work": tmp_path}, label="test") as runtime:
            assert not running_test_containers(docker)  # started by the first command, not before
            assert runtime.run(["true"], Tee(echo=False)) == 0
            assert running_test_containers(docker)
            runtime.run(["sh", "-c", "echo tick; sleep 60"], InterruptingTee(echo=False))
    assert not running_test_containers(docker)


def test_host_runtime_runs_the_same_way(tmp_path):
    runtime = HostRuntime({"work": tmp_path})
    assert runtime.path("work") == str(tmp_path)
    with Tee(tmp_path / "log", echo=False) as tee:
        assert runtime.run(["sh", "-c", "echo hi; exit 4"], tee) == 4
        assert runtime.run(["no-such-command-here"], tee) == 127
    assert Path(tmp_path / "log").read_text().startswith("hi\n")


def test_doctor_reports_real_versions(toolchain_image, qemu_build):

    result = invoke("doctor", "--board", "qemu-arm64", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok    toolchain image {toolchain_image.ref} is current" in result.stdout
    assert "rustc=1.85.1" in result.stdout and "bindgen=0.71.1" in result.stdout
    assert "qemu-arm64: rustc 1.85.1 is newer than the kernel's minimum 1.78.0" in result.stdout
    assert "FAIL" not in result.stdout


def test_doctor_says_what_to_do_when_the_image_is_missing():
    from crossboard.doctor import run_checks
    from crossboard.settings import Settings

    settings = Settings.from_environment(base_image="crossboard/base:no-such-base")
    checks = run_checks(settings)
    missing = [check for check in checks if not check.ok]
    assert [check.todo for check in missing] == [f"run `invoke toolchain --profile {name}`" for name in profile_names()]


def _build_until_kernel_step(out_dir):
    """Start `invoke build` and return it once its manifest says the kernel step runs (its stamp
    forgotten first, so that it runs kbuild's no-op make instead of being skipped)."""
    settings = Settings.from_environment()
    forget(build_folders(load_board("qemu-arm64"), settings)["build"] / "kernel" / STAMPS / "kernel.json")
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "build", "--quiet"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "CROSSBOARD_OUT": str(out_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    manifest = out_dir / "qemu-arm64/manifest.json"
    for _ in range(600):
        if manifest.is_file():
            steps = {s["name"]: s["status"] for s in json.loads(manifest.read_text())["steps"]}
            if steps.get("kernel") == "running":
                return process, manifest
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the build never reached its kernel step")


def test_a_killed_build_leaves_a_readable_manifest_and_its_container_is_reaped(docker, qemu_build, tmp_path):
    process, manifest = _build_until_kernel_step(tmp_path)
    owner_suffix = f":{process.pid}"
    for _ in range(100):  # the container starts with the step's first command, just after the manifest says so
        if any(c.labels[OWNER_LABEL].endswith(owner_suffix) for c in docker.containers.list(filters={"label": OWNER_LABEL})):
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    state = json.loads(manifest.read_text())  # written atomically: never half a file
    steps = {step["name"]: step["status"] for step in state["steps"]}
    assert state["status"] == "running" and steps["kernel"] == "running"
    orphans = [c for c in docker.containers.list(filters={"label": OWNER_LABEL}) if c.labels[OWNER_LABEL].endswith(owner_suffix)]
    assert len(orphans) == 1
    assert orphans[0].name in remove_orphans(docker)


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM (CI cancels)", "SIGHUP (terminal closed)"])
def test_a_signal_that_ends_a_build_unwinds_like_ctrl_c(docker, qemu_build, tmp_path, sent):
    process, manifest = _build_until_kernel_step(tmp_path)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.decode().strip().splitlines()[-1] == "crossboard: error: interrupted"
    state = json.loads(manifest.read_text())
    assert state["status"] == "failed" and state["error"] == "interrupted"
    assert not [
        c
        for c in docker.containers.list(all=True, filters={"label": OWNER_LABEL})
        if c.labels[OWNER_LABEL].endswith(f":{process.pid}")
    ]
