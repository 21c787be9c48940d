//! `api-write`: the write API as its own process. Any number can run against one PostgreSQL
//! (`DATABASE_URL`); the cap and idempotency hold across them. Without `DATABASE_URL` it runs on
//! a private in-memory store (useful to try the API alone; orders are not shared or kept).

use std::process::ExitCode;
use std::sync::Arc;

use api_write::config::WriteConfig;
use api_write::WriteApi;
use clap::Parser;
use order_domain::BuyOrderServices;
use order_store::memory::MemEventStore;
use order_store::postgres::PgEventStore;
use order_store::{CqrsOrderWriter, OrderWriter};
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
    let services = BuyOrderServices::new(prices);
    let cap = config.write.max_total_btc;
    let writer: Arc<dyn OrderWriter> = if config.db.database_url.is_some() {
        match PgEventStore::open(&config.db, cap).await {
            Ok(store) => Arc::new(CqrsOrderWriter::new(store, services)),
            Err(err) => {
                eprintln!("api-write: cannot open the write store (DATABASE_URL): {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        tracing::warn!(
            "DATABASE_URL unset: private in-memory store, orders are not shared or kept"
        );
        Arc::new(CqrsOrderWriter::new(MemEventStore::new(cap), services))
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
    let shutdown = CancellationToken::new();
    if let Err(err) = service_kit::shutdown_on_signal(shutdown.clone()) {
        eprintln!("api-write: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }
    tracing::info!(addr = %config.write.write_addr, %cap, "api-write listening");
    service_kit::serve(WriteApi::new(writer).routes(), listener, shutdown).await;
    ExitCode::SUCCESS
}
