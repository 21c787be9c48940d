//! A projection of your own: BTC sold per currency per day (UTC), kept from the event log with
//! the guarantees `buy_order_view` has, by the library (`order_store::postgres::Projection`).
//!
//! This file is a whole projector binary: the project's projection plus this one, with the
//! same commands. `cargo run -p projector --example daily_btc -- list` shows both;
//! `… -- rebuild daily_btc_sold` rebuilds this one from the log; `… -- run` keeps both current.
//! Its test rebuilds it from the log against the real PostgreSQL.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use order_domain::Currency;
use order_store::postgres::{Projection, Transaction};
use order_store::{LoggedEvent, StoreError};
use rust_decimal::Decimal;

/// `daily_btc_sold`: one row per day and currency: orders, satoshis and fiat.
#[derive(Clone, Copy)]
pub struct DailyBtc;

/// One day's sales in one currency, as summed from a batch of events.
#[derive(Default)]
struct Sales {
    orders: i64,
    satoshis: i64,
    fiat: Decimal,
}

#[async_trait::async_trait]
impl Projection for DailyBtc {
    fn name(&self) -> &str {
        "daily_btc_sold"
    }

    fn tables(&self) -> Vec<String> {
        vec!["daily_btc_sold".into()]
    }

    async fn create(&self, tx: &Transaction<'_>, _live: &str) -> Result<(), StoreError> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS daily_btc_sold (
                 day      date    NOT NULL,
                 currency text    NOT NULL,
                 orders   bigint  NOT NULL,
                 satoshis bigint  NOT NULL,
                 fiat     numeric NOT NULL,
                 PRIMARY KEY (day, currency))",
        )
        .await
        .map_err(StoreError::from_database)
    }

    async fn apply(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
        // Summed in the batch first (checked: money never wraps), then one upsert per row.
        let mut sums: BTreeMap<(NaiveDate, Currency), Sales> = BTreeMap::new();
        for placed in events.iter().filter_map(|e| e.event.as_placed()) {
            let sales = sums
                .entry((placed.placed_at.date_naive(), placed.currency))
                .or_default();
            let satoshis = i64::try_from(placed.satoshis.count())
                .map_err(|e| StoreError::corrupt(e.to_string()))?;
            sales.orders += 1;
            sales.satoshis = sales
                .satoshis
                .checked_add(satoshis)
                .ok_or_else(|| StoreError::corrupt("satoshis overflow"))?;
            sales.fiat += placed.amount.to_decimal();
        }
        let (mut days, mut currencies, mut orders, mut satoshis, mut fiat) =
            (vec![], vec![], vec![], vec![], vec![]);
        for ((day, currency), sales) in sums {
            days.push(day);
            currencies.push(currency.code());
            orders.push(sales.orders);
            satoshis.push(sales.satoshis);
            fiat.push(sales.fiat);
        }
        tx.execute(
            "INSERT INTO daily_btc_sold (day, currency, orders, satoshis, fiat)
             SELECT * FROM UNNEST($1::date[], $2::text[], $3::bigint[], $4::bigint[], $5::numeric[])
             ON CONFLICT (day, currency) DO UPDATE SET
                 orders = daily_btc_sold.orders + excluded.orders,
                 satoshis = daily_btc_sold.satoshis + excluded.satoshis,
                 fiat = daily_btc_sold.fiat + excluded.fiat",
            &[&days, &currencies, &orders, &satoshis, &fiat],
        )
        .await
        .map_err(StoreError::from_database)?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    projector::cli::main(projector::cli::Projections::new().with(DailyBtc)).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use order_domain::*;
    use order_store::postgres::{PgEventStore, PgProjection, PgSettings};
    use order_store::testing::{bulk_events, store_versioned, TestDb};
    use order_store::{CqrsOrderWriter, OrderWriter, Position, ReadModelWriter};
    use price_feed::FixedSource;

    use super::*;

    /// The table's rows as text, in order.
    async fn rows(url: &str) -> Vec<(String, String, i64, i64, String)> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query(
                "SELECT day::text, currency, orders, satoshis, fiat::text FROM daily_btc_sold \
                 ORDER BY day, currency",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    }

    #[tokio::test]
    async fn it_is_rebuilt_from_the_log_and_kept_current() {
        let db = TestDb::create().await;
        let settings = PgSettings::for_url(db.url());
        let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
            .await
            .unwrap();
        // 100 orders of 5.00 USD for 0.0001 BTC each on 2026-11-26 (written in bulk) …
        bulk_events(store.pool(), 100).await;
        // … one the day before, in EUR …
        let eve = PlaceBuyOrder {
            client_id: ClientId::parse("eve").unwrap(),
            idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
            currency: Currency::EUR,
            amount: FiatAmount::parse("12.34").unwrap(),
        };
        store_versioned(store.pool(), &eve, "1.0.0", |fields| {
            fields.insert("placed_at".into(), "2026-11-25T23:59:59.999999Z".into());
        })
        .await;
        let projection = PgProjection::open(&settings, DailyBtc).await.unwrap();
        assert_eq!(
            projection.rebuild(&store, 50, &|_, _| {}).await.unwrap(),
            Position(101)
        );
        let day = [
            (
                "2026-11-25".into(),
                "EUR".into(),
                1,
                12_340_000,
                "12.34".into(),
            ),
            (
                "2026-11-26".into(),
                "USD".into(),
                100,
                1_000_000,
                "500.00".into(),
            ),
        ];
        assert_eq!(rows(db.url()).await, day);

        // … and then orders arriving live, applied by the projector from the log.
        let rates: Arc<FixedSource> = Arc::new("USD=100,EUR=100,GBP=100".parse().unwrap());
        let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rates));
        let placed = writer
            .place(PlaceBuyOrder {
                client_id: ClientId::parse("live").unwrap(),
                idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
                currency: Currency::GBP,
                amount: FiatAmount::parse("1").unwrap(),
            })
            .await
            .unwrap();
        let live =
            projector::Projector::new(Arc::new(store.clone()), Arc::new(projection.clone()), 10);
        assert_eq!(live.catch_up().await.unwrap(), Position(102));
        assert_eq!(
            live.catch_up().await.unwrap(),
            Position(102),
            "nothing twice"
        );
        let today = placed.order.placed_at.date_naive().to_string();
        let all = rows(db.url()).await;
        assert!(
            all.contains(&(today, "GBP".into(), 1, 1_000_000, "1.00".into())),
            "{all:?}"
        );
        assert_eq!(projection.checkpoint().await.unwrap(), Position(102));

        // A rebuild gives the same table.
        projection.rebuild(&store, 7, &|_, _| {}).await.unwrap();
        assert_eq!(rows(db.url()).await, all);
    }
}
