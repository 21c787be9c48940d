//! `api-write`: the write API as its own process.
//!
//! Until the PostgreSQL store lands it runs on the in-memory store, which no other process can
//! see: useful to exercise the write API alone. The whole system in one process is `buy-orders`.

use std::process::ExitCode;
use std::sync::Arc;

use api_write::config::WriteConfig;
use api_write::WriteApi;
use clap::Parser;
use order_domain::BuyOrderServices;
use order_store::memory::MemEventStore;
use order_store::CqrsOrderWriter;
use price_feed::PriceSourceSpec;
use service_kit::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::init_logging();
    let config = WriteConfig::parse();
    let prices = match config
        .prices
        .build(&config.prices.spec(PriceSourceSpec::Coinbase))
    {
        Ok(prices) => prices,
        Err(err) => {
            eprintln!("api-write: cannot set up the price source: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.write.write_addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "api-write: cannot listen on WRITE_ADDR={}: {err}",
                config.write.write_addr
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::warn!(
        "in-memory order store: orders are not shared with other processes and are lost on exit"
    );
    let store = MemEventStore::new(config.write.max_total_btc);
    let writer = CqrsOrderWriter::new(store, BuyOrderServices::new(prices));
    let api = WriteApi::new(Arc::new(writer));
    let shutdown = CancellationToken::new();
    if let Err(err) = service_kit::shutdown_on_signal(shutdown.clone()) {
        eprintln!("api-write: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }
    tracing::info!(addr = %config.write.write_addr, "api-write listening");
    service_kit::serve(api.routes(), listener, shutdown).await;
    ExitCode::SUCCESS
}
