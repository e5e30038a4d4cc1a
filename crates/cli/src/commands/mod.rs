//! One file per subcommand: its clap `Args` (the doc comments are its --help) and `run`.

pub mod agents;
pub mod control;
pub mod inbox;
pub mod init;
pub mod inspect;
pub mod run;
pub mod send;
pub mod status;
pub mod step;
pub mod top_up;
pub mod validate;
