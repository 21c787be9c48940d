//! Reads of the read table share a few pipelined sessions (`DB_READ_SESSIONS`,
//! `DB_READ_PIPELINE_DEPTH`), against the real PostgreSQL: many concurrent reads each get their
//! own answer on no more sessions than configured; a session that dies is replaced; a session
//! whose backend freezes holds only the reads already sent on it.

use std::sync::Arc;
use std::time::Duration;

use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::testing::SHARED_READS;
use order_store::*;
use price_feed::FixedSource;

/// A database with `n` projected orders, and their ids newest first.
async fn projected(db: &TestDb, n: usize) -> (PgEventStore, Vec<OrderId>) {
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let prices: FixedSource = "USD=50000,EUR=50000,GBP=50000".parse().unwrap();
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(prices)));
    for _ in 0..n {
        writer
            .place(order_domain::testing::order_for("sessions", "10"))
            .await
            .unwrap();
    }
    let log = store.read_after(Position::ZERO, n + 1).await.unwrap();
    let loader = PgReadModel::open(&settings).await.unwrap();
    loader.apply(&log).await.unwrap();
    let newest_first = log.iter().rev().map(|e| e.aggregate_id).collect();
    (store, newest_first)
}

async fn model(db: &TestDb, sessions: u32, depth: u32) -> PgReadModel {
    let mut settings = PgSettings::for_url(db.url());
    settings.read_sessions = sessions;
    settings.read_pipeline_depth = depth;
    settings.acquire_timeout = Duration::from_secs(1);
    PgReadModel::open(&settings).await.unwrap()
}

/// The backends of the shared read sessions of this test's database.
async fn shared_backends(store: &PgEventStore) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1 ORDER BY pid",
    )
    .bind(SHARED_READS)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// Five projected orders (newest first) and a read model with `sessions` and `depth`, after one
/// read: exactly one shared session is open, on the backend returned.
async fn one_session_open(
    db: &TestDb,
    sessions: u32,
    depth: u32,
) -> (PgEventStore, Vec<OrderId>, PgReadModel, i32) {
    let (store, ids) = projected(db, 5).await;
    let model = model(db, sessions, depth).await;
    model.get(ids[0], &Scope::All).await.unwrap();
    let backends = shared_backends(&store).await;
    assert_eq!(backends.len(), 1);
    (store, ids, model, backends[0])
}

fn page_after(id: OrderId, size: u16) -> PageRequest {
    PageRequest {
        after: Some(id),
        size: PageSize::new(size).unwrap(),
    }
}

/// Reads `ids[k]` and the page after it, for every k, all at once; each must get exactly its
/// own answer.
async fn read_all_at_once(model: &PgReadModel, ids: &[OrderId], rounds: usize) {
    let ids = Arc::new(ids.to_vec());
    let tasks: Vec<_> = (0..rounds)
        .map(|i| {
            let (model, ids) = (model.clone(), ids.clone());
            tokio::spawn(async move {
                let k = i % (ids.len() - 1);
                let one = model.get(ids[k], &Scope::All).await.unwrap().unwrap();
                assert_eq!(one.id, ids[k]);
                let page = model
                    .page(page_after(ids[k], 2), &Scope::All)
                    .await
                    .unwrap();
                let got: Vec<OrderId> = page.rows.iter().map(|row| row.id).collect();
                assert_eq!(got, ids[k + 1..(k + 3).min(ids.len())].to_vec());
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_get_their_own_answers_on_no_more_sessions_than_configured() {
    let db = TestDb::create().await;
    let (store, ids) = projected(&db, 60).await;
    let model = model(&db, 3, 4).await;

    // One read at a time: one session serves them all.
    for id in ids.iter().take(10) {
        assert_eq!(model.get(*id, &Scope::All).await.unwrap().unwrap().id, *id);
    }
    assert_eq!(shared_backends(&store).await.len(), 1);

    // 400 reads at once: spread over the three sessions, never a fourth.
    read_all_at_once(&model, &ids, 400).await;
    let backends = shared_backends(&store).await;
    assert!(
        (2..=3).contains(&backends.len()),
        "{} shared sessions",
        backends.len()
    );
    // The readiness check reads on them too.
    model.ping().await.unwrap();
    assert!(shared_backends(&store).await.len() <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_is_replaced_by_the_next_reads() {
    let db = TestDb::create().await;
    // One session: replacing it must not wait for a pool that is still holding the dead one.
    let (store, ids, model, dead) = one_session_open(&db, 1, 16).await;

    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(dead)
        .execute(store.pool())
        .await
        .unwrap();
    // The client may learn of it from the read it sends next (an error, answered 503); the
    // read after that opens a new session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut failures = 0;
    loop {
        match model.get(ids[0], &Scope::All).await {
            Ok(found) => {
                assert_eq!(found.unwrap().id, ids[0]);
                break;
            }
            Err(ReadError::Store(StoreError::Unavailable(_))) => failures += 1,
            Err(other) => panic!("{other}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failures <= 1,
        "{failures} reads failed after one session died"
    );
    let after = shared_backends(&store).await;
    assert_eq!(after.len(), 1);
    assert_ne!(after[0], dead);
    read_all_at_once(&model, &ids, 50).await;
}

/// Stops a PostgreSQL backend (SIGSTOP) until dropped: a peer that freezes, not one that dies.
struct Frozen(i32);

impl Frozen {
    fn signal(pid: i32, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn new(pid: i32) -> Self {
        Self::signal(pid, "-STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        Self::signal(self.0, "-CONT");
    }
}

/// Reads of `ids`, each on a task of its own, that are still waiting 300 ms later (sent on a
/// frozen session).
async fn reads_stuck_on(
    model: &PgReadModel,
    ids: &[OrderId],
) -> Vec<tokio::task::JoinHandle<Result<Option<OrderView>, ReadError>>> {
    let stuck: Vec<_> = ids
        .iter()
        .map(|&id| {
            let model = model.clone();
            tokio::spawn(async move { model.get(id, &Scope::All).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stuck.iter().all(|read| !read.is_finished()));
    stuck
}

/// Reads each of `ids`, every answer within `within` (none sent on the frozen session), and
/// checks that two shared sessions are open now.
async fn answered_on_a_second_session(
    store: &PgEventStore,
    model: &PgReadModel,
    ids: &[OrderId],
    within: Duration,
) {
    for id in ids {
        let found = tokio::time::timeout(within, model.get(*id, &Scope::All))
            .await
            .expect("a read waited behind the frozen session")
            .unwrap();
        assert_eq!(found.unwrap().id, *id);
    }
    assert_eq!(shared_backends(store).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_session_holds_only_the_reads_sent_on_it() {
    let db = TestDb::create().await;
    let (store, ids, model, first) = one_session_open(&db, 2, 2).await;

    let frozen = Frozen::new(first);
    // Two reads fill the frozen session's depth and wait on it.
    let stuck = reads_stuck_on(&model, &ids[..2]).await;

    // The next reads go to a second session and are answered while the first stays frozen.
    answered_on_a_second_session(&store, &model, &ids, Duration::from_secs(5)).await;

    // Thawed, the frozen session answers what was sent on it: nothing lost, nothing mixed up.
    drop(frozen);
    for (k, read) in stuck.into_iter().enumerate() {
        let found = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the thawed session answers")
            .unwrap()
            .unwrap();
        assert_eq!(found.unwrap().id, ids[k]);
    }
}

/// Reads stuck on a frozen session whose callers give up (an HTTP deadline drops them) still
/// count against that session until their answer arrives: new reads go to another session at
/// once. Before, a read counted only while its caller waited, so the frozen session looked
/// idle again and took the next reads, which hung too, window after window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_abandoned_on_a_frozen_session_still_count_against_it() {
    let db = TestDb::create().await;
    let (store, ids, model, first) = one_session_open(&db, 2, 2).await;

    let frozen = Frozen::new(first);
    let stuck = reads_stuck_on(&model, &ids[..2]).await;
    for read in &stuck {
        read.abort(); // the callers stop waiting
    }
    for read in stuck {
        assert!(read.await.unwrap_err().is_cancelled());
    }

    answered_on_a_second_session(&store, &model, &ids, Duration::from_secs(2)).await;
    drop(frozen);
}

/// A session that does not answer within the answer deadline (statement timeout plus acquire
/// timeout) is retired: the read fails as unavailable, and the session is never handed out
/// again; later reads are answered on a new one. Before, nothing bounded a read on the client
/// side: it waited for as long as the peer stayed silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_silent_past_the_answer_deadline_is_retired() {
    let db = TestDb::create().await;
    let (store, ids) = projected(&db, 3).await;
    let mut settings = PgSettings::for_url(db.url());
    settings.read_sessions = 1;
    settings.read_pipeline_depth = 16;
    settings.acquire_timeout = Duration::from_millis(500);
    settings.statement_timeout = Duration::from_millis(500);
    let model = PgReadModel::open(&settings).await.unwrap();
    model.get(ids[0], &Scope::All).await.unwrap();
    let first = shared_backends(&store).await;
    assert_eq!(first.len(), 1);

    let frozen = Frozen::new(first[0]);
    let started = tokio::time::Instant::now();
    let silent = tokio::time::timeout(Duration::from_secs(5), model.get(ids[1], &Scope::All))
        .await
        .expect("bounded by the answer deadline");
    assert!(
        matches!(silent, Err(ReadError::Store(StoreError::Unavailable(_)))),
        "{silent:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // the next read opens a new session (the pool has room: the retired one left it)
    let found = tokio::time::timeout(Duration::from_secs(5), model.get(ids[2], &Scope::All))
        .await
        .expect("answered on a new session")
        .unwrap();
    assert_eq!(found.unwrap().id, ids[2]);
    drop(frozen);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = shared_backends(&store).await;
        if now.len() == 1 && now[0] != first[0] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retired session was not closed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The projector's writes to the read table have a client-side deadline too: with the read
/// database's path frozen mid-transaction (nothing forwarded, nothing closed), applying a batch
/// fails as unavailable at the answer deadline instead of waiting for as long as the freeze
/// lasts, and once thawed the next batch is applied on a fresh session (the stuck one, which
/// may hold the checkpoint's lock, is never reused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_to_a_silent_read_database_fails_at_the_answer_deadline() {
    use order_store::testing::OutageProxy;
    let db = TestDb::create().await;
    let (store, _) = projected(&db, 0).await;
    let prices: FixedSource = "USD=50000".parse().unwrap();
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(prices)));
    for _ in 0..4 {
        writer
            .place(order_domain::testing::order_for("sessions", "10"))
            .await
            .unwrap();
    }
    let log = store.read_after(Position::ZERO, 10).await.unwrap();
    let proxy = OutageProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut settings = PgSettings::for_url(&proxy.url_for(db.url()));
    settings.statement_timeout = Duration::from_millis(500);
    settings.acquire_timeout = Duration::from_millis(500);
    let model = PgReadModel::open(&settings).await.unwrap();
    model.apply(&log[..2]).await.unwrap();

    proxy.freeze();
    let started = tokio::time::Instant::now();
    let stuck = tokio::time::timeout(Duration::from_secs(10), model.apply(&log[2..3]))
        .await
        .expect("bounded by the answer deadline");
    assert!(
        matches!(stuck, Err(StoreError::Unavailable(_))),
        "{stuck:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    proxy.thaw();
    proxy.cut(); // the frozen sessions die; new ones open
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while model.apply(&log[2..]).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(model.checkpoint().await.unwrap(), Position(4));
}
