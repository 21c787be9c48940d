//! Settings of the projector, from environment variables (or the matching `--flags`).

/// Settings shared by every process that runs a projector (`projector`, the all-in-one).
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectorSettings {
    /// Events read and applied per batch.
    #[arg(long = "projector-batch", env = "PROJECTOR_BATCH", value_name = "PROJECTOR_BATCH",
          default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

/// Everything `projector` reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "projector",
    version,
    about = "buy-orders projector: events → read table"
)]
pub struct ProjectorConfig {
    /// Batch size.
    #[command(flatten)]
    pub projector: ProjectorSettings,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::ProjectorConfig as clap::CommandFactory>::command().debug_assert();
    }
}
