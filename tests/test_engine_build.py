"""Builds on an engine that cannot see this machine's folders, for real: the local engine with
`--runtime volumes` (no bind mounts at all), then the same engine as a remote one, through
DOCKER_HOST=ssh://... and a test sshd, as a lab's build server is reached. Both build qemu-arm64's
modules and app against the devel bundle of its local build (seconds), not its kernel (minutes)."""

import threading
import time
from pathlib import Path

import pytest
from fakes import invoke

from crossboard import PROJECT_ROOT
from crossboard.artifacts.manifest import load_manifest
from crossboard.pipeline.engine_build import project_key, volume_names
from crossboard.pipeline.steps import STEP_NAMES
from crossboard.toolchain.runtime import RUNTIME_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.root]


def artifacts_by_path(manifest: dict) -> dict[str, dict]:
    return {artifact["path"]: artifact for artifact in manifest["artifacts"]}


def watch_mounts(docker, seen: list, stop: threading.Event) -> threading.Thread:
    """Record the mounts of every engine-build container while the build runs (it is removed after)."""

    def poll():
        while not stop.is_set():
            for container in docker.containers.list(filters={"label": f"{RUNTIME_LABEL}=engine"}):
                seen.append([(mount["Type"], mount["Destination"]) for mount in container.attrs["Mounts"]])
            time.sleep(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def bundle(qemu_build) -> Path:
    return next(qemu_build.out_dir.glob("kernel-devel-*.tar.gz"))


def test_a_volumes_build_sends_the_project_brings_back_the_outputs_and_then_moves_only_changes(
    bundle, qemu_build, docker, tmp_path
):
    out = tmp_path / "out"
    seen: list = []
    stop = threading.Event()
    watcher = watch_mounts(docker, seen, stop)
    try:
        first = invoke(
            "build", "--quiet", "--runtime", "volumes", "--kernel-source", f"devel:{bundle}", timeout=600, CROSSBOARD_OUT=str(out)
        )
    finally:
        stop.set()
        watcher.join()
    assert first.returncode == 0, first.stdout + first.stderr
    assert seen and all(kind == "volume" for mounts in seen for kind, _ in mounts), seen  # no bind mount at all
    assert "on the engine at unix://" in first.stdout

    remote, local = load_manifest(out / "qemu-arm64"), load_manifest(qemu_build.out_dir)
    assert remote["status"] == "done" and remote["out_dir"] == str(out / "qemu-arm64")
    # what deploy checks is the local build's: the kernel it is for, and each module's vermagic
    assert (remote["kernel_release"], remote["kernel_build_id"]) == (local["kernel_release"], local["kernel_build_id"])
    assert remote["image"]["id"] == local["image"]["id"]
    for path, artifact in artifacts_by_path(remote).items():
        assert (out / "qemu-arm64" / path).stat().st_size == artifact["size"]
        if artifact["kind"] == "module":
            assert artifact["vermagic"] == artifacts_by_path(local)[path]["vermagic"]
    assert {a["kind"] for a in remote["artifacts"]} >= {"module", "app", "config"}
    assert (out / "qemu-arm64/logs/modules.log").is_file()

    again = invoke(
        "build", "--quiet", "--runtime", "volumes", "--kernel-source", f"devel:{bundle}", timeout=600, CROSSBOARD_OUT=str(out)
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 changed files sent, 0 removed" in again.stdout and "0 changed artifacts fetched" in again.stdout


def test_a_remote_engine_through_ssh_builds_as_the_local_one(bundle, qemu_build, ssh_lab, docker, tmp_path):
    from sshd import ENGINE_USER, docker_over_ssh

    server = ssh_lab.server()
    out = tmp_path / "out"
    environment = docker_over_ssh(tmp_path, server, ssh_lab.key) | {"CROSSBOARD_OUT": str(out)}
    built = invoke("build", "--quiet", "--kernel-source", f"devel:{bundle}", timeout=600, **environment)
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"on the engine at ssh://{ENGINE_USER}@127.0.0.1:{server.port}" in built.stdout
    manifest = load_manifest(out / "qemu-arm64")
    assert manifest["status"] == "done" and {a["kind"] for a in manifest["artifacts"]} >= {"module", "app"}

    # a module source changed here is the one file sent, and its module the one artifact rebuilt
    source = PROJECT_ROOT / "modules/hello_rust/hello_rust.rs"
    original = source.read_text()
    try:
        source.write_text(original + "\n// changed by test_engine_build\n")
        changed = invoke("build", "--quiet", "--kernel-source", f"devel:{bundle}", timeout=600, **environment)
    finally:
        source.write_text(original)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "1 changed files sent" in changed.stdout, changed.stdout

    # a mistake in the build on the engine is its one line here, with its exit code
    broken = invoke("build", "--only", "nosuchstep", timeout=120, **environment)
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert broken.stderr.strip() == f"crossboard: error: --only: unknown step nosuchstep (steps: {', '.join(STEP_NAMES)})"
    volume = docker.volumes.get(volume_names(project_key(PROJECT_ROOT))["project"])  # the project's own, labelled as crossboard's
    assert volume.attrs["Labels"]["org.crossboard.volume"] == "crossboard"
