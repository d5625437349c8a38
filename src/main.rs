//! The `herald` binary: everything lives in the library.

/// mimalloc: hyper and the page cache allocate per request; glibc's malloc showed as a tenth of
/// the CPU time under load, mimalloc's thread-local free lists cut that. Version 2 (the crate's
/// `v2` feature): version 3 held 5-7 MiB more under the same load (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    return_freed_memory_at_once();
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

/// mimalloc gives freed pages back to the OS 10 ms after the last free in them by default,
/// but only on that thread's next allocation: a thread that goes quiet (an HTTP worker after a
/// burst, the runtime after start-up's migrations, renders and brotli) keeps them for good,
/// measured as 3.5 MiB at idle. Returning them at once costs no measurable throughput
/// (bench/README.md). `MIMALLOC_PURGE_DELAY` in the environment still decides when set.
#[expect(unsafe_code, reason = "mimalloc's options are set through its C API")]
fn return_freed_memory_at_once() {
    /// `mi_option_purge_delay` in mimalloc v2's `include/mimalloc.h` (the `v2` feature above),
    /// which libmimalloc-sys 0.1 does not name. Its default is 10; when the option at this
    /// index reads otherwise, the enum has moved and nothing is set.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 10;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_get and mi_option_set take any option index (an unknown one is
    // ignored) and may be called at any time; options are plain values read atomically.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == DEFAULT_PURGE_DELAY_MS {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}
