//! One file per subcommand: its clap `Args` (the doc comments are its --help) and `run`.

pub mod agents;
pub mod backup;
pub mod chat;
pub mod control;
pub mod doctor;
pub mod export;
pub mod fsck;
pub mod inbox;
pub mod init;
pub mod inspect;
pub mod logs;
pub mod models;
pub mod reindex;
pub mod replay;
pub mod restore;
pub mod run;
pub mod search;
pub mod send;
pub mod serve;
pub mod status;
pub mod step;
pub mod thread;
pub mod top_up;
pub mod validate;
