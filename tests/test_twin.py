"""beagleplay's twin: the board's own full build (arm64 defconfig + our fragments) booted on QEMU virt,
deployed to as the board would be. Its kernel takes 60-100 minutes on 2 cores, so this runs where that
kernel is already built on the machine (the shared build folder) and is skipped, with the reason in the
summary, where it is not; the rest of beagleplay's build (modules, apps, collect) runs here."""

import json

import pytest
from conftest import QUIET, booted

from crossboard.board.load import load_board
from crossboard.deploy.run import DeployOptions, deploy_many
from crossboard.errors import StepFailed
from crossboard.pipeline.context import KERNEL_WORK, BuildOptions
from crossboard.pipeline.pipeline import build, build_folders, make_runtime, steps_that_would_run
from crossboard.remote.access import Access
from crossboard.virtual import qemu
from crossboard.virtual.twin import twin_of

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.qemu, pytest.mark.beagleplay]


@pytest.fixture(scope="module")
def beagleplay_build(settings, toolchain_image):
    board = load_board("beagleplay")
    runtime = make_runtime("docker", settings, board, build_folders(board, settings), echo=False, prepare=False)
    # the devel bundle of a kernel built before it existed takes seconds: not a reason to skip
    stale = steps_that_would_run(board, settings, BuildOptions(echo=False, only=KERNEL_WORK - {"devel"}), runtime)
    if stale:
        pytest.skip(
            f"beagleplay's full kernel is not built on this machine ({', '.join(stale)} would run, 60-100 min): "
            "invoke build --board beagleplay, then run the tests again"
        )
    return build(board, settings, QUIET)


@pytest.fixture(scope="module")
def twin(beagleplay_build, settings):
    vboard = qemu.VirtualBoard(twin_of(load_board("beagleplay")), settings, twin=True)
    yield from booted(vboard)


def test_the_twin_boots_beagleplay_s_own_kernel_and_deploy_loads_its_modules(twin, beagleplay_build):
    report = deploy_many([twin.board], twin.settings.out_dir, DeployOptions(echo=False), Access(twin.settings.known_hosts))[0]
    assert report["ok"], report
    assert report["board_release"] == beagleplay_build.kernel_release
    assert report["board_kernel_build"] == beagleplay_build.kernel_build_id != ""
    modules = {module["name"]: module for module in report["modules"]}
    assert set(modules) == {"rust_minimal", "rust_print", "hello_rust"}
    assert all(module["loaded"] and module["unloaded"] for module in modules.values())
    assert report["apps"][0]["stdout"].strip() == "Hello, beagleplay! from aarch64"


def test_modules_of_another_build_of_the_same_release_are_refused_on_the_twin(twin, beagleplay_build, qemu_build, tmp_path):
    """qemu-arm64 and beagleplay are two builds of one release (6.12.x-crossboard) from different
    configurations: without MODVERSIONS the kernel would take either's modules; the build ID tells them apart."""
    import shutil

    assert qemu_build.kernel_release == beagleplay_build.kernel_release
    assert qemu_build.kernel_build_id != beagleplay_build.kernel_build_id
    shutil.copytree(qemu_build.out_dir, tmp_path / "out" / "beagleplay")
    with pytest.raises(StepFailed):
        deploy_many([twin.board], tmp_path / "out", DeployOptions(echo=False), Access(twin.settings.known_hosts))
    report = json.loads((tmp_path / "out/beagleplay/deploy.json").read_text())
    assert report["modules"] and all(
        module["refused"].startswith(
            f"{module['name']} was built for kernel build {qemu_build.kernel_build_id[:12]} of "
            f"{qemu_build.kernel_release} but the board runs build {beagleplay_build.kernel_build_id[:12]}"
        )
        for module in report["modules"]
    )
