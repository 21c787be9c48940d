//! `api-write`: the write API as its own process. Any number can run against one PostgreSQL
//! (`DATABASE_URL`); the cap and idempotency hold across them. With `AMQP_URL` each also runs a
//! relay to RabbitMQ, of which one at a time is active. Without `DATABASE_URL` it runs on
//! a private in-memory store (useful to try the API alone; orders are not shared or kept).

use std::process::ExitCode;
use std::sync::Arc;

use api_keys::{Identity, PgClientRegistry};
use api_write::config::WriteConfig;
use api_write::WriteApi;
use clap::Parser;
use event_bus::publisher::Publisher;
use event_bus::relay::Relay;
use order_domain::BuyOrderServices;
use order_store::memory::MemEventStore;
use order_store::postgres::PgEventStore;
use order_store::{CqrsOrderWriter, OrderWriter};
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
    let services = BuyOrderServices::new(prices);
    let cap = config.write.max_total_btc;
    let shutdown = CancellationToken::new();
    let relay_address = match config
        .bus
        .amqp_url
        .as_deref()
        .map(event_bus::connection::parse)
    {
        None => None,
        Some(Ok(_)) if config.db.database_url.is_none() => {
            eprintln!("api-write: AMQP_URL needs DATABASE_URL: the relay publishes the PostgreSQL event log");
            return ExitCode::from(2);
        }
        Some(Ok(address)) => Some(address),
        Some(Err(err)) => {
            eprintln!("api-write: {err}");
            return ExitCode::from(2);
        }
    };
    let identity = match config.access.mode(AuthMode::Required) {
        AuthMode::Off => {
            tracing::warn!("AUTH=off: no API keys; X-Client-Id names the client (local use only)");
            Identity::Off
        }
        AuthMode::Required if config.db.database_url.is_none() => {
            eprintln!(
                "api-write: AUTH=required needs DATABASE_URL (API clients live there); \
                 set AUTH=off to try the API alone in memory"
            );
            return ExitCode::from(2);
        }
        AuthMode::Required => {
            match PgClientRegistry::identity(
                &config.db,
                config.access.keys_max_staleness,
                shutdown.clone().cancelled_owned(),
            )
            .await
            {
                Ok(identity) => identity,
                Err(err) => {
                    eprintln!("api-write: cannot read the API clients (DATABASE_URL): {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mut relay = None;
    let writer: Arc<dyn OrderWriter> = if config.db.database_url.is_some() {
        match PgEventStore::open(&config.db, cap).await {
            Ok(store) => {
                if let Some(address) = relay_address {
                    let publisher = Publisher::start(address, config.bus.topology());
                    match Relay::open(&config.db, publisher).await {
                        Ok(relay_store) => {
                            relay = Some(tokio::spawn(relay_store.run(shutdown.clone())))
                        }
                        Err(err) => {
                            eprintln!(
                                "api-write: cannot open the relay's store (DATABASE_URL): {err}"
                            );
                            return ExitCode::FAILURE;
                        }
                    }
                    tracing::info!(exchange = %config.bus.exchange, "relay to RabbitMQ enabled");
                }
                Arc::new(
                    CqrsOrderWriter::new(store, services)
                        .with_resolve_within(config.write.resolve_within),
                )
            }
            Err(err) => {
                eprintln!("api-write: cannot open the write store (DATABASE_URL): {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        tracing::warn!(
            "DATABASE_URL unset: private in-memory store, orders are not shared or kept"
        );
        Arc::new(CqrsOrderWriter::new(
            MemEventStore::new(cap.unwrap_or_default()),
            services,
        ))
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
