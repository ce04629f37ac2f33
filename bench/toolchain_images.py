"""Each toolchain profile's image built from its base with no layer cache, timed, and as a ratio to the
default profile's (trixie) in the same run, at each profile's locked versions. Built untagged and removed
after, so the images builds use (and the kernel builds keyed by their ids) stay as they are. Needs the base
image (`invoke toolchain` once); about 10 minutes for two profiles, most of it Debian's downloads."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossboard.settings import Settings  # noqa: E402
from crossboard.toolchain.engine import docker_client  # noqa: E402
from crossboard.toolchain.image import build_image  # noqa: E402
from crossboard.toolchain.profiles import DEFAULT_PROFILE, load_profile, profile_names  # noqa: E402
from crossboard.toolchain.stream import Tee  # noqa: E402


def main() -> None:
    settings = Settings.from_environment()
    client = docker_client()
    if not client.images.list(name=settings.base_image):
        sys.exit(f"the base image {settings.base_image} is missing: run `invoke toolchain` once first")
    seconds = {}
    for name in profile_names():
        started, built = time.perf_counter(), None
        try:
            with Tee(settings.cache_dir / "logs" / f"bench-toolchain-{name}.log", echo=False) as tee:
                built = build_image(client, settings, load_profile(name), tee, progress_mode="lines", use_cache=False)
            seconds[name] = time.perf_counter() - started
            size = client.images.get(built).attrs["Size"] / 2**30
        finally:
            if built is not None:  # untagged: the images builds use stay as they are
                client.images.remove(built, force=True)
        print(f"{name}: {seconds[name]:.0f} s, {size:.2f} GiB", flush=True)
    baseline = seconds[DEFAULT_PROFILE]
    for name, value in seconds.items():
        print(f"ratio {name} / {DEFAULT_PROFILE}: {value / baseline:.2f}x")


if __name__ == "__main__":
    main()
