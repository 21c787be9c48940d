//! `api-write`: the write API as its own process. Any number can run against one PostgreSQL
//! (`DATABASE_URL`); the cap and idempotency hold across them. With `AMQP_URL` each also runs a
//! relay to RabbitMQ, of which one at a time is active. Without `DATABASE_URL` it runs on
//! a private in-memory store (useful to try the API alone; orders are not shared or kept).

use std::process::ExitCode;

use api_keys::http::identity_for;
use api_write::config::WriteConfig;
use api_write::{start, WriteApi};
use clap::Parser;
use order_domain::BuyOrderServices;
use price_feed::PriceSourceSpec;
use service_kit::{AuthMode, CancellationToken};

#[tokio::main]
async fn main() -> ExitCode {
    let config = WriteConfig::parse();
    config.service.log.init(service_kit::LogFormat::Json);
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
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone().cancelled_owned();
    let identity = match identity_for(&config.access, AuthMode::Required, &config.db, stop).await {
        Ok(identity) => identity,
        Err(err) => {
            eprintln!("api-write: {err}");
            return ExitCode::from(err.exit_status());
        }
    };
    if config.db.database_url.is_none() {
        tracing::warn!(
            "DATABASE_URL unset: private in-memory store, orders are not shared or kept"
        );
    }
    let services = BuyOrderServices::new(prices);
    let side = match start::open(&config.write, &config.db, &config.bus, services, &shutdown).await
    {
        Ok(side) => side,
        Err(err) => {
            eprintln!("api-write: {err}");
            return ExitCode::from(err.exit_status());
        }
    };
    let (writer, relay) = (side.writer, side.relay);
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
    if let Err(err) = service_kit::shutdown_on_signal(shutdown.clone()) {
        eprintln!("api-write: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }
    tracing::info!(addr = %config.write.write_addr, "api-write listening");
    tokio::spawn(api_write::watch_ledger(writer.clone(), shutdown.clone()));
    let ops = api_write::ops(writer.clone());
    service_kit::serve_with(
        ops,
        WriteApi::new(writer, identity, config.access.limits()).routes(),
        listener,
        shutdown.clone(),
        &config.service.http,
    )
    .await;
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    ExitCode::SUCCESS
}
