//! Places one order and reads it straight back, as a shop does after a purchase.
//!
//! ```text
//! BUY_ORDERS_API_KEY=bo_… cargo run -p buy-orders-client --example place_and_read -- EUR 25.00
//! ```
//! `WRITE_URL` (default `http://127.0.0.1:8777`) and `READ_URL` (`http://127.0.0.1:8778`) name
//! the APIs; `cargo run --release` at the workspace's root runs both and prints a key.

use buy_orders_client::{Client, Currency, FiatAmount, NewOrder};
use futures::TryStreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (currency, amount) = match (args.next(), args.next()) {
        (Some(currency), Some(amount)) => {
            (currency.parse::<Currency>()?, FiatAmount::parse(&amount)?)
        }
        _ => return Err("usage: place_and_read <USD|EUR|GBP> <amount>".into()),
    };
    let key = std::env::var("BUY_ORDERS_API_KEY").map_err(|_| "set BUY_ORDERS_API_KEY")?;
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let client = Client::builder(key)
        .write_url(var("WRITE_URL", "http://127.0.0.1:8777"))
        .read_url(var("READ_URL", "http://127.0.0.1:8778"))
        .build()?;

    let placed = client.place(NewOrder::new(currency, amount)).await?;
    println!(
        "{} {}: {} BTC at {} (order {}, key {}{})",
        placed.order.currency,
        placed.order.currency_amount,
        placed.order.btc_amount,
        placed.order.btc_rate,
        placed.order.id,
        placed.idempotence_key,
        if placed.replayed { ", replayed" } else { "" }
    );
    // Read-your-writes: the order is in the first page, however busy the pipeline.
    let newest: Vec<_> = client.list(5).try_collect().await?;
    for order in newest.iter().take(5) {
        println!(
            "  {} {} {} {}",
            order.created_at, order.id, order.currency_amount, order.btc_amount
        );
    }
    assert_eq!(newest.first().map(|o| o.id), Some(placed.order.id));
    Ok(())
}
