//! order-store on PostgreSQL inside an application that already keeps its own aggregate there:
//! the orders in a schema of their own, over TLS, next to the application's `Invoice` events.
#![cfg(feature = "postgres")]

use std::sync::Arc;

use embedding_example::invoice::{Invoice, Issue, TABLES};
use embedding_example::FixedPrice;
use order_domain::cqrs_es::persist::PersistedEventStore;
use order_domain::cqrs_es::CqrsFramework;
use order_domain::*;
use order_store::postgres::{PgEventStore, PgSchema, PgSettings};
use order_store::testing::TestDb;
use order_store::{CqrsOrderWriter, EventLog, OrderWriter, Position};
use postgres_es::PostgresEventRepository;

#[tokio::test]
async fn orders_in_a_schema_of_their_own_over_tls_next_to_the_application_s_aggregate() {
    let db = TestDb::create().await;
    let url = format!("{}?sslmode=require", db.url());

    // The application's own cqrs-es aggregate on postgres-es, in `public`.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(TABLES).execute(&pool).await.unwrap();
    let invoices = CqrsFramework::new(
        PersistedEventStore::<_, Invoice>::new_event_store(PostgresEventRepository::new(
            pool.clone(),
        )),
        vec![],
        (),
    );
    invoices
        .execute("inv-1", Issue { total_cents: 1200 })
        .await
        .unwrap();

    // The order store, in schema `buy_orders` of the same database, over TLS.
    let settings = PgSettings::for_url(&url).in_schema(PgSchema::parse("buy_orders").unwrap());
    let store = PgEventStore::open(&settings, BtcCap::new(Satoshis::from_btc(1)))
        .await
        .unwrap();
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(FixedPrice)));
    let placed = writer
        .place(PlaceBuyOrder {
            client_id: ClientId::parse("shop-1").unwrap(),
            idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
            currency: Currency::GBP,
            amount: FiatAmount::parse("50").unwrap(),
        })
        .await
        .unwrap();
    invoices
        .execute("inv-2", Issue { total_cents: 900 })
        .await
        .unwrap();

    // Each sees only its own: the log holds the order, the invoices stay in `public.events`.
    let log = store.read_after(Position::ZERO, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event.as_placed().unwrap(), &placed.order);
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM public.events WHERE aggregate_type = 'Invoice'), \
                (SELECT count(*) FROM buy_orders.events WHERE aggregate_type = 'BuyOrder')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (2, 1));
    assert_eq!(
        store.ledger().await.unwrap().sold(),
        Satoshis::new(50_000_000),
        "half the cap taken, by the order alone"
    );

    // Every session on the database is encrypted.
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
          WHERE a.datname = current_database() AND NOT s.ssl",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(plain, 0);
}
