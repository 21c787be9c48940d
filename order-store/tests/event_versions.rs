//! Stored events of other versions (`docs/events.md`), against the real PostgreSQL: an older
//! shape is upcast wherever it is read; an event no reader can read is parked, never misread,
//! and never stalls the events after it.

use std::sync::Arc;

use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::{
    every_row, rate_source_upcaster, store_versioned, without_rate_source, writer, TestDb,
};
use order_store::*;

fn order(amount: &str) -> PlaceBuyOrder {
    order_domain::testing::order_for("versions", amount)
}

async fn open(db: &TestDb) -> (PgEventStore, PgReadModel) {
    let settings = PgSettings::for_url(db.url());
    (
        PgEventStore::open(&settings, BtcCap::DEFAULT)
            .await
            .unwrap(),
        PgReadModel::open(&settings).await.unwrap(),
    )
}

#[tokio::test]
async fn an_older_shape_is_upcast_wherever_it_is_read() {
    let db = TestDb::create().await;
    let (plain, model) = open(&db).await;
    let old = order("7");
    store_versioned(plain.pool(), &old, "0.9.0", without_rate_source).await;
    let later = writer(&plain).place(order("3")).await.unwrap();
    let store = plain.clone().with_upcaster(rate_source_upcaster());

    // Loading the aggregate: a retry of its key answers the stored order.
    let replay = writer(&store).place(old.clone()).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.order.order_id, old.order_id());
    assert_eq!(
        replay.order.rate_source, "unknown",
        "filled by the upcaster"
    );

    // The log (what the relay and the projector read), in the current shape.
    let log = store.read_after(Position::ZERO, 10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].event.as_placed().unwrap(), &replay.order);
    assert_eq!(log[1].event.as_placed().unwrap(), &later.order);

    // A rebuild projects it, and parks nothing.
    assert_eq!(
        model.rebuild(&store, 10, &|_, _| {}).await.unwrap(),
        Position(2)
    );
    let rows = every_row(&model, &Scope::All).await;
    assert_eq!(rows.len(), 2);
    assert!(rows.contains(&OrderView::from(&replay.order)));
    assert!(model.parked().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreadable_event_is_parked_and_projected_once_its_upcaster_is_deployed() {
    let db = TestDb::create().await;
    let (store, model) = open(&db).await;
    let writer = writer(&store);
    writer.place(order("1")).await.unwrap();
    let old = order("2");
    store_versioned(store.pool(), &old, "0.9.0", without_rate_source).await;
    writer.place(order("3")).await.unwrap();

    // Without its upcaster, the live path parks it and goes on to position 3 (as the
    // projector does: apply what it can read, park the rest, the checkpoint past both).
    let read = store
        .read_after_with_unreadable(Position::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(read.events.len(), 2);
    model.apply(&read.events).await.unwrap();
    model.park(&read.unreadable).await.unwrap();
    model.park(&read.unreadable).await.unwrap(); // idempotent
    assert_eq!(model.checkpoint().await.unwrap(), Position(3));
    let parked = model.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, Position(2));
    assert_eq!(parked[0].aggregate_id, old.order_id().to_string());
    assert!(
        parked[0].reason.contains("0.9.0 has no upcaster"),
        "{}",
        parked[0].reason
    );
    assert_eq!(every_row(&model, &Scope::All).await.len(), 2);

    // A rebuild without it parks it again, and nothing else.
    assert_eq!(
        model.rebuild(&store, 10, &|_, _| {}).await.unwrap(),
        Position(3)
    );
    assert_eq!(model.parked().await.unwrap().len(), 1);

    // With the upcaster deployed, a rebuild projects it and clears its parked row.
    let upgraded = store.with_upcaster(rate_source_upcaster());
    assert_eq!(
        model.rebuild(&upgraded, 10, &|_, _| {}).await.unwrap(),
        Position(3)
    );
    assert_eq!(every_row(&model, &Scope::All).await.len(), 3);
    assert!(model.parked().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreadable_last_event_still_moves_a_reader_past_it() {
    let db = TestDb::create().await;
    let (store, model) = open(&db).await;
    writer(&store).place(order("1")).await.unwrap();
    store_versioned(store.pool(), &order("2"), "3.1.0", |_| {}).await;
    let read = store
        .read_after_with_unreadable(Position(1), 10)
        .await
        .unwrap();
    assert!(read.events.is_empty());
    assert_eq!(
        read.reached(),
        Some(Position(2)),
        "the reader moves past it"
    );
    model.park(&read.unreadable).await.unwrap();
    assert_eq!(model.checkpoint().await.unwrap(), Position(2));
}

/// The case: the live table applied an old-shape event through an upcaster registered
/// on the settings; a rebuild through a handle opened without it is refused, changing nothing,
/// where it used to park the event and drop its row.
#[tokio::test]
async fn a_rebuild_that_cannot_read_what_the_live_table_applied_is_refused() {
    let db = TestDb::create().await;
    let with_upcaster = PgSettings::for_url(db.url()).with_upcaster(rate_source_upcaster());
    let store = PgEventStore::open(&with_upcaster, BtcCap::DEFAULT)
        .await
        .unwrap();
    let model = PgReadModel::open(&with_upcaster).await.unwrap();
    writer(&store).place(order("1")).await.unwrap();
    store_versioned(store.pool(), &order("2"), "0.9.0", without_rate_source).await;
    // A newer shape no build reads: parked by the live table too, so no reason to refuse.
    store_versioned(store.pool(), &order("4"), "2.0.0", |_| {}).await;
    writer(&store).place(order("3")).await.unwrap();
    let follower = Follower::new(Arc::new(store.clone()), Arc::new(model.clone()), 10);
    assert_eq!(follower.catch_up().await.unwrap(), Position(4));
    assert_eq!(every_row(&model, &Scope::All).await.len(), 3);
    assert_eq!(model.parked().await.unwrap().len(), 1);

    let forgot = PgEventStore::connect(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    let refused = model.rebuild(&forgot, 10, &|_, _| {}).await.unwrap_err();

    assert!(
        matches!(refused, StoreError::Misconfigured(_)),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("position 2"), "{refused}");
    assert!(refused.to_string().contains("with_upcaster"), "{refused}");
    assert_eq!(
        every_row(&model, &Scope::All).await.len(),
        3,
        "nothing dropped"
    );
    assert_eq!(model.checkpoint().await.unwrap(), Position(4));
    let scratch: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'public_rb_%'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(scratch, 0, "the scratch tables are gone");

    // Every handle opened from the settings reads alike: the rebuild through them is fine.
    let same = PgEventStore::connect(&with_upcaster).await.unwrap();
    assert_eq!(
        model.rebuild(&same, 10, &|_, _| {}).await.unwrap(),
        Position(4)
    );
    assert_eq!(every_row(&model, &Scope::All).await.len(), 3);
    assert_eq!(
        model.parked().await.unwrap().len(),
        1,
        "the 2.0.0 event stays parked"
    );
}
