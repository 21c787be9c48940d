//! `projector`: the projector as its own process.
//!
//! A separate projector must read the shared PostgreSQL event store and write the shared read
//! table; until that backend exists this binary refuses to start rather than project an empty
//! in-memory log. In the all-in-one `buy-orders` the projector runs in-process.

use std::process::ExitCode;

use clap::Parser;
use projector::config::ProjectorConfig;

fn main() -> ExitCode {
    let config = ProjectorConfig::parse();
    eprintln!(
        "projector: a separate projector needs the shared PostgreSQL event store and read \
         table, which this build does not have yet; run `buy-orders` (all-in-one) instead. \
         (PROJECTOR_BATCH={})",
        config.projector.batch
    );
    ExitCode::from(2)
}
