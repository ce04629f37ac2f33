// SPDX-License-Identifier: GPL-2.0

//! The example out-of-tree Rust module: crossboard builds it against the board's kernel tree.
//! Written for the Linux 6.12 `kernel` crate (its `module!` has no `params:`).

use kernel::prelude::*;

module! {
    type: HelloRust,
    name: "hello_rust",
    author: "crossboard",
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
