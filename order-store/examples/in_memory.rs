//! Orders in memory, from placing to reading pages: no database needed.
//!
//! `cargo run -p order-store --example in_memory`

use std::sync::Arc;

use order_domain::*;
use order_store::memory::{MemEventStore, MemReadModel};
use order_store::{
    CqrsOrderWriter, Follower, OrderWriter, PageRequest, PageSize, PlaceError, ReadModel, Scope,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A cap of 1 BTC over all orders, and one rate for every currency.
    let store = MemEventStore::new(BtcCap::new(Satoshis::from_btc(1)));
    let prices = FixedSource::uniform(BtcRate::parse("1000")?);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(prices)));
    let shop = ClientId::parse("shop-1")?;

    let mut placed = Vec::new();
    for (key, amount) in [
        ("6f1c1f2e-0000-4000-8000-000000000001", "100"),
        ("6f1c1f2e-0000-4000-8000-000000000002", "250.50"),
        ("6f1c1f2e-0000-4000-8000-000000000003", "0.01"),
    ] {
        let order = PlaceBuyOrder {
            client_id: shop.clone(),
            idempotency_key: IdempotencyKey::parse(key)?,
            currency: Currency::EUR,
            amount: FiatAmount::parse(amount)?,
        };
        let placement = writer.place(order.clone()).await?;
        println!("placed {} for {amount} EUR", placement.order.satoshis);
        // A retry with the same key answers the same order and places nothing.
        assert!(writer.place(order).await?.replayed);
        placed.push(placement.order);
    }

    // 0.35051 BTC sold: an order for 0.7 BTC more would cross the cap, and is refused whole.
    let too_much = PlaceBuyOrder {
        client_id: shop.clone(),
        idempotency_key: IdempotencyKey::parse("6f1c1f2e-0000-4000-8000-000000000004")?,
        currency: Currency::EUR,
        amount: FiatAmount::parse("700")?,
    };
    match writer.place(too_much).await {
        Err(PlaceError::Refused(BuyOrderError::CapExceeded { remaining, .. })) => {
            println!("refused: only {remaining} BTC left")
        }
        other => panic!("the cap was not applied: {other:?}"),
    }
    assert_eq!(
        writer.remaining_btc().await?,
        Satoshis::new(64_949_000),
        "nothing taken by the refusal"
    );

    // The read model, kept from the log, read newest first, two at a time.
    let model = Arc::new(MemReadModel::new());
    Follower::new(Arc::new(store), model.clone(), 100)
        .catch_up()
        .await?;
    let mine = Scope::Client(shop);
    let two = PageSize::new(2).expect("1 to 100");
    let first = model
        .page(
            PageRequest {
                after: None,
                size: two,
            },
            &mine,
        )
        .await?;
    let second = model
        .page(
            PageRequest {
                after: first.last_reference,
                size: two,
            },
            &mine,
        )
        .await?;
    let ids: Vec<_> = first
        .rows
        .iter()
        .chain(&second.rows)
        .map(|row| row.id)
        .collect();
    let newest_first: Vec<_> = placed.iter().rev().map(|order| order.order_id).collect();
    assert_eq!(ids, newest_first);
    println!("read back {} orders, newest first", ids.len());
    Ok(())
}
