//! The `herald` binary: everything lives in the library.

/// mimalloc: hyper and the page cache allocate per request; glibc's malloc showed as a tenth of
/// the CPU time under load, mimalloc's thread-local free lists cut that. Version 2 (the crate's
/// `v2` feature): version 3 held 5-7 MiB more under the same load (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match herald::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            match e.downcast_ref::<herald::cli::rollout::Exit>() {
                Some(exit) => std::process::ExitCode::from(exit.code),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
