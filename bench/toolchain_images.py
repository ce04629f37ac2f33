"""Each toolchain profile's image built from its base with no layer cache, timed, and as a ratio to the
default profile's (trixie) in the same run. Built under a tag of the benchmark's own and removed after,
so the images builds use (and the kernel builds keyed by their ids) stay as they are. Needs the base
image (`invoke toolchain` once); about 10 minutes for two profiles, most of it Debian's downloads."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossboard.settings import Settings  # noqa: E402
from crossboard.toolchain.engine import docker_client  # noqa: E402
from crossboard.toolchain.image import build_image, find_image  # noqa: E402
from crossboard.toolchain.profiles import DEFAULT_PROFILE, load_profile, profile_names  # noqa: E402
from crossboard.toolchain.stream import Tee  # noqa: E402


def main() -> None:
    settings = Settings.from_environment()
    client = docker_client()
    if find_image(client, settings.base_image) is None:
        sys.exit(f"the base image {settings.base_image} is missing: run `invoke toolchain` once first")
    seconds = {}
    for name in profile_names():
        ref = f"crossboard/bench-toolchain:{name}"
        started = time.perf_counter()
        try:
            with Tee(settings.cache_dir / "logs" / f"bench-toolchain-{name}.log", echo=False) as tee:
                build_image(client, settings, load_profile(name), ref, tee, progress_mode="lines", use_cache=False)
            seconds[name] = time.perf_counter() - started
            size = client.images.get(ref).attrs["Size"] / 2**30
        finally:
            if find_image(client, ref) is not None:
                client.images.remove(ref, force=True)
        print(f"{name}: {seconds[name]:.0f} s, {size:.2f} GiB", flush=True)
    baseline = seconds[DEFAULT_PROFILE]
    for name, value in seconds.items():
        print(f"ratio {name} / {DEFAULT_PROFILE}: {value / baseline:.2f}x")


if __name__ == "__main__":
    main()
