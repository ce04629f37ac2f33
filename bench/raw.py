"""The commands a developer types by hand for what crossboard does: the baselines the benchmarks time,
spelled once. Paths are the toolchain container's."""


def kernel_make(tree: str) -> list[str]:
    """make in the kernel tree `tree`, building into /crossboard/build/kernel, as crossboard does."""
    return ["make", "-C", tree, "O=/crossboard/build/kernel", "ARCH=arm64", "LLVM=1", "-j2"]


def hello_cargo_build(target_dir: str) -> list[str]:
    """cargo building the example app for the board, into `target_dir`."""
    manifest = "/crossboard/project/apps/hello/Cargo.toml"
    return [
        "cargo",
        "build",
        "--release",
        "--target",
        "aarch64-unknown-linux-gnu",
        "--manifest-path",
        manifest,
        "--target-dir",
        target_dir,
    ]
