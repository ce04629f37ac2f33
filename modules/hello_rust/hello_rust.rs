// SPDX-License-Identifier: GPL-2.0

//! The example out-of-tree Rust module: crossboard builds it against the board's kernel tree.
//! One source for Linux 6.12 and 7.x: where the `kernel` crate's API changed, Kbuild tells the
//! source what the kernel it builds against offers (the `module_authors` and `kunit_tests_macro` cfgs).

use kernel::prelude::*;

#[cfg(not(module_authors))]
module! {
    type: HelloRust,
    name: "hello_rust",
    author: "crossboard",
    description: "Example out-of-tree Rust module",
    license: "GPL",
}

#[cfg(module_authors)]
module! {
    type: HelloRust,
    name: "hello_rust",
    authors: ["crossboard"],
    description: "Example out-of-tree Rust module",
    license: "GPL",
}

const GREETING: &str = "Hello from an out-of-tree Rust module (init)";

struct HelloRust;

impl kernel::Module for HelloRust {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("{}\n", GREETING);
        Ok(HelloRust)
    }
}

impl Drop for HelloRust {
    fn drop(&mut self) {
        pr_info!("Goodbye from an out-of-tree Rust module (exit)\n");
    }
}

/// Unit tests, run by KUnit as the module loads (their KTAP results go to the kernel log, where
/// `invoke deploy` reads them), on kernels with KUnit and `#[kunit_tests]`.
#[cfg(all(CONFIG_KUNIT, kunit_tests_macro))]
#[kunit_tests(hello_rust)]
mod tests {
    use super::GREETING;

    #[test]
    fn greeting_says_hello() {
        assert!(GREETING.starts_with("Hello"));
    }

    #[test]
    fn greeting_names_its_phase() {
        assert!(GREETING.ends_with("(init)"));
    }
}
