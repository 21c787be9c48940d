//! Deployments a managed database asks for, against the real server of this machine: TLS
//! (`ssl = on` here, with a self-signed certificate for `localhost`) on every connection the
//! store opens, and stores in schemas of their own sharing one database.

use std::time::Duration;

use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSchema, PgSettings};
use order_store::testing::{every_row, writer, TestDb};
use order_store::*;
use sqlx::postgres::PgListener;

fn order(amount: &str) -> PlaceBuyOrder {
    order_domain::testing::order_for("tls-test", amount)
}

/// The database's URL with `host` for 127.0.0.1 and `query` appended.
fn url(db: &TestDb, host: &str, query: &str) -> String {
    let url = db.url().replacen("@127.0.0.1:", &format!("@{host}:"), 1);
    assert!(url.contains(host), "TestDb's URL names 127.0.0.1: {url}");
    format!("{url}?{query}")
}

/// The server's own certificate file: trusting it is how a client verifies a self-signed server.
async fn server_certificate(db: &TestDb) -> String {
    order_store::testing::server_certificate(db.url()).await
}

/// (encrypted, plain) sessions on the test's database, other than the asking one.
async fn sessions(db: &TestDb) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(&format!("{}?sslmode=disable", db.url()))
        .await
        .unwrap();
    let counts = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
           FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
          WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    counts
}

#[tokio::test]
async fn sslmode_require_encrypts_every_session_the_store_opens() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(&url(&db, "127.0.0.1", "sslmode=require"));
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let placed = writer(&store).place(order("10")).await.unwrap();
    let model = PgReadModel::open(&settings).await.unwrap();
    model
        .apply(&store.read_after(Position::ZERO, 10).await.unwrap())
        .await
        .unwrap();
    let rows = every_row(&model, &Scope::All).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, placed.order.order_id);
    // The listener's session too.
    store
        .wait_for_events_after(Position(1), Duration::from_millis(10))
        .await
        .unwrap();

    let (encrypted, plain) = sessions(&db).await;
    assert_eq!(plain, 0, "every session of the store is encrypted");
    assert!(
        encrypted >= 3,
        "write pool, read pool and listener: {encrypted} (the API-key registry: api-keys/tests/postgres.rs)"
    );
    // The count tells the two apart: a plain session shows as plain.
    let unencrypted = sqlx::PgPool::connect(&format!("{}?sslmode=disable", db.url()))
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&unencrypted).await.unwrap();
    assert_eq!(sessions(&db).await.1, 1);
    unencrypted.close().await;
}

#[tokio::test]
async fn verify_full_checks_the_host_name_in_both_clients() {
    let db = TestDb::create().await;
    let cert = server_certificate(&db).await;

    // The certificate is for `localhost`, and trusted through `sslrootcert`.
    let full = PgSettings::for_url(&url(
        &db,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={cert}"),
    ));
    let store = PgEventStore::open(&full, BtcCap::DEFAULT).await.unwrap();
    writer(&store).place(order("10")).await.unwrap();
    let model = PgReadModel::open(&full).await.unwrap();
    assert_eq!(model.checkpoint().await.unwrap(), Position::ZERO);

    // The same server reached as 127.0.0.1 is not the host the certificate names: refused by
    // sqlx (the event store) and by tokio-postgres (the read table), each for that reason.
    let wrong_name = PgSettings::for_url(&url(
        &db,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={cert}"),
    ));
    let refused = PgEventStore::connect(&wrong_name).await.err().unwrap();
    assert!(
        refused.to_string().contains("not valid for name"),
        "event store: {refused}"
    );
    // A certificate that does not verify is a setting to fix, not an outage to wait out.
    assert!(
        matches!(refused, StoreError::Misconfigured(_)),
        "{refused:?}"
    );
    let refused = PgReadModel::open(&wrong_name).await.err().unwrap();
    assert!(
        refused.to_string().contains("not valid for name"),
        "read table: {refused}"
    );
    assert!(
        matches!(refused, StoreError::Misconfigured(_)),
        "{refused:?}"
    );

    // (An untrusted chain cannot be shown against this server: Debian links its self-signed
    // certificate into /etc/ssl/certs, which the system's roots include. The chain check is
    // rustls's WebPkiServerVerifier, the same one that refused the name above.)
    let (encrypted, plain) = sessions(&db).await;
    assert_eq!((plain, encrypted > 0), (0, true));
}

fn schema(name: &str) -> PgSchema {
    PgSchema::parse(name).unwrap()
}

#[tokio::test]
async fn two_schemas_in_one_database_are_two_independent_stores() {
    let db = TestDb::create().await;
    let a = PgSettings::for_url(db.url()).in_schema(schema("shop_a"));
    let b = PgSettings::for_url(db.url()).in_schema(schema("shop_b"));
    let cap: BtcCap = "2".parse().unwrap();
    let (store_a, store_b) = (
        PgEventStore::open(&a, cap).await.unwrap(),
        PgEventStore::open(&b, cap).await.unwrap(),
    );
    let (writer_a, writer_b) = (writer(&store_a), writer(&store_b));

    // Each has its own cap: A full does not stop B.
    writer_a.place(order("150")).await.unwrap();
    writer_a.place(order("25")).await.unwrap();
    writer_a.place(order("25")).await.unwrap();
    let refused = writer_a.place(order("0.01")).await;
    assert!(
        matches!(
            refused,
            Err(PlaceError::Refused(BuyOrderError::CapExceeded { .. }))
        ),
        "{refused:?}"
    );
    writer_b.place(order("150")).await.unwrap();
    assert_eq!(store_a.head().await.unwrap(), Position(3));
    assert_eq!(
        store_b.head().await.unwrap(),
        Position(1),
        "positions of its own"
    );
    assert_eq!(
        store_b.ledger().await.unwrap().sold(),
        Satoshis::new(150_000_000)
    );

    // Each is notified on its own channel: B's listener hears B's position, not A's (A
    // commits first, so a shared channel would deliver A's position first).
    let mut listener = PgListener::connect(db.url()).await.unwrap();
    listener.listen("buy_order_events.shop_b").await.unwrap();
    store_a
        .set_cap("3".parse().unwrap(), "schema test")
        .await
        .unwrap();
    writer_a.place(order("1")).await.unwrap();
    writer_b.place(order("1")).await.unwrap();
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("B's commit is notified")
        .unwrap();
    assert_eq!(note.payload(), "2", "B's second position, not A's fourth");

    // Each has its own read table, migration history and relay lease; nothing is in public.
    let (model_a, model_b) = (
        PgReadModel::open(&a).await.unwrap(),
        PgReadModel::open(&b).await.unwrap(),
    );
    assert_eq!(
        model_a.rebuild(&store_a, 10, &|_, _| {}).await.unwrap(),
        Position(4)
    );
    assert_eq!(
        model_b.rebuild(&store_b, 10, &|_, _| {}).await.unwrap(),
        Position(2)
    );
    let (rows_a, rows_b) = (
        every_row(&model_a, &Scope::All).await,
        every_row(&model_b, &Scope::All).await,
    );
    assert_eq!((rows_a.len(), rows_b.len()), (4, 2));
    assert!(rows_b.iter().all(|row| !rows_a.contains(row)));
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let (public_events, histories): (bool, i64) = sqlx::query_as(
        "SELECT to_regclass('public.events') IS NULL, \
                (SELECT count(DISTINCT table_schema) FROM information_schema.tables \
                  WHERE table_name = '_sqlx_migrations')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((public_events, histories), (true, 2));
    let mut lease_a = store_a.relay_session().await.unwrap();
    let mut lease_b = store_b.relay_session().await.unwrap();
    assert!(lease_a.try_acquire().await.unwrap());
    assert!(
        lease_b.try_acquire().await.unwrap(),
        "B's relay is not A's standby"
    );
    let mut second_a = store_a.relay_session().await.unwrap();
    assert!(
        !second_a.try_acquire().await.unwrap(),
        "one relay per store"
    );
}
