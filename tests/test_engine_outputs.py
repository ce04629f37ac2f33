"""What a far engine sends back lands in out/<board>/ and nowhere else: r01's three escapes of the
2026-12-07 audit (an artifact `../../tasks.py`, an absolute one, a log member `logs/../../../x`), refused
with a fake container in place of the engine's."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from crossboard.errors import InfrastructureError
from crossboard.pipeline.engine_build import Agent

pytestmark = pytest.mark.fast
REMOTE = "/crossboard/state/out/b"


class FakeContainer:
    """docker's get_archive over a dict of files: a file, or a folder as tar members named from it."""

    def __init__(self, files: dict[str, bytes], log_members: dict[str, bytes] | None = None):
        self.files, self.log_members = files, log_members or {}

    def get_archive(self, path: str):
        from docker.errors import NotFound

        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            if path == f"{REMOTE}/logs":
                members = self.log_members
            elif path in self.files:
                members = {Path(path).name: self.files[path]}
            else:
                raise NotFound(path)
            for name, content in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return iter([archive.getvalue()]), {}


def agent_with(container: FakeContainer) -> Agent:
    agent = Agent(client=None, image=None, key="p")  # type: ignore[arg-type]
    agent.builder = container  # type: ignore[assignment]
    return agent


def manifest(*artifacts: tuple[str, bytes]) -> bytes:
    return json.dumps(
        {
            "status": "done",
            "kernel_release": "6.12.117-crossboard",
            "steps": [],
            "artifacts": [
                {"path": path, "kind": "app", "sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}
                for path, content in artifacts
            ],
        }
    ).encode()


@pytest.fixture
def project(tmp_path):
    """A project with its tasks.py and a home beside it, as r01 had them."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project/tasks.py").write_text("# the project's own\n")
    (tmp_path / "home").mkdir()
    (tmp_path / "home/.bashrc").write_text("# the user's own\n")
    return tmp_path


def untouched(project: Path) -> bool:
    return (project / "project/tasks.py").read_text() == "# the project's own\n" and (
        project / "home/.bashrc"
    ).read_text() == "# the user's own\n"


@pytest.mark.parametrize("path", ["../../tasks.py", "{home}/.bashrc", "apps/../../../home/.bashrc", "apps/a b;x"])
def test_an_artifact_the_engine_names_outside_out_is_refused_and_nothing_written(project, path):
    out = project / "project/out/b"
    path = path.format(home=project / "home")
    payload = b"echo pwned by the engine\n"
    container = FakeContainer({f"{REMOTE}/manifest.json": manifest((path, payload)), f"{REMOTE}/{path}": payload})
    with pytest.raises(InfrastructureError, match="sent a manifest crossboard did not write .*not a path inside the output"):
        agent_with(container).fetch_outputs("b", out)
    assert untouched(project) and not out.exists()


def test_a_log_member_that_leads_out_of_the_logs_folder_is_refused(project):
    out = project / "project/out/b"
    container = FakeContainer(
        {f"{REMOTE}/manifest.json": manifest()}, log_members={"logs/kernel.log": b"ok\n", "logs/../../../escaped-log": b"x\n"}
    )
    with pytest.raises(InfrastructureError, match=r"the engine sent .*/logs with 'logs/../../../escaped-log' in it"):
        agent_with(container).fetch_outputs("b", out)
    assert not any(path.name == "escaped-log" for path in project.rglob("*"))


def test_a_link_planted_in_out_does_not_carry_a_fetched_file_elsewhere(project):
    out = project / "project/out/b"
    out.mkdir(parents=True)
    (out / "apps").symlink_to(project / "home")  # left by an earlier build, say
    payload = b"#!/bin/sh\n"
    container = FakeContainer({f"{REMOTE}/manifest.json": manifest(("apps/bashrc", payload)), f"{REMOTE}/apps/bashrc": payload})
    with pytest.raises(InfrastructureError, match=r"names 'apps/bashrc', which leads out of"):
        agent_with(container).fetch_outputs("b", out)
    assert untouched(project)


def test_a_file_whose_content_is_not_the_manifests_is_refused(project):
    out = project / "project/out/b"
    container = FakeContainer({f"{REMOTE}/manifest.json": manifest(("apps/hello", b"one")), f"{REMOTE}/apps/hello": b"another"})
    with pytest.raises(InfrastructureError, match="sent apps/hello with another sha256 than its manifest's"):
        agent_with(container).fetch_outputs("b", out)
    assert not (out / "apps/hello").exists()


def test_a_plain_build_arrives_whole(project):
    out = project / "project/out/b"
    container = FakeContainer(
        {f"{REMOTE}/manifest.json": manifest(("apps/hello", b"\x7fELF")), f"{REMOTE}/apps/hello": b"\x7fELF"},
        log_members={"logs/apps.log": b"built\n"},
    )
    assert agent_with(container).fetch_outputs("b", out) == 1
    assert (out / "apps/hello").read_bytes() == b"\x7fELF" and (out / "logs/apps.log").read_text() == "built\n"
    assert json.loads((out / "manifest.json").read_text())["out_dir"] == str(out)
