//! `buy-orders`: the whole system in one process. See the crate docs and the README.

use std::process::ExitCode;

use buy_orders::{Command, Config};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    config.log.init(service_kit::LogFormat::Text);
    if let Some(Command::Migrate) = config.command {
        if config.db.database_url.is_none() {
            eprintln!("buy-orders migrate: set DATABASE_URL (and READ_DATABASE_URL if elsewhere)");
            return ExitCode::from(2);
        }
        return match buy_orders::migrate(&config.db).await {
            Ok(()) => {
                println!("migrations applied");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("buy-orders migrate: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let system = match buy_orders::start(&config).await {
        Ok(system) => system,
        Err(err) => {
            eprintln!("buy-orders: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = service_kit::shutdown_on_signal(system.shutdown_token()) {
        eprintln!("buy-orders: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }
    let backend = if config.db.database_url.is_some() {
        "PostgreSQL"
    } else {
        "in-memory store"
    };
    println!("buy-orders is running ({backend}; Ctrl-C to stop)");
    println!("  write API: http://{}/buy_order", system.write_addr);
    println!("  read API:  http://{}/buy_orders", system.read_addr);
    println!(
        "  try: curl -X PUT http://{}/buy_order -H 'content-type: application/json' \
         -d '{{\"currency\":\"USD\",\"amount\":\"123.45\",\"idempotence_key\":\"'$(cat /proc/sys/kernel/random/uuid)'\"}}'",
        system.write_addr
    );
    println!("  then: curl http://{}/buy_orders", system.read_addr);
    system.wait().await;
    println!("buy-orders stopped");
    ExitCode::SUCCESS
}
