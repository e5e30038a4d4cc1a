//! The provider benchmark: 50 due agents whose model is an OpenAI-compatible
//! server on 127.0.0.1 that takes 200 ms per request, with `max_parallel = 64`.
//! The turn must take under 600 ms: the calls run concurrently through one
//! shared HTTP client, so the turn costs one server latency plus the engine's
//! own work, not 50 of them.
//!
//! The server is a stub on axum, on a runtime of its own: it waits out the
//! latency (without holding a thread, so 50 requests wait at once) and then
//! answers a chat completion with an empty reply and usage.

use std::path::Path;
use std::time::Duration;

use crate::synth::{self, Calls, Shape, Spec};

/// The stub's latency per request.
pub const LATENCY: Duration = Duration::from_millis(200);
/// The limit the turn must stay under.
pub const LIMIT_MS: f64 = 600.0;
const AGENTS: usize = 50;

const BODY: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","model":"stub","choices":[{"index":0,"message":{"role":"assistant","content":"{\"messages\":[]}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":5,"total_tokens":105}}"#;

/// Starts the stub on 127.0.0.1 (an ephemeral port); it lives as long as
/// the process. Returns its base URL.
fn start() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let answer = || async {
                tokio::time::sleep(LATENCY).await;
                ([(axum::http::header::CONTENT_TYPE, "application/json")], BODY)
            };
            let app = axum::Router::new().fallback(answer);
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    if let Err(e) = axum::serve(listener, app).await {
                        eprintln!("the provider stub stopped: {e}");
                    }
                }
                Err(e) => eprintln!("the provider stub cannot listen: {e}"),
            }
        })
    });
    Ok(url)
}

/// Points a synthetic org's `default` model at the stub.
fn point_at(dir: &Path, url: &str) -> std::io::Result<()> {
    std::fs::write(
        dir.join("org/models.toml"),
        format!(
            "[providers.stub]\nkind = \"openai\"\nbase_url = \"{url}/v1\"\ntimeout_secs = 10\nmax_retries = 0\n[models.default]\nprovider = \"stub\"\ninput_price = 1.0\noutput_price = 2.0\n"
        ),
    )
}

/// Runs the case `runs` times and prints its table; true when under the limit.
pub fn run(base: &Path, runs: usize) -> Result<bool, String> {
    let url = start().map_err(|e| e.to_string())?;
    let spec = Spec {
        agents: AGENTS,
        unread: 1,
        shape: Shape::Ring(2),
        latency_ms: 0,
        max_parallel: 64,
        calls: Calls::None,
        sandbox: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (mut warms, mut colds) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
        let dir = tmp.path().join("org");
        synth::generate(&dir, &spec).map_err(|e| e.to_string())?;
        point_at(&dir, &url).map_err(|e| e.to_string())?;
        colds.push(crate::one_step(&rt, &dir, AGENTS)?);
        synth::inject(&dir, &spec, 1).map_err(|e| e.to_string())?;
        warms.push(crate::one_step(&rt, &dir, AGENTS)?);
    }
    let (warm, cold) = (crate::median(warms), crate::median(colds));
    let ok = warm <= LIMIT_MS;
    println!();
    println!("| provider case | turn, warm (median of {runs}) | turn, cold | limit |");
    println!("|---|---:|---:|---:|");
    println!(
        "| {AGENTS} due, openai server 200 ms/request, max_parallel 64 | {warm:.1} ms | {cold:.1} ms | {} {LIMIT_MS:.0} ms |",
        if ok { "ok <" } else { "OVER" }
    );
    Ok(ok)
}
