//! Embedding `order-domain` in another application: places buy orders with cqrs-es's own
//! `MemStore` and a fixed price, then shows an idempotent retry and a refused key reuse.
//!
//! Run with `cargo run -p order-domain --example embed`.
//!
//! (`MemStore` prints every load and commit, and never reports a concurrency conflict: fine for an
//! example, not for a server. `order-store` has the store the services use.)

use std::sync::Arc;

use cqrs_es::mem_store::MemStore;
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use order_domain::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemStore::<BuyOrder>::default();
    let cqrs = CqrsFramework::new(
        store.clone(),
        vec![],
        // An application plugs in its own `PriceSource`; here, one fixed rate per currency.
        BuyOrderServices::new(Arc::new(
            "USD=48478.88,EUR=41191.91,GBP=35330.89".parse::<FixedSource>()?,
        )),
    );

    let client = ClientId::parse("example-client")?;
    let key = IdempotencyKey::from_uuid(uuid::Uuid::new_v4());
    let place = PlaceBuyOrder {
        client_id: client.clone(),
        idempotency_key: key,
        currency: Currency::USD,
        amount: FiatAmount::parse("123.45")?,
    };
    let id = place.order_id().to_string();

    cqrs.execute(&id, place.clone().into()).await?;
    // The same request again: nothing new is stored.
    cqrs.execute(&id, place.clone().into()).await?;

    let order = store.load_aggregate(&id).await?.aggregate;
    let placed = order.placed().expect("placed above");
    println!(
        "order {} bought {} BTC for {} {} at {}",
        placed.order_id, placed.satoshis, placed.amount, placed.currency, placed.rate
    );

    // The same key with another amount is refused.
    let reuse = PlaceBuyOrder {
        amount: FiatAmount::parse("1.00")?,
        ..place
    };
    match cqrs.execute(&id, reuse.into()).await {
        Err(AggregateError::UserError(err)) => println!("refused as expected: {err}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    Ok(())
}
