//! The `lemming` binary: parse the command line, run one command, exit with its code.

mod cli;
mod commands;
mod ctx;
mod log;
mod progress;
mod render;

fn main() -> std::process::ExitCode {
    cli::main()
}
