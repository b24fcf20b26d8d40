//! Logging setup.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogArgs, LogFormat};

/// Installs the global subscriber. Logs go to stderr.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter = EnvFilter::try_new(&args.level).map_err(|e| format!("invalid --log-level {:?}: {e}", args.level))?;
    let registry = tracing_subscriber::registry().with(filter);
    // Colours only for a person at a terminal: a container's log, or a file, would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = match args.format {
        LogFormat::Plain => registry.with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    result.map_err(|e| format!("could not install the logger: {e}"))
}
