"""A build on an engine keeps a local build's confinement (2026-12-07 audit, M1), on the real engine and
image: the build pass has no network and cannot change the project or the shared kernel sources; the
fetch pass has the network and the sources, not the project; neither is root; and what the engine's copy
of the project holds is read from its files, so a file planted there (r12) is replaced at the next sync;
and no volume is shared with another project."""

import pytest

from crossboard.pipeline.engine_build import BUILD_USER, SOURCES_DIR, STATE_DIR, agent_on, project_files

pytestmark = pytest.mark.docker


def shell(agent, container, script: str, user: str = BUILD_USER) -> tuple[int, str]:
    exec_id, stream = agent.run(container, ["sh", "-c", script], user=user)
    output = b"".join(stream).decode(errors="replace")
    return agent.exit_code(exec_id), output


@pytest.fixture
def project(tmp_path, docker):
    """A project of two files; its volumes on the engine are removed after the test."""
    from crossboard.pipeline.engine_build import project_key, volume_names

    root = tmp_path / "project"
    (root / "crossboard").mkdir(parents=True)
    (root / "tasks.py").write_text("# the project's own\n")
    (root / "crossboard/steps.py").write_text("STEPS = []\n")
    yield root
    for name in volume_names(project_key(root)).values():
        docker.volumes.get(name).remove()


def test_the_build_pass_reaches_nothing_the_fetch_pass_only_the_network_and_the_sources(docker, toolchain_image, project):
    planted_source = f"{SOURCES_DIR}/crossboard-test-{project.parent.name}"
    with agent_on(docker, toolchain_image, project) as agent:
        agent.sync_project(project_files(project))
        tasks = f"{agent.project_dir}/tasks.py"
        try:
            build, fetch = agent.builder, agent.fetcher
            assert shell(agent, build, f"touch {tasks}")[0] != 0
            assert shell(agent, build, f"touch {planted_source}")[0] != 0
            assert shell(agent, build, f"mkdir -p {STATE_DIR}/out && touch {STATE_DIR}/out/made")[0] == 0
            assert shell(agent, build, "ls /sys/class/net")[1].split() == ["lo"]
            status = shell(agent, build, "id -u; cat /proc/self/status")[1]
            assert status.split()[0] == BUILD_USER.split(":")[0]
            assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status

            assert shell(agent, fetch, f"touch {tasks}")[0] != 0  # the sync's, root's
            assert shell(agent, fetch, f"touch {planted_source}")[0] == 0
            assert shell(agent, fetch, "ls /sys/class/net")[1].split() != ["lo"]
            assert "CapEff:\t0000000000000000" in shell(agent, fetch, "cat /proc/self/status")[1]
        finally:
            shell(agent, agent.fetcher, f"rm -f {planted_source}")


def test_a_file_planted_in_the_engines_copy_is_found_by_its_content_and_replaced(docker, toolchain_image, project):
    files = project_files(project)
    with agent_on(docker, toolchain_image, project) as agent:
        assert agent.sync_project(files) == (2, 0)
        assert agent.sync_project(files) == (0, 0)
        steps, tasks = f"{agent.project_dir}/crossboard/steps.py", f"{agent.project_dir}/tasks.py"
        plant = f"echo 'import os' >> {tasks}; echo x > {agent.project_dir}/crossboard/evil.py; rm {steps}; ln -s /tmp {steps}"
        assert shell(agent, agent.fetcher, plant, user="0:0")[0] == 0  # as r12's build did, as root
        assert agent.sync_project(files) == (2, 2)  # steps.py and tasks.py sent; evil.py and the link removed
        assert agent.read(steps) == b"STEPS = []\n" and agent.read(tasks) == b"# the project's own\n"
        assert agent.sync_project(files) == (0, 0)
    key = agent.project_dir.rsplit("/", 1)[1]
    assert sorted(agent.volumes.values()) == [f"crossboard-{role}-{key}" for role in ("project", "sources", "state")]
