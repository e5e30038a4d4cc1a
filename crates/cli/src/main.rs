//! The `lemming` binary: parse the command line, run one command, exit with its code.

mod cli;
mod commands;

fn main() -> std::process::ExitCode {
    cli::main()
}
