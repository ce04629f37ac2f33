"""A profile's packages.txt, its lock, and which image answers for them: pure logic, no engine."""

import dataclasses
from types import SimpleNamespace

import pytest

from crossboard.errors import UserError
from crossboard.settings import DEFAULT_BASE_IMAGE, DEFAULT_MIRROR, Settings, default_base_image
from crossboard.toolchain.image import (
    LABEL_PREFIX,
    check_proxy,
    contents_hash,
    current_image,
    moved_message,
    moved_packages,
    recipe_hash,
)
from crossboard.toolchain.profiles import PackageSpec, load_profile, locked_version

pytestmark = pytest.mark.fast


def profile_in(tmp_path, packages: str, lock: str | None = None, name: str = "p"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "profile.yaml").write_text("description: a test profile\n")
    (folder / "packages.txt").write_text(packages)
    if lock is not None:
        (folder / "packages.lock").write_text(lock)
    load_profile.cache_clear()
    return load_profile(name, tmp_path)


def test_packages_txt_names_suites_architectures_and_floors(tmp_path):
    profile = profile_in(
        tmp_path, "# tools\nrustc/trixie-backports >= 1.85\nlibstd-rust-dev:arm64/trixie-backports\nmake  # any\n"
    )
    assert profile.packages() == [
        PackageSpec("rustc", None, "trixie-backports", "1.85"),
        PackageSpec("libstd-rust-dev", "arm64", "trixie-backports", None),
        PackageSpec("make", None, None, None),
    ]


@pytest.mark.parametrize("line", ["rustc=1.85", "rustc >= not a version", "Rustc", "rustc > 1.0"])
def test_a_packages_txt_line_that_is_not_a_package_is_one_line_naming_it(tmp_path, line):
    profile = profile_in(tmp_path, f"make\n{line}\n")
    with pytest.raises(UserError, match=rf"p/packages.txt:2: '{line}' is not `name\[:arch\]\[/suite\] \[>= version\]`"):
        profile.packages()


def test_the_lock_maps_each_package_and_architecture_to_its_version(tmp_path):
    profile = profile_in(
        tmp_path, "rustc\n", "# written by crossboard\nrustc:amd64=1.98.1+dfsg1-1~bpo13+1\nlibc6:arm64=2.41-12\n"
    )
    lock = profile.lock()
    assert lock == {"rustc:amd64": "1.98.1+dfsg1-1~bpo13+1", "libc6:arm64": "2.41-12"}
    assert locked_version(lock, "rustc") == "1.98.1+dfsg1-1~bpo13+1"
    assert locked_version(lock, "libc6", "amd64") is None


def test_a_profile_without_a_lock_builds_from_the_archive(tmp_path):
    profile = profile_in(tmp_path, "rustc\n")
    assert profile.lock() == {} and profile.context_files()["packages.lock"] == b""


@pytest.mark.parametrize("line", ["rustc=1.98", "rustc:amd64 1.98", "rustc:amd64=1.98 ; rm -rf /"])
def test_a_bad_lock_line_is_one_line_naming_it(tmp_path, line):
    profile = profile_in(tmp_path, "rustc\n", f"make:amd64=4.4\n{line}\n")
    with pytest.raises(UserError, match=r"p/packages.lock:2: .* is not `name:arch=version`"):
        profile.lock()


def test_a_lock_below_a_floor_is_refused_naming_both_versions(tmp_path):
    profile = profile_in(tmp_path, "rustc >= 1.85\n", "rustc:amd64=1.80.0+dfsg1-1\n")
    with pytest.raises(
        UserError, match=r"packages.lock: rustc 1.80.0\+dfsg1-1 is below packages.txt's floor 1.85: .*--update-lock"
    ):
        profile.check_lock()
    # Debian's version order, not the string's: 1.100 is above 1.85, and an epoch above them all
    profile_in(tmp_path, "rustc >= 1.85\n", "rustc:amd64=1.100.0-1\n", name="q").check_lock()
    profile_in(tmp_path, "clang >= 1:19\n", "clang:amd64=1:21.1.8-3\n", name="r").check_lock()


def test_what_moved_is_said_in_one_line_with_how_to_get_the_lock_back(tmp_path):
    lock = {"rustc:amd64": "1.96.1+dfsg1-2~bpo13+1", "make:amd64": "4.4.1-2", "gone:amd64": "1"}
    installed = {"rustc:amd64": "1.98.1+dfsg1-1~bpo13+1", "make:amd64": "4.4.1-2", "new:amd64": "2"}
    moved = moved_packages(lock, installed)
    assert moved == [("rustc:amd64", "1.96.1+dfsg1-2~bpo13+1", "1.98.1+dfsg1-1~bpo13+1")]
    profile = profile_in(tmp_path, "rustc\n")
    line = moved_message(profile, moved)
    assert "\n" not in line
    assert "rustc:amd64 1.96.1+dfsg1-2~bpo13+1 -> 1.98.1+dfsg1-1~bpo13+1" in line
    assert "--mirror" in line and "--apt-proxy" in line and "invoke toolchain --profile p --update-lock" in line
    many = [(f"p{i}:amd64", "1", "2") for i in range(9)]
    assert moved_message(profile, many).endswith("--update-lock` locks these") and "and 3 more" in moved_message(profile, many)


def fake_image(id, created, **labels):
    return SimpleNamespace(id=id, tags=[f"crossboard/toolchain:p-{id}"], attrs={"Created": created}, labels=labels)


class FakeImages:
    def __init__(self, images):
        self.images = images

    def list(self, filters):
        (wanted,) = filters["label"]
        key, value = wanted.split("=", 1)
        return [image for image in self.images if image.labels.get(key) == value]


def test_the_image_holding_the_lock_wins_over_one_built_from_it_that_moved(tmp_path):
    profile = profile_in(tmp_path, "rustc\n", "rustc:amd64=1.98\n")
    settings = Settings(cache_dir=tmp_path, out_dir=tmp_path, base_image="b", debian_mirror=DEFAULT_MIRROR)
    recipe, lock = recipe_hash(settings, profile), profile.lock()
    moved_newer = fake_image(
        "moved", "2026-12-07", **{f"{LABEL_PREFIX}recipe": recipe, f"{LABEL_PREFIX}lock": contents_hash(recipe, lock)}
    )
    exact = fake_image(
        "exact", "2026-12-01", **{f"{LABEL_PREFIX}recipe": recipe, f"{LABEL_PREFIX}contents": contents_hash(recipe, lock)}
    )
    other_recipe = fake_image(
        "other", "2026-12-08", **{f"{LABEL_PREFIX}recipe": "x", f"{LABEL_PREFIX}contents": contents_hash(recipe, lock)}
    )
    client = SimpleNamespace(images=FakeImages([moved_newer, exact, other_recipe]))
    assert current_image(client, settings, profile).id == "exact"
    client = SimpleNamespace(images=FakeImages([moved_newer, other_recipe]))
    assert current_image(client, settings, profile).id == "moved"
    # another lock, another mirror: no image answers for them yet
    (profile.folder / "packages.lock").write_text("rustc:amd64=1.99\n")
    assert current_image(client, settings, profile) is None
    (profile.folder / "packages.lock").write_text("rustc:amd64=1.98\n")
    assert current_image(client, dataclasses.replace(settings, debian_mirror="http://snapshot/"), profile) is None


def test_a_mirror_of_its_own_gets_a_base_of_its_own():
    assert default_base_image(DEFAULT_MIRROR) == DEFAULT_BASE_IMAGE
    snapshot = default_base_image("http://snapshot.debian.org/archive/debian/20261120T000000Z/")
    assert snapshot.startswith(DEFAULT_BASE_IMAGE + "-") and snapshot != default_base_image("http://mirror.lab/debian")


def test_the_proxy_setting_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CROSSBOARD_APT_PROXY", "http://127.0.0.1:3142")
    assert Settings.from_environment().apt_proxy == "http://127.0.0.1:3142"
    assert Settings.from_environment(apt_proxy="http://proxy.lab:3142").apt_proxy == "http://proxy.lab:3142"


@pytest.mark.parametrize("proxy", ["127.0.0.1:3142", "https://proxy.lab", "socks5://x:1"])
def test_a_proxy_that_is_not_http_host_port_is_bad_input(proxy):
    with pytest.raises(UserError, match="give it as http://HOST:PORT"):
        check_proxy(proxy)
