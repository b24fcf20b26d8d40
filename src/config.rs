//! Command-line and environment configuration. Every flag has a `long` name and an `env` variable; its doc
//! comment is its help text.

use clap::{Args, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Logging options shared by every subcommand.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter, in tracing's EnvFilter syntax (`info`, `regcred=debug,kube=warn`).
    #[arg(long = "log-level", env = "REGCRED_LOG", default_value = "info", global = true)]
    pub level: String,

    /// Log format.
    #[arg(long = "log-format", env = "REGCRED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub format: LogFormat,
}

/// Options of `regcred run`.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// regcred's own namespace: source Secrets are read from here and nowhere else.
    #[arg(long, env = "REGCRED_NAMESPACE", default_value = "regcred-system")]
    pub namespace: String,

    /// Secret writes in flight at once per profile.
    #[arg(long, env = "REGCRED_WRITE_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub write_concurrency: u16,

    /// Handle only the RegistryProfiles matching this label selector (for sharding or tests); all by default.
    #[arg(long, env = "REGCRED_PROFILE_SELECTOR")]
    pub profile_selector: Option<String>,

    /// Name reported as the source of Events.
    #[arg(long, env = "REGCRED_REPORTER", default_value = "regcred")]
    pub reporter: String,
}
