//! What the HTTP kinds' wire formats and their streams share below the
//! transport: the reply a wire format reads, key-free excerpts of what a
//! server said, error chains, and whether a URL is this machine. (Re-exported
//! by [`crate::http`].)

/// The longest body excerpt put into an error message, in characters.
pub const EXCERPT_CHARS: usize = 300;

/// What a wire format reads from a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The reply text (empty when the model only called tools).
    pub text: String,
    /// The tokens it is charged for.
    pub usage: crate::Usage,
    /// The stop reason, as the server said it (empty when it said none).
    pub finish: String,
    /// The tool calls the model made natively.
    pub tool_calls: Vec<crate::NativeCall>,
}

/// An error and its sources, joined by `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// A short, single-line excerpt of a body, with `key` replaced by `[redacted]`.
pub fn excerpt(body: &str, key: Option<&str>) -> String {
    let mut text = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(k) = key.filter(|k| k.len() >= 4) {
        text = text.replace(k, "[redacted]");
    }
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// Whether a URL's host is this machine (calls to it cost nothing).
pub fn is_loopback(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else { return false };
    let Some(host) = u.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}
