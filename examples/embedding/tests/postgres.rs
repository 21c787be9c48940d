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
            idempotency_key: IdempotencyKey::from_uuid(order_domain::uuid::Uuid::new_v4()),
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

fn order(client: &str, currency: Currency, amount: &str) -> PlaceBuyOrder {
    PlaceBuyOrder {
        client_id: ClientId::parse(client).unwrap(),
        idempotency_key: IdempotencyKey::from_uuid(order_domain::uuid::Uuid::new_v4()),
        currency,
        amount: FiatAmount::parse(amount).unwrap(),
    }
}

/// First steps, in memory: the same writer and the same follower as on PostgreSQL.
#[tokio::test]
async fn in_memory_first_orders_placed_and_read_back() {
    use order_store::memory::{MemEventStore, MemReadModel};
    use order_store::{Follower, PageRequest, ReadModel, Scope};

    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(FixedPrice)));
    let placed = writer
        .place(order("shop-1", Currency::USD, "25"))
        .await
        .unwrap();
    let model = Arc::new(MemReadModel::new());
    Follower::new(Arc::new(store), model.clone(), 100)
        .catch_up()
        .await
        .unwrap();
    let page = model
        .page(PageRequest::default(), &Scope::All)
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.rows[0].id, placed.order.order_id);
}

/// Settings as the application's deployment gives them: from its environment, no CLI crate.
fn settings_from_env(db: &TestDb) -> PgSettings {
    let env = [
        ("DATABASE_URL", format!("{}?sslmode=require", db.url())),
        ("PG_SCHEMA", "buy_orders".to_owned()),
        ("DB_POOL_SIZE", "4".to_owned()),
    ];
    PgSettings::from_vars(|name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
        .unwrap()
}

#[tokio::test]
async fn our_projection_is_kept_current_and_read_back() {
    use embedding_example::sales::{sold, SoldPerCurrency};
    use order_store::postgres::PgProjection;
    use order_store::Follower;

    let db = TestDb::create().await;
    let settings = settings_from_env(&db);
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let sales = Arc::new(
        PgProjection::open(&settings, SoldPerCurrency)
            .await
            .unwrap(),
    );
    let follower = Follower::new(Arc::new(store.clone()), sales.clone(), 100);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let following = tokio::spawn(async move {
        follower
            .run(async {
                stopped.await.ok();
            })
            .await
    });

    let writer = CqrsOrderWriter::new(store, BuyOrderServices::new(Arc::new(FixedPrice)));
    for amount in ["10", "20", "30"] {
        writer
            .place(order("shop-1", Currency::EUR, amount))
            .await
            .unwrap();
    }
    // 60 EUR at 100 per BTC: 0.6 BTC, as soon as the follower has seen it.
    let mut seen = 0;
    for _ in 0..100 {
        seen = sold(&sales, Currency::EUR).await.unwrap();
        if seen == 60_000_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 60_000_000);
    stop.send(()).unwrap();
    following.await.unwrap();
}

#[tokio::test]
async fn imported_history_is_read_through_an_upcaster_registered_once() {
    use embedding_example::sales::{imported_history, sold, SoldPerCurrency};
    use order_store::postgres::PgProjection;
    use order_store::{Follower, StoreError};

    let db = TestDb::create().await;
    let settings = settings_from_env(&db).with_upcaster(imported_history());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    // The import, as the old system's exporter wrote it (0.9.0, no `rate_source`).
    let imported = order("shop-1", Currency::GBP, "40");
    let import = sqlx::PgPool::connect(&format!("{}?options=-csearch_path%3Dbuy_orders", db.url()))
        .await
        .unwrap();
    order_store::testing::store_versioned(&import, &imported, "0.9.0", |fields| {
        fields.remove("rate_source");
    })
    .await;

    // A retry of the imported order's key answers it, in today's shape.
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(FixedPrice)));
    let replay = writer.place(imported).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.order.rate_source, "imported");

    // Our projection has it too, and a rebuild through the same settings keeps it.
    let sales = PgProjection::open(&settings, SoldPerCurrency)
        .await
        .unwrap();
    let follower = Follower::new(Arc::new(store.clone()), Arc::new(sales), 100);
    follower.catch_up().await.unwrap();
    let sales = PgProjection::open(&settings, SoldPerCurrency)
        .await
        .unwrap();
    assert_eq!(sold(&sales, Currency::GBP).await.unwrap(), 40_000_000);
    sales.rebuild(&store, 100, &|_, _| {}).await.unwrap();
    assert_eq!(sold(&sales, Currency::GBP).await.unwrap(), 40_000_000);

    // A tool that opened the store without the upcaster cannot rebuild it away.
    let mut forgetful = settings_from_env(&db);
    forgetful.event_reader = order_domain::EventReader::new();
    let without = PgEventStore::connect(&forgetful).await.unwrap();
    let refused = sales.rebuild(&without, 100, &|_, _| {}).await.unwrap_err();
    assert!(matches!(refused, StoreError::Misconfigured(_)), "{refused}");
    assert_eq!(sold(&sales, Currency::GBP).await.unwrap(), 40_000_000);
}

#[tokio::test]
async fn the_store_s_errors_say_what_to_do() {
    use order_store::{SqlState, StoreError};

    let db = TestDb::create().await;
    let settings = settings_from_env(&db);
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();

    // A statement of ours that breaks a unique index: matched by its SQLSTATE, not its text.
    drop(store);
    let pool = &sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS public.receipts (order_id uuid PRIMARY KEY)")
        .execute(pool)
        .await
        .unwrap();
    let id = order_domain::uuid::Uuid::new_v4();
    let insert = || {
        sqlx::query("INSERT INTO public.receipts VALUES ($1)")
            .bind(id)
            .execute(pool)
    };
    insert().await.unwrap();
    let twice = insert()
        .await
        .map_err(StoreError::from_database)
        .unwrap_err();
    assert_eq!(twice.sql_state(), Some(SqlState::UNIQUE_VIOLATION));
    assert!(matches!(twice, StoreError::Rejected(_)) && !twice.is_retryable());

    // A configuration mistake is not an outage: no point retrying it.
    let wrong_db = PgSettings::for_url(&format!("{}_missing", db.url()));
    let mistake = PgEventStore::open(&wrong_db, BtcCap::DEFAULT)
        .await
        .unwrap_err();
    assert!(matches!(mistake, StoreError::Misconfigured(_)), "{mistake}");
    assert!(!mistake.is_retryable());
    let verify_ca = PgSettings::for_url(&format!("{}?sslmode=verify-ca", db.url()));
    let mistake = PgEventStore::open(&verify_ca, BtcCap::DEFAULT)
        .await
        .unwrap_err();
    assert!(matches!(mistake, StoreError::Misconfigured(_)), "{mistake}");

    // Nothing listening: an outage, worth retrying later.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut down = PgSettings::for_url(&format!("postgres://postgres@127.0.0.1:{port}/x"));
    down.acquire_timeout = std::time::Duration::from_millis(300);
    let outage = PgEventStore::open(&down, BtcCap::DEFAULT)
        .await
        .unwrap_err();
    assert!(outage.is_retryable(), "{outage}");
}
