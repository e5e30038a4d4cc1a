//! lemming-engine: an organization of LLM agents whose only shared medium is the filesystem.
//!
//! # How a turn works
//!
//! [`turn::run`] is a short sequence of phases on one turn's state:
//!
//! 1. **Prepare**: the turn number ([`journal`]), the last turn's [`events`]
//!    if a crash kept them out of `events.jsonl`, every agent's folders.
//! 2. **Route** ([`route`], [`mailbox`], [`chart`]): every `outbox/new/` file is
//!    parsed and checked against the org chart, then delivered into each
//!    recipient's `inbox/new/` (idempotent by id) and moved to `sent/`. Refused
//!    mail goes to `org/state/dead/` with its reason and the sender gets a bounce.
//! 3. **Pick**: an agent is due when its [`resume::Schedule`] fires and it has
//!    unread mail (or `wake = "always"`), and it has credits ([`ledger`]);
//!    [`prompt`] builds its prompt.
//! 4. **Call**, concurrently up to `max_parallel`: a provider answers; the
//!    answer is parsed ([`reply`]) into a record with the plan of its effects.
//! 5. **Journal** the records ([`journal`]), then **apply** their effects:
//!    outbox messages, [`memory`] operations, the ledger charge, attempts and
//!    poison, the activity log; then **consume**: the mail read moves to `cur/`,
//!    and with `archive_after_turns`, read mail old enough moves to `archive/`.
//! 6. **Route again**, so replies arrive in the same turn.
//! 7. **Commit**: `org/state/turn.json` is replaced atomically, with the
//!    turn's events in it, then the events are appended to `events.jsonl`.
//!
//! Time comes from the [`clock::Sources`] given to the turn, and each event is
//! published on its [`events::Bus`] as it happens (the `turn` event once the
//! turn is committed).
//!
//! Every phase is a group commit ([`fsx::Batch`]), ordered so that a crash at
//! any point loses nothing and duplicates nothing. The guarantees G1–G8 that
//! comments in this crate name are stated in docs/guarantees.md, each with the
//! tests that check it.
//!
//! # Module map
//!
//! - [`org`]: finding an org, loading every config file; [`layout`]: the paths of its state files;
//!   [`parts`]: work over many agents spread across the cores;
//! - [`settings`], [`models`], [`resume`]: the three config files, read and
//!   checked field by field through [`config`]; [`edit`]: a person's edit of a
//!   resume, judged like `lemming validate`, written atomically and audited;
//! - [`name`], [`message`]: agent names and the message file;
//! - [`chart`]: who may talk to whom; [`address`]: what a message's `to`
//!   means (names, `@group`, `*`), expanded into recipients;
//! - [`mailbox`]: the mail store ([`mailbox::MailStore`]) and its filesystem
//!   implementation, the one place that knows the layout and names of
//!   inboxes, outboxes and dead letters, and the reason codes;
//! - [`route`]: the routing phase of a turn;
//! - [`transport`]: the seam to the other nodes of an org on several
//!   machines ([`transport::Transport`], [`transport::Link`]);
//! - [`fsx`]: atomic writes, group commits and safe reads of mailbox entries;
//!   [`process`]: whether a process (a lock holder, a tmp file's writer) lives;
//! - [`ledger`], [`memory`], [`journal`], [`events`], [`activity`]: state files;
//!   [`audit`]: who did what that changes the world outside the mail, secrets redacted;
//!   [`clock`]: the time and fresh ids a turn or the daemon uses;
//! - [`prompt`], [`reply`]: what the model is told and how its answer is read;
//! - [`turn`]: one turn; [`daemon`]: running turns under the [`lock`] (`step`,
//!   and the `run` loop with [`watch`] for filesystem events);
//! - [`views`]: what people and programs are shown (status, agents, inspect,
//!   models, inbox, thread, logs) as typed, serializable values, read without
//!   the lock; [`trouble`]: agents and a daemon that cannot work right now,
//!   and why; [`init`]: the embedded orgs (the default and the templates of `examples/orgs/`);
//! - [`term`]: untrusted text made safe to show, and commands quoted for the shell;
//!   [`suggest`]: what a message says of a name that is not known (the closest known ones);
//! - [`send`], [`follow`], [`chat`]: the people's side: sending as a person,
//!   following an inbox or an activity log as it grows, and a conversation that waits for replies
//!   (running turns itself when no daemon runs); [`streamed`]: the messages of a reply's
//!   partial JSON as a model streams it, for chat to show;
//! - [`index`]: the search index of every message, derived from the files
//!   (`lemming search`, `lemming reindex`);
//! - [`fsck`]: read-only, lock-free checks of G2–G7 on disk (`lemming fsck`);
//! - [`replay`]: a committed turn derived again from its journal and compared
//!   with the files (`lemming replay`); [`preview`]: what the next turn would
//!   route, whom it would run and with which prompt, written nowhere
//!   (`lemming step --dry-run`);
//! - [`backup`]: the org as one archive, copied between two turns, and its restore;
//! - [`export`]: a thread, an agent's mail or the org's as Markdown, JSON or one HTML file;
//! - [`fault`]: crash points for tests; [`error`]: paths and diagnostics.
#![warn(missing_docs)]

pub mod activity;
pub mod address;
pub mod audit;
pub mod backup;
pub mod chart;
pub mod chat;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod edit;
pub mod error;
pub mod events;
pub mod export;
pub mod fault;
pub mod follow;
pub mod fsck;
pub mod fsx;
pub mod index;
pub mod init;
pub mod journal;
pub mod layout;
pub mod ledger;
pub mod lock;
pub mod mailbox;
pub mod memory;
pub mod message;
pub mod models;
pub mod name;
pub mod org;
pub mod parts;
pub mod preview;
pub mod process;
pub mod prompt;
pub mod replay;
pub mod reply;
pub mod resume;
pub mod route;
pub mod send;
pub mod settings;
pub mod streamed;
pub mod suggest;
pub mod term;
#[cfg(test)]
mod testing;
pub mod tools;
pub mod transport;
pub mod trouble;
pub mod turn;
pub mod view_cache;
pub mod views;
pub mod watch;
