//! The PostgreSQL read table, through tokio-postgres and deadpool.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use order_domain::{BtcRate, Currency, FiatAmount, OrderId, Satoshis};
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::consistency::AppliedWatch;
use crate::error::{ReadError, StoreError};
use crate::log::{EventLog, LoggedEvent, Position, UnreadableLogged};
use crate::postgres::read::projection::{
    read_pool, read_sessions_pool, PgProjection, Plans, Projection, Transaction,
};
use crate::postgres::read::read_sessions::SharedSessions;
use crate::postgres::{db_error, PgSettings};
use crate::read_model::{ReadModel, ReadModelWriter};
use crate::view::{OrderView, Page, PageRequest, Scope};

/// The `application_name` of the sessions reads share: they can be told apart in
/// `pg_stat_activity` (tests find them by it: `order_store::testing::SHARED_READS`).
pub const SHARED_READS: &str = "buy-orders-shared-reads";
/// The checkpoint row of this table in `projector_checkpoint`.
const CHECKPOINT: &str = "buy_order_view";
/// The live table.
const TABLE: &str = "buy_order_view";
/// The first page: a backward scan of the primary key.
const FIRST_PAGE: &str = "SELECT id, created_at, currency, currency_amount, btc_rate, btc_amount \
     FROM buy_order_view ORDER BY position DESC LIMIT $1";
/// A page after an order, in one round trip: the reference's position is a scalar subquery,
/// which PostgreSQL runs once as an InitPlan and passes to the range scan as its index bound
/// (a *joined* subquery would instead plan as a full index walk with a Join Filter).
///
/// The same statement, so the same snapshot, says whether the reference exists: a row of
/// NULLs ([`UNKNOWN_REFERENCE`]) follows the page when it does not. Asked in a second
/// statement, an order projected in between turned "no such reference" into an empty last
/// page, and the client stopped paging.
const PAGE_AFTER: &str = "(SELECT id, created_at, currency, currency_amount, btc_rate, btc_amount \
     FROM buy_order_view \
     WHERE position < (SELECT position FROM buy_order_view WHERE id = $1) \
     ORDER BY position DESC LIMIT $2) \
     UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL \
     WHERE NOT EXISTS (SELECT 1 FROM buy_order_view WHERE id = $1)";
/// One client's first page: a forward scan of the (client_id, -position) index, the only index
/// that gives this order (see migration 2002), so the plan cannot fall back to walking the
/// primary key with a filter, whatever the client's share of the table.
const CLIENT_FIRST_PAGE: &str = "SELECT id, created_at, currency, currency_amount, btc_rate, \
     btc_amount FROM buy_order_view WHERE client_id = $1 ORDER BY -position LIMIT $2";
/// One client's page after one of its orders: the same scan from the reference, whose position
/// is an InitPlan bound. A reference to another client's order finds no position, so the page is
/// empty and the row of NULLs after it says the reference is unknown (in the page's snapshot, as
/// [`PAGE_AFTER`]).
const CLIENT_PAGE_AFTER: &str = "(SELECT id, created_at, currency, currency_amount, btc_rate, \
     btc_amount FROM buy_order_view \
     WHERE client_id = $1 \
       AND -position > -(SELECT position FROM buy_order_view WHERE id = $2 AND client_id = $1) \
     ORDER BY -position LIMIT $3) \
     UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL \
     WHERE NOT EXISTS (SELECT 1 FROM buy_order_view WHERE id = $2 AND client_id = $1)";
/// One order.
const ONE: &str = "SELECT id, created_at, currency, currency_amount, btc_rate, btc_amount \
     FROM buy_order_view WHERE id = $1";
/// One order of one client's.
const CLIENT_ONE: &str = "SELECT id, created_at, currency, currency_amount, btc_rate, \
     btc_amount FROM buy_order_view WHERE id = $1 AND client_id = $2";

/// `buy_order_view` and its checkpoint. Reads (pages, single orders) are pipelined on a few
/// shared sessions (`DB_READ_SESSIONS`, [`PgSettings::read_sessions`]); writes and tools use a pool.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use order_domain::ClientId;
/// use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
/// use order_store::{Follower, PageRequest, ReadModel, Scope};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = PgSettings::from_env()?;
/// let log = Arc::new(PgEventStore::connect(&settings).await?);
/// let model = Arc::new(PgReadModel::open(&settings).await?);
/// let follower = Follower::new(log, model.clone(), 500);
/// tokio::spawn(async move { follower.run(std::future::pending()).await });
///
/// // A client's newest orders, then the page after them.
/// let mine = Scope::Client(ClientId::parse("shop-1")?);
/// let first = model.page(PageRequest::default(), &mine).await?;
/// let next = PageRequest { after: first.last_reference, ..PageRequest::default() };
/// let second = model.page(next, &mine).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgReadModel {
    /// The sessions that pages, single orders and readiness checks are read on, pipelined
    /// (`DB_READ_SESSIONS`); the projection's pool serves the rest (the projector's writes,
    /// rebuilds, tools).
    shared: Arc<SharedSessions>,
    /// The table as a projection: its checkpoint, parking and rebuild.
    writer: PgProjection<OrderViewProjection>,
    /// The checkpoint as last read, shared by every read waiting on a consistency token; one
    /// poller per model reads it while anyone waits ([`PgReadModel::with_checkpoint_poll`]).
    applied: Arc<AppliedWatch>,
    /// How often the poller reads the checkpoint while reads wait.
    poll: std::time::Duration,
    /// Started by the first wait.
    poller: Arc<std::sync::OnceLock<()>>,
}

/// Reads the checkpoint into `applied` every `poll` while reads wait on it, until the model is
/// dropped. A failed read is logged (once per failure streak) and tried again: waiting reads
/// time out meanwhile, as they should.
async fn poll_checkpoint(
    applied: std::sync::Weak<AppliedWatch>,
    writer: PgProjection<OrderViewProjection>,
    poll: std::time::Duration,
) {
    let mut failing = false;
    loop {
        let Some(watch) = applied.upgrade() else {
            return;
        };
        // Woken by a new waiter; looks again now and then, to notice the model is gone.
        let wanted = tokio::time::timeout(std::time::Duration::from_secs(1), watch.wanted());
        if wanted.await.is_err() {
            continue;
        }
        match ReadModelWriter::checkpoint(&writer).await {
            Ok(position) => {
                failing = false;
                watch.advance(position);
            }
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(%err, "the read table's checkpoint cannot be read; reads waiting on a consistency token will time out");
            }
            Err(_) => {}
        }
        drop(watch);
        tokio::time::sleep(poll).await;
    }
}

impl std::fmt::Debug for PgReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReadModel")
            .field("projection", &self.writer)
            .finish_non_exhaustive()
    }
}

impl PgReadModel {
    /// Opens a pool on `READ_DATABASE_URL` (or `DATABASE_URL`), in `PG_SCHEMA`, and applies the
    /// read migrations there.
    pub async fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let pool = read_pool(settings, Plans::Generic).await?;
        let writer = PgProjection::on_pool(pool, settings, OrderViewProjection).await?;
        let sessions = settings.read_sessions as usize;
        let shared = Arc::new(SharedSessions::new(
            read_sessions_pool(
                settings,
                Plans::Generic,
                sessions,
                &[("application_name", SHARED_READS)],
            )?,
            sessions,
            settings.read_pipeline_depth as usize,
            settings.answer_deadline(),
        ));
        Ok(PgReadModel {
            shared,
            writer,
            applied: Arc::new(AppliedWatch::new()),
            poll: Self::CHECKPOINT_POLL,
            poller: Arc::default(),
        })
    }

    /// How often the checkpoint is read while reads wait for a consistency token, by default.
    pub const CHECKPOINT_POLL: std::time::Duration = std::time::Duration::from_millis(5);

    /// Sets how often the checkpoint is read while reads wait on a consistency token: one query
    /// per interval for the whole process however many wait, none while nobody waits. A
    /// notification cannot replace it: a hot standby (where a read model may live) delivers
    /// none, and what matters is what this server has applied, not the primary.
    pub fn with_checkpoint_poll(mut self, poll: std::time::Duration) -> Self {
        self.poll = poll.max(std::time::Duration::from_millis(1));
        self
    }

    /// Starts the one poller of this model's checkpoint, unless running.
    fn start_poller(&self) {
        self.poller.get_or_init(|| {
            let applied = Arc::downgrade(&self.applied);
            let (writer, poll) = (self.writer.clone(), self.poll);
            tokio::spawn(poll_checkpoint(applied, writer, poll));
        });
    }

    /// The table as a projection ([`PgProjection`]): its status, parked events and rebuild.
    pub fn projection(&self) -> &PgProjection<OrderViewProjection> {
        &self.writer
    }

    /// Rebuilds the table from position 0 into a fresh table while the current one keeps
    /// serving, then swaps it in atomically and moves the checkpoint to what it covers; a live
    /// projector continues from there. `progress(done, head)` is called after each step. One
    /// rebuild at a time ([`PgProjection::rebuild`]): two overlapping ones would lose rows.
    pub async fn rebuild(
        &self,
        log: &dyn EventLog,
        batch: usize,
        progress: &(dyn Fn(Position, Position) + Sync),
    ) -> Result<Position, StoreError> {
        self.writer.rebuild(log, batch, progress).await
    }

    /// The query plan of a page after the order `after`, for tests of the index use (feature
    /// `test-support`).
    #[cfg(feature = "test-support")]
    pub async fn explain_page_after(
        &self,
        after: OrderId,
        size: i64,
        scope: &Scope,
    ) -> Result<String, StoreError> {
        let client = self.writer.session().await?;
        let rows = match scope {
            Scope::All => {
                client
                    .query(&format!("EXPLAIN {PAGE_AFTER}"), &[after.as_uuid(), &size])
                    .await
            }
            Scope::Client(owner) => {
                client
                    .query(
                        &format!("EXPLAIN {CLIENT_PAGE_AFTER}"),
                        &[&owner.as_str(), after.as_uuid(), &size],
                    )
                    .await
            }
        }
        .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// How this table's sessions plan prepared statements (`plan_cache_mode`): each page query
    /// is planned once per session, `force_generic_plan` (see `Plans::Generic`). For tests
    /// (feature `test-support`).
    #[cfg(feature = "test-support")]
    pub async fn plan_cache_mode(&self) -> Result<String, StoreError> {
        let client = self.writer.session().await?;
        let row = client
            .query_one("SHOW plan_cache_mode", &[])
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    /// The position of an order in the table, if `scope` sees it.
    pub async fn position_of(
        &self,
        id: OrderId,
        scope: &Scope,
    ) -> Result<Option<Position>, StoreError> {
        let row = self
            .shared
            .read(move |client| async move {
                let statement = client
                    .prepare_cached("SELECT position, client_id FROM buy_order_view WHERE id = $1")
                    .await
                    .map_err(db_error)?;
                client
                    .query_opt(&statement, &[id.as_uuid()])
                    .await
                    .map_err(db_error)
            })
            .await?;
        Ok(row.and_then(|row| {
            let owner: Option<String> = row.get(1);
            let visible = scope_owner(scope).is_none_or(|client| owner.as_deref() == Some(client));
            visible.then(|| Position(row.get::<_, i64>(0) as u64))
        }))
    }

    /// Gives rows projected before the read table had a `client_id` (migration 2002) their
    /// client, from the event log, in batches; until then only admins see them. Returns how
    /// many rows it filled. Safe to run at any time, from any number of processes. An
    /// operator's tool (feature `ops`).
    #[cfg(feature = "ops")]
    pub async fn backfill_clients(
        &self,
        log: &dyn EventLog,
        batch: usize,
    ) -> Result<u64, StoreError> {
        let client = self.writer.session().await?;
        let bounds = client
            .query_one(
                "SELECT min(position), max(position) FROM buy_order_view WHERE client_id IS NULL",
                &[],
            )
            .await
            .map_err(db_error)?;
        let (Some(first), Some(last)) = (
            bounds.get::<_, Option<i64>>(0),
            bounds.get::<_, Option<i64>>(1),
        ) else {
            return Ok(0);
        };
        let mut after = Position(first.saturating_sub(1).max(0) as u64);
        let mut filled = 0;
        while after.0 < last as u64 {
            let events = log.read_after(after, batch).await?;
            let Some(reached) = events.last().map(|e| e.position) else {
                break;
            };
            let (positions, clients): (Vec<i64>, Vec<&str>) = events
                .iter()
                .filter_map(|logged| {
                    let placed = logged.event.as_placed()?;
                    Some((logged.position.0 as i64, placed.client_id.as_str()))
                })
                .unzip();
            filled += client
                .execute(
                    "UPDATE buy_order_view v SET client_id = u.client \
                     FROM UNNEST($1::bigint[], $2::text[]) AS u(position, client) \
                     WHERE v.position = u.position AND v.client_id IS NULL",
                    &[&positions, &clients],
                )
                .await
                .map_err(db_error)?;
            after = reached;
        }
        Ok(filled)
    }
}

/// COPYs the rows of `events` into the table being rebuilt (unqualified: the rebuild's scratch
/// schema): empty when the bulk phase starts and filled in position order, so no row can
/// already be there.
async fn copy_rows(tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let sink = tx
        .copy_in(&format!(
            "COPY {TABLE} (position, id, created_at, currency, currency_amount, \
             btc_rate, btc_amount, client_id) FROM STDIN BINARY"
        ))
        .await
        .map_err(db_error)?;
    let types = [
        Type::INT8,
        Type::UUID,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::NUMERIC,
        Type::TEXT,
    ];
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    for logged in events {
        let Some(placed) = logged.event.as_placed() else {
            continue; // not an order: no row
        };
        let position = crate::postgres::position_i64(logged.position)?;
        let row: [&(dyn ToSql + Sync); 8] = [
            &position,
            placed.order_id.as_uuid(),
            &placed.placed_at,
            &placed.currency.code(),
            &placed.amount.to_decimal(),
            &placed.rate.as_decimal(),
            &placed.satoshis.to_btc_decimal(),
            &placed.client_id.as_str(),
        ];
        writer.as_mut().write(&row).await.map_err(db_error)?;
    }
    writer.finish().await.map_err(db_error)?;
    Ok(())
}

/// The client a scope restricts reads to, if any (the first parameter of the client queries).
fn scope_owner(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::All => None,
        Scope::Client(owner) => Some(owner.as_str()),
    }
}

/// Inserts the rows of `events` into `table` (the live table or the one being rebuilt), in one
/// statement; events already there change nothing.
async fn insert_rows<'e>(
    client: &impl GenericClient,
    table: &str,
    events: impl IntoIterator<Item = &'e LoggedEvent>,
) -> Result<(), StoreError> {
    let (mut positions, mut ids, mut times, mut currencies) = (vec![], vec![], vec![], vec![]);
    let (mut amounts, mut rates, mut btcs, mut clients) = (vec![], vec![], vec![], vec![]);
    for logged in events {
        let Some(placed) = logged.event.as_placed() else {
            continue; // not an order: no row
        };
        clients.push(placed.client_id.as_str());
        positions.push(logged.position.0 as i64);
        ids.push(*placed.order_id.as_uuid());
        times.push(placed.placed_at);
        currencies.push(placed.currency.code());
        amounts.push(placed.amount.to_decimal());
        rates.push(placed.rate.as_decimal());
        btcs.push(placed.satoshis.to_btc_decimal());
    }
    client
        .execute(
        &format!(
            "INSERT INTO {table} (position, id, created_at, currency, currency_amount, btc_rate, btc_amount, client_id) \
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[], \
                                  $5::numeric[], $6::numeric[], $7::numeric[], $8::text[]) \
             ON CONFLICT DO NOTHING"
        ),
        &[&positions, &ids, &times, &currencies, &amounts, &rates, &btcs, &clients],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

fn to_view(row: &Row) -> Result<OrderView, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::corrupt(format!("{what}: {e}"));
    let id: Uuid = row.try_get("id").map_err(|e| corrupt("id", &e))?;
    let created_at: DateTime<Utc> = row
        .try_get("created_at")
        .map_err(|e| corrupt("created_at", &e))?;
    let currency: String = row
        .try_get("currency")
        .map_err(|e| corrupt("currency", &e))?;
    let amount: Decimal = row
        .try_get("currency_amount")
        .map_err(|e| corrupt("currency_amount", &e))?;
    let rate: Decimal = row
        .try_get("btc_rate")
        .map_err(|e| corrupt("btc_rate", &e))?;
    let btc: Decimal = row
        .try_get("btc_amount")
        .map_err(|e| corrupt("btc_amount", &e))?;
    Ok(OrderView {
        id: OrderId::from_uuid(id),
        created_at,
        currency: currency
            .parse::<Currency>()
            .map_err(|e| corrupt("currency", &e))?,
        currency_amount: FiatAmount::from_decimal(amount)
            .map_err(|e| corrupt("currency_amount", &e))?,
        btc_rate: BtcRate::new(rate).map_err(|e| corrupt("btc_rate", &e))?,
        btc_amount: Satoshis::from_btc_decimal(btc).map_err(|e| corrupt("btc_amount", &e))?,
    })
}

/// `buy_order_view` as a [`Projection`]: a row per order; its DDL is the read migrations'
/// (a rebuild copies it with `LIKE`), its bulk load is a binary COPY.
pub struct OrderViewProjection;

#[async_trait]
impl Projection for OrderViewProjection {
    fn name(&self) -> &str {
        CHECKPOINT
    }

    fn tables(&self) -> Vec<String> {
        vec![TABLE.to_owned()]
    }

    async fn create(&self, tx: &Transaction<'_>, live: &str) -> Result<(), StoreError> {
        // In the store's schema the migrations made it; in a rebuild's scratch schema this
        // copies it, indexes and all, under the same names.
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (LIKE {live}.{TABLE} INCLUDING ALL)"
        ))
        .await
        .map_err(db_error)
    }

    async fn apply(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
        insert_rows(tx, TABLE, events).await
    }

    async fn load(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
        copy_rows(tx, events).await
    }
}

#[async_trait]
impl ReadModelWriter for PgReadModel {
    async fn apply(&self, events: &[LoggedEvent]) -> Result<(), StoreError> {
        self.writer.apply(events).await?;
        // Applied in this process: reads waiting here need not wait for the poller.
        if let Some(last) = events.last() {
            self.applied.advance(last.position);
        }
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Position, StoreError> {
        self.writer.checkpoint().await
    }

    async fn park(&self, unreadable: &[UnreadableLogged]) -> Result<(), StoreError> {
        self.writer.park(unreadable).await
    }

    async fn parked(&self) -> Result<Vec<UnreadableLogged>, StoreError> {
        self.writer.parked().await
    }
}

#[async_trait]
impl ReadModel for PgReadModel {
    async fn page(&self, request: PageRequest, scope: &Scope) -> Result<Page, ReadError> {
        let size = request.size.get() as i64;
        let owner = scope_owner(scope).map(str::to_owned);
        let after = request.after.map(|id| *id.as_uuid());
        let sql = match (&owner, after) {
            (None, None) => FIRST_PAGE,
            (None, Some(_)) => PAGE_AFTER,
            (Some(_), None) => CLIENT_FIRST_PAGE,
            (Some(_), Some(_)) => CLIENT_PAGE_AFTER,
        };
        let rows = self
            .shared
            .read(move |client| async move {
                // The client's queries take it first; then the reference, if any; then the size.
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(3);
                if let Some(owner) = &owner {
                    params.push(owner);
                }
                if let Some(after) = &after {
                    params.push(after);
                }
                params.push(&size);
                let statement = client.prepare_cached(sql).await.map_err(db_error)?;
                client.query(&statement, &params).await.map_err(db_error)
            })
            .await?;
        // A page after a reference ends with a row of NULLs when this scope sees no such order.
        if let (Some(id), Some(last)) = (request.after, rows.last()) {
            let id_of_last: Option<Uuid> = last
                .try_get(0)
                .map_err(|e| StoreError::corrupt(format!("id: {e}")))?;
            if id_of_last.is_none() {
                return Err(ReadError::UnknownReference(id));
            }
        }
        let rows = rows.iter().map(to_view).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::new(rows))
    }

    async fn get(&self, id: OrderId, scope: &Scope) -> Result<Option<OrderView>, ReadError> {
        let owner = scope_owner(scope).map(str::to_owned);
        let sql = match owner {
            None => ONE,
            Some(_) => CLIENT_ONE,
        };
        let row = self
            .shared
            .read(move |client| async move {
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![id.as_uuid()];
                if let Some(owner) = &owner {
                    params.push(owner);
                }
                let statement = client.prepare_cached(sql).await.map_err(db_error)?;
                client
                    .query_opt(&statement, &params)
                    .await
                    .map_err(db_error)
            })
            .await?;
        Ok(row.as_ref().map(to_view).transpose()?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.shared
            .read(|client| async move {
                client.simple_query("SELECT 1").await.map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn wait_applied(
        &self,
        position: Position,
        within: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.start_poller();
        Ok(self.applied.wait(position, within).await)
    }
}
