// SPDX-License-Identifier: GPL-2.0

//! The example out-of-tree Rust module: crossboard builds it against the board's kernel tree.
//! One source for Linux 6.12 and 7.x: where the `kernel` crate's API changed, Kbuild tells the
//! source which kernel it builds against (the `module_authors` cfg).

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

struct HelloRust;

impl kernel::Module for HelloRust {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("Hello from an out-of-tree Rust module (init)\n");
        Ok(HelloRust)
    }
}

impl Drop for HelloRust {
    fn drop(&mut self) {
        pr_info!("Goodbye from an out-of-tree Rust module (exit)\n");
    }
}
