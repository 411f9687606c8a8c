//! The `plugvisor` command.

mod cli;

use std::process::ExitCode;

/// jemalloc rather than glibc's malloc: with a thousand plugins the host's
/// idle CPU is the health checks, and each check allocates and frees a few
/// dozen blocks; jemalloc does that in about 10 % less CPU, and returns the
/// memory a mass start used, where glibc's heap keeps it (host RSS at 1000
/// plugins: 59 MiB against 64-65 MiB). See bench/results.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("plugvisor: {error:#}");
            ExitCode::FAILURE
        }
    }
}
