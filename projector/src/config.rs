//! Settings of the projector, from environment variables (or the matching `--flags`).

use order_store::postgres::PgSettings;

/// Settings shared by every process that runs a projector (`projector`, the all-in-one).
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectorSettings {
    /// Events read and applied per batch.
    #[arg(long = "projector-batch", env = "PROJECTOR_BATCH", value_name = "PROJECTOR_BATCH",
          default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// How long a projector following the event store (not the queue) waits, once events have
    /// arrived, for more to join the batch: under load, one batch per wake-up carries many
    /// orders instead of one or two (measured: bench/RESULTS.md, issue 26). 0: none.
    #[arg(id = "projector_linger", long = "projector-linger-ms", env = "PROJECTOR_LINGER_MS", value_name = "PROJECTOR_LINGER_MS",
          default_value = "1", value_parser = parse_linger)]
    pub linger: std::time::Duration,
}

/// `PROJECTOR_LINGER_MS`: whole milliseconds, 0 to 1,000 (0: no wait).
fn parse_linger(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<u64>() {
        Ok(ms) if ms <= 1_000 => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(format!(
            "expected whole milliseconds from 0 to 1000, got {text:?}"
        )),
    }
}

/// What the `projector` process does.
#[derive(Debug, Clone, Default, clap::Subcommand)]
pub enum ProjectorCommand {
    /// Keep every registered projection current (the default): buy_order_view from RabbitMQ or
    /// the log, the others from the log.
    #[default]
    Run,
    /// Build one projection afresh from position 0 in fresh tables while the current ones keep
    /// serving, swap them in atomically, then exit. One at a time per projection: a second is
    /// refused.
    Rebuild {
        /// The projection (`projector list` names them).
        #[arg(default_value = "buy_order_view")]
        name: String,
    },
    /// Show every registered projection with its checkpoint, lag and parked events.
    List,
}

/// Everything `projector` reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "projector",
    version,
    about = "buy-orders projector: events → read table"
)]
pub struct ProjectorConfig {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<ProjectorCommand>,
    /// Where the projector process serves /healthcheck, /readyz and /metrics (the all-in-one
    /// serves them on its two APIs' addresses instead).
    #[arg(
        long = "projector-addr",
        env = "PROJECTOR_ADDR",
        value_name = "PROJECTOR_ADDR",
        default_value = "127.0.0.1:8779"
    )]
    pub addr: std::net::SocketAddr,
    /// Batch size.
    #[command(flatten)]
    pub projector: ProjectorSettings,
    /// The event store (DATABASE_URL) and the read table (READ_DATABASE_URL).
    #[command(flatten)]
    pub db: PgSettings,
    /// RabbitMQ (AMQP_URL; unset: tail the event store instead).
    #[command(flatten)]
    pub bus: event_bus::BusSettings,
    /// HTTP timeouts and limits, and the log format (services: json; the all-in-one: text).
    #[command(flatten)]
    pub service: service_kit::ServiceSettings,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::ProjectorConfig as clap::CommandFactory>::command().debug_assert();
    }
}
