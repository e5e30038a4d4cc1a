//! lemming-provider: the `Provider` trait that turns a prompt into a reply, and its kinds.
//!
//! The engine builds a [`Request`] for each due agent (the prompt text plus the
//! structured facts a provider may need: the unread mail and who the agent may
//! write to), calls [`Provider::complete`], and gets back a [`Reply`]: the raw
//! text in the reply contract and the token usage it is charged for.
//!
//! Module map:
//! - [`config`]: typed provider and model settings (parsed and validated by the engine);
//! - [`contract`]: the reply contract in one place: the prompt's contract text, the JSON schema, the keys the parser accepts;
//! - [`mock`]: the deterministic, instant default;
//! - [`script`]: replies read from a file, for tests and demos;
//! - [`openai`]: the chat-completions wire format (OpenAI, Azure, Ollama, vLLM, llama.cpp, ...);
//! - [`anthropic`]: the Anthropic Messages API;
//! - [`command`]: a local program that reads the prompt on stdin;
//! - [`program`]: running a local program once (process group, deadline, output caps), shared with the engine's tools;
//! - [`http`]: what the HTTP kinds share: one client per provider, status handling, excerpts, usage;
//! - [`wire`]: the reply a wire format reads, key-free excerpts, error chains, loopback URLs;
//! - [`stream`]: streamed replies (`stream = true`): the event-stream parser and the reading loop;
//! - [`resilience`]: retries with backoff and jitter, honouring `Retry-After`;
//! - [`breaker`]: the circuit breaker per provider and its state file;
//! - [`serve`]: managed local servers (`serve = {...}`): started on first use, restarted, stopped at exit;
//! - [`registry`]: builds one provider instance per configured provider, and the fallback chain;
//! - [`doctor`]: checks each provider (reachability, auth, one tiny request) against a deadline;
//! - [`remote`]: lists what each HTTP provider's server serves (`models --remote`);
//! - [`detect`]: finds model servers on this machine's usual ports (`doctor --detect`).
//!
//! API keys are read from the environment variable a provider names, at call
//! time. They are sent in headers only, never logged, never put into an error
//! message (body excerpts are scrubbed of them), and never part of a [`Reply`].
#![warn(missing_docs)]

pub mod anthropic;
pub mod breaker;
pub mod command;
pub mod config;
pub mod contract;
pub mod detect;
pub mod doctor;
pub mod http;
pub mod mock;
pub mod observe;
pub mod openai;
pub mod program;
pub mod registry;
pub mod remote;
pub mod resilience;
pub mod script;
pub mod serve;
pub mod stream;
pub mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

pub use config::{CommandSpec, ModelSpec, Price, ProviderKind, ProviderSpec, ServeSpec, Structured, ToolMode};
pub use registry::Registry;

/// A boxed future, so that providers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One unread message as a provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailItem {
    /// The message id.
    pub id: String,
    /// Who sent it (`lemming` for engine messages).
    pub from: String,
    /// The message text.
    pub body: String,
    /// `message`, `bounce`, `tool_result` or `system`.
    pub kind: String,
    /// The id this message answers, if it is a reply.
    pub reply_to: Option<String>,
    /// The conversation it belongs to.
    pub thread: String,
}

/// Everything a provider gets for one agent's run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The agent being run.
    pub agent: String,
    /// The turn number.
    pub turn: u64,
    /// The system part of the prompt: preamble, resume and reply contract.
    pub system: String,
    /// The user part of the prompt: memory summary and unread mail.
    pub prompt: String,
    /// The unread mail included in the prompt, in prompt order.
    pub mail: Vec<MailItem>,
    /// Agents this agent may write to (already filtered by the org chart).
    pub may_send_to: Vec<String>,
    /// The model settings for this call.
    pub model: ModelSpec,
    /// The agent's folder (`agents/<name>/`), when the caller has one: the
    /// `command` kind runs in its `workspace/` and appends stderr to its `logs/`.
    pub agent_dir: Option<PathBuf>,
    /// The tools this agent may call (granted and known), in the order its resume grants them.
    pub tools: Vec<ToolSpec>,
    /// Where the reply's text goes as it arrives, when the model streams
    /// (`stream = true`); `None`: nobody is watching.
    pub stream: Option<StreamSink>,
}

/// What a streaming call hands out as the reply arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// The next piece of the reply's raw text (the reply object's JSON as the model writes it).
    Text(String),
    /// The try failed after some text was handed out: forget that text, a
    /// retry (or nothing) follows. A failed try is never part of a reply.
    Restart,
}

/// A receiver of a streaming reply's [`Chunk`]s. It must be quick: it is
/// called on the task that reads the stream.
#[derive(Clone)]
pub struct StreamSink(pub std::sync::Arc<dyn Fn(Chunk) + Send + Sync>);

impl StreamSink {
    /// A sink that calls `f` with each chunk.
    pub fn new(f: impl Fn(Chunk) + Send + Sync + 'static) -> StreamSink {
        StreamSink(std::sync::Arc::new(f))
    }

    /// Hands out one chunk.
    pub fn send(&self, chunk: Chunk) {
        (self.0)(chunk)
    }
}

impl std::fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSink")
    }
}

/// A tool as a model is told of it: in the prompt and schema, or as a native
/// function definition (`tools = "native"`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Its name (valid as an OpenAI function name: `[A-Za-z0-9_-]`, at most 64).
    pub name: String,
    /// What it does, in a line or two.
    pub description: String,
    /// Its arguments as a JSON schema of an object (every property required,
    /// no others: optional ones take null), as OpenAI's strict mode wants.
    pub parameters: serde_json::Value,
}

/// A tool call a model made natively (OpenAI `tool_calls`, Anthropic `tool_use`).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeCall {
    /// The id the server gave it (any text: it is checked by the engine).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments (an object when the server sent valid JSON; else the raw text as a string).
    pub args: serde_json::Value,
}

impl Request {
    /// The number of characters of the whole prompt (system and user parts).
    pub fn prompt_chars(&self) -> usize {
        self.system.chars().count() + self.prompt.chars().count()
    }
}

/// Token usage of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// True when the provider reported no usage and these are estimates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

impl Usage {
    /// Estimates usage as ceil(chars / 4) of prompt and reply.
    pub fn estimate(prompt_chars: usize, reply_chars: usize) -> Usage {
        Usage {
            input_tokens: prompt_chars.div_ceil(4) as u64,
            output_tokens: reply_chars.div_ceil(4) as u64,
            estimated: true,
        }
    }
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The raw reply text (expected to hold a JSON reply object).
    pub text: String,
    /// The tokens it is charged for.
    pub usage: Usage,
    /// The model key that answered (differs from the requested one after a fallback).
    pub model_key: String,
    /// Why the model stopped, as the server said it (`finish_reason` of the
    /// `openai` kind, `stop_reason` of `anthropic`); `None` when the kind has
    /// no such thing (`mock`, `command`) or the server sent none. See
    /// [`Reply::truncated`].
    pub finish: Option<String>,
    /// The tool calls the model made natively (empty unless `tools = "native"`).
    pub tool_calls: Vec<NativeCall>,
}

impl Reply {
    /// The stop reasons that mean the reply was cut at the token limit:
    /// `length` (chat completions) and `max_tokens` (Messages API).
    pub const TRUNCATED: [&'static str; 2] = ["length", "max_tokens"];

    /// Whether the model was cut off by the token limit (`max_tokens`) rather
    /// than ending its reply itself.
    pub fn truncated(&self) -> bool {
        self.finish.as_deref().is_some_and(|f| Reply::TRUNCATED.contains(&f))
    }
}

/// Whose failure a failed call is. It decides what happens to the mail in the
/// prompt: only a reply that cannot be used counts as a failed attempt of the
/// mail (enough of them make it poison); when the provider is down or refuses
/// the request, the mail waits unread, however long that lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The provider could not be used: connection refused, a timeout, 408,
    /// 429, 5xx, an open circuit breaker, a program that crashed.
    Unavailable,
    /// The provider refused the request or is misconfigured: 401, 403, 404
    /// and the other 4xx not listed under `Request`, a missing key or
    /// program. Someone has to fix the config.
    Refused,
    /// The server refused this request as it is (400, 413, 422: a prompt over
    /// the context window, say): the mail in the prompt is what makes it, so it
    /// counts as a failed attempt, and enough of them make the mail poison.
    Request,
    /// The provider answered, but the answer cannot be used (not the expected
    /// shape, too long, cut short).
    Reply,
}

impl Cause {
    /// The cause as a code: `unavailable`, `refused`, `request`, `reply`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Unavailable => "unavailable",
            Cause::Refused => "refused",
            Cause::Request => "request",
            Cause::Reply => "reply",
        }
    }

    /// Whether this failure counts as a failed attempt of the mail in the prompt.
    pub fn counts_against_mail(self) -> bool {
        matches!(self, Cause::Reply | Cause::Request)
    }
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The call failed; `retryable` says whether trying again may help.
    #[error("provider `{provider}` (model `{model}`): {message}")]
    Call {
        /// The provider instance name.
        provider: String,
        /// The model key.
        model: String,
        /// What went wrong, with a short excerpt of any body.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
        /// Whose failure it is.
        cause: Cause,
    },
    /// The configuration cannot be used (for example a missing script file).
    #[error("provider `{provider}` is misconfigured: {message}")]
    Config {
        /// The provider instance name.
        provider: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ProviderError {
    /// Whose failure it is: a misconfigured provider is [`Cause::Refused`].
    pub fn cause(&self) -> Cause {
        match self {
            ProviderError::Call { cause, .. } => *cause,
            ProviderError::Config { .. } => Cause::Refused,
        }
    }
}

/// A model backend.
pub trait Provider: Send + Sync {
    /// Produces one reply for the request.
    fn complete<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, ProviderError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_truncated_only_when_the_server_says_it_hit_the_token_limit() {
        let reply = |finish: Option<&str>| Reply {
            text: String::new(),
            usage: Usage::default(),
            model_key: "k".into(),
            finish: finish.map(String::from),
            tool_calls: vec![],
        };
        assert!(reply(Some("length")).truncated(), "chat completions");
        assert!(reply(Some("max_tokens")).truncated(), "Messages API");
        for other in [None, Some("stop"), Some("end_turn"), Some("tool_calls"), Some("tool_use"), Some("")] {
            assert!(!reply(other).truncated(), "{other:?}");
        }
    }
}
