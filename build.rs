//! Link options for the release `herald` binary that keep its resident memory small.
//!
//! Only for x86_64-unknown-linux-gnu release builds (the `release` and `bench` profiles), and
//! only when a probe shows the linker takes them and, building for this machine, that the
//! probe binary runs here (packed relocations need glibc 2.36). Rust's own lld, the default
//! linker of rustup's toolchains since 1.90, takes both; GNU ld, which a distribution's rustc
//! may use, has no `--symbol-ordering-file`. Without them Herald links as it would anyway.
//!
//! - `-z pack-relative-relocs`: the position-independent executable's relative relocations
//!   are stored as a 17 KB bitmap (DT_RELR) instead of 1.4 MB of `.rela.dyn` that the loader
//!   reads, and keeps resident, at every start.
//! - `--symbol-ordering-file=bench/hot-functions.txt`: the functions that start-up and serving
//!   the public pages run, a few thousand of them, are laid out together at the front of
//!   `.text` instead of spread through 15 MB of code. The kernel maps code 64 KiB (or a whole
//!   large folio) around every page touched, so a hot function among cold ones keeps its
//!   neighbours resident too: 11 MiB of code pages before, about 4.5 MiB after. The list is
//!   made by `bench/hot-functions.sh`; names no longer in the binary are skipped, so a stale
//!   list costs memory, never a failed build.
//!
//! bench/README.md has the measurements.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

const ORDER_FILE: &str = "bench/hot-functions.txt";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let order = manifest_dir.join(ORDER_FILE);
    // Watching a file that does not exist would rerun this script, and relink, on every build.
    if order.exists() {
        println!("cargo::rerun-if-changed={ORDER_FILE}");
    } else {
        println!("cargo::rerun-if-changed=bench");
    }
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var("PROFILE").as_deref() != Ok("release")
    {
        return;
    }
    let mut args = vec!["-Wl,-z,pack-relative-relocs".to_owned()];
    if order.exists() {
        args.push(format!("-Wl,--symbol-ordering-file={}", order.display()));
        args.push("-Wl,--no-warn-symbol-ordering".to_owned());
    }
    match probe(&args) {
        Ok(()) => {
            for arg in &args {
                println!("cargo::rustc-link-arg-bins={arg}");
            }
        }
        Err(why) => println!(
            "cargo::warning=linking herald without its memory layout options ({why}); \
             see build.rs"
        ),
    }
}

/// Links an empty program with `args` the way this build links (same rustc, flags, target
/// and linker) and, when it is built for this machine, runs it.
fn probe(args: &[String]) -> Result<(), String> {
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let source = out.join("probe.rs");
    fs::write(&source, "fn main() {}\n").map_err(|e| format!("writing the probe: {e}"))?;
    let binary = out.join("probe");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let target = env::var("TARGET").unwrap_or_default();
    let mut link = Command::new(rustc);
    link.args(
        env::var("CARGO_ENCODED_RUSTFLAGS")
            .unwrap_or_default()
            .split('\x1f')
            .filter(|flag| !flag.is_empty()),
    )
    .args(["--crate-name", "probe", "--edition", "2024"])
    .args(["--target", &target])
    .arg("-o")
    .arg(&binary)
    .arg(&source);
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        link.arg("-C").arg(format!("linker={linker}"));
    }
    for arg in args {
        link.arg("-C").arg(format!("link-arg={arg}"));
    }
    run(&mut link, "the linker refused them")?;
    if env::var("HOST").as_deref() == Ok(target.as_str()) {
        run(&mut Command::new(&binary), "the probe does not run here")?;
    }
    Ok(())
}

fn run(command: &mut Command, failed: &str) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{failed}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Err(format!("{failed}: {}", first.trim()))
}
