//! Logging: human-readable lines on stderr for every command, and for the
//! daemon also JSON lines in files.

fn filter(verbose: u8, default: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => default,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    std::env::var("LEMMING_LOG").ok().and_then(|f| EnvFilter::try_new(f).ok()).unwrap_or_else(|| EnvFilter::new(level))
}

/// Sets up logging on stderr at `-v` level `verbose` (`LEMMING_LOG` wins);
/// the daemon's logging waits for [`init_file_log`], once the org is known.
pub fn init_tracing(verbose: u8, daemon: bool) {
    use tracing_subscriber::prelude::*;
    VERBOSE.store(verbose, std::sync::atomic::Ordering::Relaxed);
    // The daemon also logs to a file, set up by `run` once it knows the org.
    if daemon {
        return;
    }
    let stderr = stderr_layer();
    let _ = tracing_subscriber::registry().with(stderr.with_filter(filter(verbose, "warn"))).try_init();
}

/// The daemon's logging: human-readable lines on stderr (from info, or as
/// `-v`/`LEMMING_LOG` say) and JSON lines in `dir`, rotated daily and kept
/// `keep` days. The guard must live as long as the daemon.
pub fn init_file_log(dir: &std::path::Path, keep: usize) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::prelude::*;
    let verbose = VERBOSE.load(std::sync::atomic::Ordering::Relaxed);
    let stderr = stderr_layer();
    // The appender prunes old files by listing the folder, and complains when it is missing.
    let _ = std::fs::create_dir_all(dir);
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("lemming")
        .filename_suffix("jsonl")
        .max_log_files(keep.max(1))
        .build(dir);
    match appender {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let json = tracing_subscriber::fmt::layer().json().with_writer(writer);
            let _ = tracing_subscriber::registry()
                .with(stderr.with_filter(filter(verbose, "info")))
                .with(json.with_filter(filter(verbose, "info")))
                .try_init();
            Some(guard)
        }
        Err(e) => {
            let _ = tracing_subscriber::registry().with(stderr.with_filter(filter(verbose, "info"))).try_init();
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write log files; logging to stderr only");
            None
        }
    }
}

fn stderr_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    use tracing_subscriber::field::MakeExt;
    // Field values quote replies, errors and paths: shown escaped, like all human output.
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let shown = format!("{value:?}");
        let shown = lemming_engine::term::text(&shown);
        match field.name() {
            "message" => write!(w, "{shown}"),
            name => write!(w, "{name}={shown}"),
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt::layer()
        .fmt_fields(fields)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
}

/// The `-v` count, for [`init_file_log`].
static VERBOSE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
