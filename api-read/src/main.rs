//! `api-read`: the read API as its own process.
//!
//! A separate read process needs a read table it shares with the projector, which is the
//! PostgreSQL one; until that backend exists this binary refuses to start rather than serve an
//! empty in-memory table. The whole system in one process is `buy-orders`.

use std::process::ExitCode;

use api_read::config::ReadConfig;
use clap::Parser;

fn main() -> ExitCode {
    let config = ReadConfig::parse();
    eprintln!(
        "api-read: a separate read process needs the shared PostgreSQL read table, which this \
         build does not have yet; run `buy-orders` (all-in-one) instead. (READ_ADDR={})",
        config.read.read_addr
    );
    ExitCode::from(2)
}
