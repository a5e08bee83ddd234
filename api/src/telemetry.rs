//! Logging setup: `RUST_LOG`-style filter, text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Set up logging; a filter that does not parse is a malformed setting,
/// refused like the others (the caller exits with code 2).
pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|err| {
        format!(
            "the log filter `{filter}` (RUST_LOG or --log) is not valid: {err}; \
             use a level such as `info` or directives such as `info,calltrail=debug`"
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
