"""A build on an engine that cannot see this machine (pipeline/engine_build.py): its pure logic, no engine."""

import hashlib
import json

import pytest

from crossboard.errors import FailedElsewhere, exit_code_for
from crossboard.pipeline.engine_build import BUNDLES, changes, fingerprint, project_files, project_key, volume_names
from crossboard.toolchain import engine
from crossboard.toolchain.runtime import IMAGE_INSIDE, HostRuntime, image_inside

pytestmark = pytest.mark.fast


def test_project_files_leave_out_what_builds_write(tmp_path):
    for name in (
        "boards/qemu.yaml",
        "modules/m/Kbuild",
        "apps/a/src/main.rs",
        "apps/a/target/debug/a",
        ".git/HEAD",
        "out/qemu/Image",
        "crossboard/__pycache__/x.pyc",
        "crossboard.egg-info/PKG-INFO",
        "out/qemu/bundle.tar.gz",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert sorted(project_files(tmp_path)) == ["apps/a/src/main.rs", "boards/qemu.yaml", "modules/m/Kbuild"]


def test_changes_send_new_and_changed_files_and_remove_the_gone():
    far = {"a": "1:-", "b": "2:-", "gone": "3:-"}
    local = {"a": "1:-", "b": "2:x", "new": "4:-"}
    assert changes(local, far) == (["b", "new"], ["gone"])
    assert changes(local, local) == ([], [])


def test_what_the_engine_holds_as_another_thing_than_a_file_is_removed_and_sent_again():
    # a link planted where crossboard/steps.py was, or a planted file beside it
    far = {"crossboard/steps.py": "not a file", "crossboard/evil.py": "5:-"}
    send, remove = changes({"crossboard/steps.py": "1:-"}, far)
    assert (send, remove) == (["crossboard/steps.py"], ["crossboard/evil.py", "crossboard/steps.py"])


def test_a_file_made_executable_counts_as_changed(tmp_path):
    script = tmp_path / "make-root"
    script.write_text("#!/bin/sh\n")
    before = fingerprint(script)
    script.chmod(0o755)
    assert fingerprint(script) != before and fingerprint(script).endswith(":x")


def test_each_project_on_a_machine_has_its_own_volume(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = (volume_names(project_key(tmp_path / name)) for name in ("one", "two"))
    assert set(one.values()).isdisjoint(two.values())
    assert one == volume_names(project_key(tmp_path / "one"))
    assert BUNDLES.startswith(".")  # beside the project's own files, never one of them


def test_a_host_runtime_inside_the_image_reports_it(monkeypatch):
    monkeypatch.setenv(IMAGE_INSIDE, "crossboard/toolchain:trixie-0123@sha256:abcd")
    assert image_inside() == {"ref": "crossboard/toolchain:trixie-0123", "id": "sha256:abcd"}
    assert HostRuntime({}, image_inside()).toolchain()["id"] == "sha256:abcd"
    monkeypatch.setenv(IMAGE_INSIDE, "no-id")
    assert image_inside() == {}
    monkeypatch.delenv(IMAGE_INSIDE)
    assert HostRuntime({}).toolchain() == {}


def test_the_engine_is_docker_host_else_the_current_context(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "ssh://builder@lab")
    assert engine.engine_url() == "ssh://builder@lab" and not engine.is_local("ssh://builder@lab")
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setenv("HOME", str(tmp_path))  # the docker CLI's config and contexts live in ~/.docker
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    assert engine.is_local(engine.engine_url())
    context = tmp_path / ".docker/contexts/meta" / hashlib.sha256(b"builder").hexdigest()
    context.mkdir(parents=True)
    (context / "meta.json").write_text(
        json.dumps(
            {"Name": "builder", "Metadata": {}, "Endpoints": {"docker": {"Host": "tcp://10.0.0.5:2375", "SkipTLSVerify": False}}}
        )
    )
    (tmp_path / ".docker/config.json").write_text(json.dumps({"currentContext": "builder"}))  # docker context use builder
    assert engine.engine_url() == "tcp://10.0.0.5:2375"
    (tmp_path / ".docker/config.json").write_text("{}")
    assert engine.is_local(engine.engine_url())
    monkeypatch.setenv("DOCKER_CONTEXT", "builder")
    assert engine.engine_url() == "tcp://10.0.0.5:2375"
    monkeypatch.setenv("DOCKER_CONTEXT", "nowhere")
    with pytest.raises(Exception, match="no Docker context named 'nowhere'"):
        engine.engine_url()


def test_an_error_from_elsewhere_keeps_its_exit_code():
    assert exit_code_for(FailedElsewhere("boards/x.yaml: bad", 2)) == 2


def test_commands_that_bind_mount_refuse_a_remote_engine_before_asking_it_anything(monkeypatch, tmp_path):
    from crossboard.board.load import load_board
    from crossboard.errors import UserError
    from crossboard.pipeline.pipeline import make_runtime
    from crossboard.settings import Settings

    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2375")  # nothing answers there: it must not be asked
    with pytest.raises(UserError, match=r"the Docker engine at tcp://10\.0\.0\.5:2375 cannot see this machine's folders"):
        make_runtime(
            "docker", Settings.from_environment(), load_board("qemu-arm64"), {"work": tmp_path}, echo=False, prepare=True
        )


def test_only_this_pid_namespaces_orphans_are_removed():
    """The audit's L11: CI jobs that share an engine and a host name but not a PID namespace saw each
    other's builds as orphans (their pids do not exist here) and removed them."""
    import socket
    from types import SimpleNamespace

    from crossboard.toolchain.runtime import OWNER_LABEL, owner_label, remove_orphans

    dead = 2**22 + 1  # above pid_max: no such process here
    removed = []

    def container(name, label):
        return SimpleNamespace(name=name, labels={OWNER_LABEL: label}, remove=lambda force: removed.append(name))

    host, namespace, _ = owner_label().split(":")
    containers = [
        container("ours-dead", f"{host}:{namespace}:{dead}"),
        container("ours-alive", owner_label()),
        container("other-namespace", f"{host}:4026530000:{dead}"),
        container("other-host", f"elsewhere-{socket.gethostname()}:{namespace}:{dead}"),
        container("older-label", f"{host}:{dead}"),
    ]
    client = SimpleNamespace(containers=SimpleNamespace(list=lambda all, filters: containers))
    assert remove_orphans(client) == ["ours-dead"] and removed == ["ours-dead"]
