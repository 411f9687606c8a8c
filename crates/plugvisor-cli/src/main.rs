//! The `plugvisor` command.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("plugvisor: {error:#}");
            ExitCode::FAILURE
        }
    }
}
