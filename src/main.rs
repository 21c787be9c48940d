//! `buy-orders`: the whole system in one process. See the crate docs and the README.

use std::process::ExitCode;

use buy_orders::{Command, Config};
use clap::Parser;
use std::io::Write;

/// mimalloc rather than glibc's malloc: under load glibc's took ~10 % of the CPU, with arena lock
/// waits (bench/RESULTS.md, issue 26).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    config.service.log.init(service_kit::LogFormat::Text);
    if let Some(command) = &config.command {
        let name = match command {
            Command::Migrate => "migrate",
            Command::Clients(_) => "clients",
            Command::Cap(_) => "cap",
            Command::Audit => "audit",
        };
        if config.db.database_url.is_none() {
            eprintln!("buy-orders {name}: set DATABASE_URL (and READ_DATABASE_URL if elsewhere)");
            return ExitCode::from(2);
        }
        let outcome = match command {
            Command::Migrate => buy_orders::migrate(&config.db)
                .await
                .map(|()| "migrations applied\n".to_owned())
                .map_err(buy_orders::AdminError::from),
            Command::Clients(command) => buy_orders::clients(&config.db, command).await,
            Command::Cap(command) => buy_orders::cap(&config.db, command).await,
            Command::Audit => return audit(&config.db).await,
        };
        return match outcome {
            Ok(out) => {
                let mut stdout = std::io::stdout().lock();
                match stdout
                    .write_all(out.as_bytes())
                    .and_then(|()| stdout.flush())
                {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_) => ExitCode::FAILURE,
                }
            }
            Err(err) => {
                eprintln!("buy-orders {name}: {err}");
                ExitCode::from(err.exit_status())
            }
        };
    }
    let system = match buy_orders::start(&config).await {
        Ok(system) => system,
        Err(err) => {
            eprintln!("buy-orders: {err}");
            return ExitCode::from(err.exit_status());
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

/// `buy-orders audit`: the report on standard output; exit 0 when every check holds, 1 on any
/// discrepancy, 2 when a check could not run.
async fn audit(db: &order_store::postgres::PgSettings) -> ExitCode {
    match order_store::postgres::audit(db).await {
        Ok(report) => {
            print!("{}", report.render());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("buy-orders audit: {err}");
            ExitCode::from(2)
        }
    }
}
