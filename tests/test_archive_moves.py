"""Toolchain images while the archive moves under their lock: a small apt repository made with Debian's
own tools (dpkg-deb, apt-ftparchive), served by a real HTTP server on 127.0.0.1, whose one package goes
from version 1.0 to 2.0 between builds. The profile's image starts from a base with no Debian sources,
so these builds see only that repository."""

import dataclasses
import http.server
import os
import random
import socket
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from crossboard.errors import InfrastructureError, UserError
from crossboard.toolchain import image as toolchain_image
from crossboard.toolchain.base_image import ensure_base_image
from crossboard.toolchain.image import LABEL_PREFIX, current_image, installed_packages, prepare_toolchain
from crossboard.toolchain.lockfile import update_lock
from crossboard.toolchain.profiles import load_profile
from crossboard.toolchain.stream import Tee

pytestmark = [pytest.mark.docker, pytest.mark.root]
PROBE = "crossboard-probe"
BASE = "crossboard/test-base:no-sources"


def make_deb(folder: Path, version: str) -> None:
    root = folder / f"build-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc" / PROBE).mkdir(parents=True)
    (root / "usr/share/doc" / PROBE / "version").write_text(version + "\n")
    (root / "DEBIAN/control").write_text(
        f"Package: {PROBE}\nVersion: {version}\nArchitecture: all\nMaintainer: crossboard tests <t@example.invalid>\n"
        "Description: a package whose version the tests move\n"
    )
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(folder / f"{PROBE}_{version}_all.deb")], check=True
    )


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # apt's requests are the test's business, not its output
        pass


class Archive:
    """A flat apt repository (`deb [trusted=yes] URL ./`) holding one version of the probe package, its
    Release also clearsigned as InRelease (as a Debian mirror's: a proxy then caches the file apt asks
    for first) by a key made for the test."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir()
        self.gnupg = {**os.environ, "GNUPGHOME": str(folder.parent / "gnupg")}
        (folder.parent / "gnupg").mkdir(mode=0o700)
        make_key = ["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", "crossboard test archive", "ed25519"]
        subprocess.run([*make_key, "sign", "never"], env=self.gnupg, check=True)
        # below 32768: apt-cacher-ng 3.7 cannot reach a port above 32767 either
        serve = partial(QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port_below_32768()), serve)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def holds(self, version: str) -> None:
        for old in self.folder.glob("*.deb"):
            old.unlink()
        make_deb(self.folder, version)
        for build in self.folder.glob("build-*"):
            subprocess.run(["rm", "-rf", str(build)], check=True)
        packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=self.folder, check=True, capture_output=True).stdout
        (self.folder / "Packages").write_bytes(packages)
        release = subprocess.run(["apt-ftparchive", "release", "."], cwd=self.folder, check=True, capture_output=True).stdout
        (self.folder / "Release").write_bytes(release)
        (self.folder / "InRelease").unlink(missing_ok=True)
        clearsign = ["gpg", "--batch", "--quiet", "--clearsign", "-o", "InRelease", "Release"]
        subprocess.run(clearsign, cwd=self.folder, env=self.gnupg, check=True)


@pytest.fixture
def archive(tmp_path):
    archive = Archive(tmp_path / "archive")
    yield archive
    archive.server.shutdown()


@pytest.fixture(scope="module")
def no_sources_base(settings, docker):
    """Debian's trixie base with its sources removed: only a profile's own sources are seen."""
    with Tee(settings.cache_dir / "logs" / "test-base.log", echo=False) as tee:
        ensure_base_image(docker, settings, tee)
    docker.images.build(
        fileobj=toolchain_image.context_tar(
            {"Dockerfile": f"FROM {settings.base_image}\nRUN rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*\n".encode()}
        ),
        custom_context=True,
        tag=BASE,
        rm=True,
    )
    return BASE


@pytest.fixture(autouse=True)
def no_layers_left(docker):
    """A build refused halfway keeps the layers of the steps before (Docker's build cache): the test's
    own are removed after it, those on the test base only."""
    yield
    base = docker.images.list(name=BASE)
    for image in docker.images.list(filters={"dangling": True}) if base else []:
        if any(layer["Id"] == base[0].id for layer in image.history()):
            docker.images.remove(image.id, force=True)


@pytest.fixture
def probe_profile(tmp_path, archive):
    """A profile whose image installs the probe and downloads it for a guest, with a floor of 0.5."""
    folder = tmp_path / "profiles" / "probe"
    folder.mkdir(parents=True)
    (folder / "profile.yaml").write_text(f'description: the probe\napt_sources: ["deb [trusted=yes] {archive.url} ./"]\n')
    (folder / "packages.txt").write_text(f"{PROBE} >= 0.5\n")
    (folder / "guest-packages.txt").write_text(f"{PROBE}\n")
    (folder / "engine-packages.txt").write_text("# none\n")
    load_profile.cache_clear()
    return load_profile("probe", folder.parent)


@pytest.fixture
def probe_settings(settings, no_sources_base, tmp_path):
    return dataclasses.replace(settings, base_image=no_sources_base, cache_dir=tmp_path / "cache")


def probe_version(docker, image_id: str) -> str:
    return installed_packages(docker, image_id)[f"{PROBE}:amd64"]


def remove_images(docker, profile):
    for image in docker.images.list(filters={"label": f"{LABEL_PREFIX}profile={profile.name}"}):
        docker.images.remove(image.id, force=True)


def test_an_image_falls_back_to_what_the_archive_offers_now_and_says_what_moved(docker, archive, probe_profile, probe_settings):
    archive.holds("1.0")
    try:
        # the lock written from the archive as it was
        changed = update_lock(probe_settings, probe_profile, echo=False)
        assert f"+{PROBE}:amd64=1.0" in changed
        first = current_image(docker, probe_settings, probe_profile)
        assert first is not None and probe_version(docker, first.id) == "1.0"
        assert first.tags[0].startswith("crossboard/toolchain:probe-")

        # the archive moves: 1.0 is gone; a fresh machine (no image) still builds, with 2.0, and says so
        archive.holds("2.0")
        remove_images(docker, probe_profile)
        _, image = prepare_toolchain(probe_settings, probe_profile, echo=False)
        assert image.built_now and image.moved == ((f"{PROBE}:amd64", "1.0", "2.0"),)
        built = docker.images.get(image.ref)
        assert probe_version(docker, built.id) == "2.0"
        assert built.labels[f"{LABEL_PREFIX}packages"] == f"{PROBE}=2.0"
        assert built.labels[f"{LABEL_PREFIX}moved"] == f"{PROBE}:amd64=1.0->2.0"
        assert image.ref != first.tags[0]  # tagged by what it holds
        versions = docker.containers.run(built.id, ["cat", "/etc/crossboard-versions"], remove=True).decode()
        assert f"deb:{PROBE}=2.0" in versions
        guest = docker.containers.run(built.id, ["ls", "/usr/share/crossboard/guest-debs"], remove=True).decode()
        assert f"{PROBE}_2.0_all.deb" in guest
        log = (probe_settings.cache_dir / "logs" / "toolchain-probe.log").read_text()
        assert f"{PROBE}:amd64 1.0 -> 2.0" in log and "--update-lock" in log

        # found again without building, and the lock, updated, names it exactly
        assert prepare_toolchain(probe_settings, probe_profile, echo=False)[1].built_now is False
        assert update_lock(probe_settings, probe_profile, echo=False) == [f"-{PROBE}:amd64=1.0", f"+{PROBE}:amd64=2.0"]
        assert prepare_toolchain(probe_settings, probe_profile, echo=False)[1].moved == ()
        # no build left a container behind (the label step's, say)
        assert docker.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}profile=probe"}) == []
    finally:
        remove_images(docker, probe_profile)


def test_a_version_below_the_floor_is_refused_and_nothing_is_tagged(docker, archive, probe_profile, probe_settings):
    archive.holds("0.1")
    with pytest.raises(
        InfrastructureError, match=rf"packages.txt: the archive offers {PROBE} 0.1, below the profile's floor 0.5"
    ):
        prepare_toolchain(probe_settings, probe_profile, echo=False)
    assert docker.images.list(filters={"label": f"{LABEL_PREFIX}profile=probe"}) == []


def test_a_lock_naming_a_package_no_suite_has_is_one_line(docker, archive, probe_profile, probe_settings):
    archive.holds("1.0")
    (probe_profile.folder / "packages.lock").write_text(f"{PROBE}:amd64=1.0\nno-such-package:amd64=3.0\n")
    with pytest.raises(UserError, match="packages.lock names no-such-package which no configured suite has"):
        prepare_toolchain(probe_settings, probe_profile, echo=False)
    assert docker.images.list(filters={"label": f"{LABEL_PREFIX}profile=probe"}) == []


def test_a_source_that_does_not_answer_is_the_machines_error_not_a_missing_package(archive, probe_profile, probe_settings):
    archive.holds("1.0")
    archive.server.shutdown()
    archive.server.server_close()
    unread = r"no configured suite has a package crossboard-probe; apt could not read every source \(W: .*127.0.0.1"
    with pytest.raises(InfrastructureError, match=unread):
        prepare_toolchain(probe_settings, probe_profile, echo=False)


def test_an_unreachable_proxy_is_one_line_before_anything_is_made(probe_profile, probe_settings):
    proxied = dataclasses.replace(probe_settings, apt_proxy="http://127.0.0.1:9")
    with pytest.raises(InfrastructureError, match=r"apt proxy http://127.0.0.1:9: cannot connect"):
        prepare_toolchain(proxied, probe_profile, echo=False)


class AptCacherNg:
    """Debian's apt-cacher-ng on 127.0.0.1, its cache in the test's folder; `offline`: it serves what it
    cached and asks no server (a lab's proxy that kept what the archive dropped)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port_below_32768()  # apt-cacher-ng 3.7 cannot bind a port above 32767
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, offline: bool = False) -> None:
        self.stop()
        (self.folder / "conf").mkdir(parents=True, exist_ok=True)
        (self.folder / "conf/acng.conf").write_text(
            f"CacheDir: {self.folder / 'cache'}\nLogDir: {self.folder}\nPort: {self.port}\nBindAddress: 127.0.0.1\n"
            f"PidFile: {self.folder / 'pid'}\nSocketPath: {self.folder / 'socket'}\nForeGround: 1\n"
            f"AllowUserPorts: 0\nOfflinemode: {int(offline)}\n"
        )
        argv = ["apt-cacher-ng", "-c", str(self.folder / "conf")]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):  # bounded: 10 s
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"apt-cacher-ng did not listen on {self.port} (log: {self.folder})")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def cached(self) -> list[str]:
        return sorted(path.name for path in (self.folder / "cache").rglob("*.deb"))


def free_port_below_32768() -> int:
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port between 20000 and 32000")


@pytest.fixture
def apt_proxy(tmp_path):
    proxy = AptCacherNg(tmp_path / "apt-cacher-ng")
    yield proxy
    proxy.stop()


def test_through_an_apt_proxy_that_kept_the_locked_version_the_build_gets_it_again(
    docker, archive, probe_profile, probe_settings, apt_proxy
):
    proxied = dataclasses.replace(probe_settings, apt_proxy=apt_proxy.url)
    archive.holds("1.0")
    apt_proxy.start()
    try:
        assert f"+{PROBE}:amd64=1.0" in update_lock(proxied, probe_profile, echo=False)
        assert apt_proxy.cached() == [f"{PROBE}_1.0_all.deb"]  # every apt of the build went through it
        # the archive moves on; the lab's proxy keeps what it has (offline: it asks the archive nothing)
        archive.holds("2.0")
        apt_proxy.start(offline=True)
        remove_images(docker, probe_profile)
        _, image = prepare_toolchain(proxied, probe_profile, echo=False)
        assert image.built_now and image.moved == ()
        assert probe_version(docker, image.id) == "1.0"
    finally:
        remove_images(docker, probe_profile)


def test_a_mirror_that_does_not_answer_is_one_line_and_nothing_is_tagged(docker, tmp_path):
    from fakes import invoke

    from crossboard.settings import default_base_image

    mirror = f"http://127.0.0.1:{free_port_below_32768()}/debian"
    done = invoke("toolchain", "--profile", "trixie", "--mirror", mirror, CROSSBOARD_CACHE=str(tmp_path / "cache"), timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.startswith("crossboard: error: debootstrap failed") and done.stderr.count("\n") == 1
    assert docker.images.list(name=default_base_image(mirror)) == []
    assert not (tmp_path / "cache/toolchain-choice.json").exists()  # a mirror that failed is not remembered
