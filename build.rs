//! Link options for the `herald` binary that keep its resident memory small.
//!
//! Only for x86_64-unknown-linux-gnu, where Rust links with its own lld by default (1.90 on),
//! and only when the builder has not chosen another linker:
//!
//! - `-z pack-relative-relocs`: the position-independent executable's relative relocations
//!   are stored as a 17 KB bitmap (DT_RELR, glibc 2.36 and later) instead of 1.4 MB of
//!   `.rela.dyn` that the loader reads, and keeps resident, at every start.
//! - `--symbol-ordering-file=bench/hot-functions.txt`: the functions that start-up and serving
//!   the public pages run, a few thousand of them, are laid out together at the front of
//!   `.text` instead of spread through 15 MB of code. The kernel maps code 64 KiB (or a whole
//!   large folio) around every page touched, so a hot function among cold ones keeps its
//!   neighbours resident too: 11 MiB of code pages before, about 4.5 MiB after. The list is made
//!   by `bench/hot-functions.sh`; names no longer in the binary are skipped, so a stale list
//!   costs memory, never a failed build.
//!
//! bench/README.md has the measurements.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=bench/hot-functions.txt");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return;
    }
    // A linker of the builder's choosing (a `linker` in .cargo/config.toml, or -C linker,
    // -C linker-features=-lld, -C link-self-contained=-linker or -fuse-ld in RUSTFLAGS) may
    // not know these options, GNU ld's --symbol-ordering-file for one: link as it would.
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if env::var_os("RUSTC_LINKER").is_some()
        || rustflags
            .split('\x1f')
            .any(|flag| flag.contains("linker") || flag.contains("fuse-ld"))
    {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    let order = Path::new(&dir).join("bench/hot-functions.txt");
    if order.exists() {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
