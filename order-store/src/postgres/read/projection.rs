//! Checkpointed projections on PostgreSQL: read models of your own, kept from the log with the
//! guarantees `buy_order_view` has (it is one of them).
//!
//! The guarantees, and an example, are on [`Projection`] (this module is private: its items
//! are re-exported by `order_store::postgres`).

use std::sync::Arc;

use async_trait::async_trait;
pub use deadpool_postgres::Transaction;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::error::StoreError;
use crate::log::{EventLog, LogRead, LoggedEvent, Position, UnreadableLogged};
use crate::postgres::{db_error, migrate_read, position_i64, PgSettings};
use crate::read_model::ReadModelWriter;

/// Events read per step of a rebuild's bulk phase, whatever the live projector's batch.
const REBUILD_STEP: usize = 20_000;
/// The advisory lock a rebuild holds (session-level, on the read database): "bo_rebuild" for
/// `buy_order_view` in `public`; other projections and schemas mix their names in.
const REBUILD_LOCK: i64 = 0x626f_5f72_6562_7569;
/// The longest projection name: its scratch schema `<schema>_rb_<name>` must fit PostgreSQL's
/// 63-byte identifiers (a schema name is at most 40).
const MAX_NAME: usize = 19;

/// A read model of your own, kept from the log by [`PgProjection`].
///
/// You write [`Projection`]: your tables, and "apply these events to them inside this
/// transaction". [`PgProjection`] does the rest:
///
/// - the checkpoint (a row of `projector_checkpoint` named after the projection) moves in the
///   same transaction as your rows, under its row lock, so a batch is applied whole or not at
///   all, and one projector applies at a time;
/// - events at or below the checkpoint never reach you: redelivery and replay change nothing;
/// - it is a [`ReadModelWriter`], so [`Follower`](crate::Follower) keeps it current from the
///   log (catching up after any gap), exactly as the services' projector keeps `buy_order_view`;
/// - events no reader can read are parked in `parked_events` under its name, the checkpoint
///   moved past them;
/// - [`PgProjection::rebuild`] replays the log from position 0 into fresh tables in a scratch
///   schema while the live ones keep serving, then swaps them in atomically, with progress; one
///   rebuild of a projection at a time.
///
/// Your SQL names your tables unqualified: the session's `search_path` places them in the
/// store's schema, or in the scratch schema during a rebuild.
///
/// # Example
///
/// BTC sold per currency, kept current by a [`Follower`](crate::Follower) and read back:
///
/// ```no_run
/// use std::sync::Arc;
///
/// use order_store::postgres::{PgProjection, PgSettings, Projection, Transaction};
/// use order_store::{async_trait, Follower, LoggedEvent, StoreError};
///
/// struct SoldPerCurrency;
///
/// #[async_trait]
/// impl Projection for SoldPerCurrency {
///     fn name(&self) -> &str {
///         "sold_per_currency"
///     }
///     fn tables(&self) -> Vec<String> {
///         vec!["sold_per_currency".into()]
///     }
///     async fn create(&self, tx: &Transaction<'_>, _live: &str) -> Result<(), StoreError> {
///         tx.batch_execute(
///             "CREATE TABLE IF NOT EXISTS sold_per_currency \
///              (currency text PRIMARY KEY, satoshis bigint NOT NULL)",
///         )
///         .await
///         .map_err(StoreError::from_database)
///     }
///     async fn apply(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
///         for placed in events.iter().filter_map(|e| e.event.as_placed()) {
///             let sats = i64::try_from(placed.satoshis.count())
///                 .map_err(|e| StoreError::corrupt(e.to_string()))?;
///             tx.execute(
///                 "INSERT INTO sold_per_currency VALUES ($1, $2) ON CONFLICT (currency) \
///                  DO UPDATE SET satoshis = sold_per_currency.satoshis + excluded.satoshis",
///                 &[&placed.currency.code(), &sats],
///             )
///             .await
///             .map_err(StoreError::from_database)?;
///         }
///         Ok(())
///     }
/// }
///
/// # async fn run() -> Result<(), StoreError> {
/// let settings = PgSettings::from_env()?;
/// let log = Arc::new(order_store::postgres::PgEventStore::connect(&settings).await?);
/// let projection = Arc::new(PgProjection::open(&settings, SoldPerCurrency).await?);
///
/// // Kept current in a task of its own, until the application stops.
/// let follower = Follower::new(log.clone(), projection.clone(), 500);
/// tokio::spawn(async move { follower.run(std::future::pending()).await });
///
/// // Read back through a session in the store's schema.
/// let session = projection.session().await?;
/// let usd: Option<i64> = session
///     .query_opt("SELECT satoshis FROM sold_per_currency WHERE currency = 'USD'", &[])
///     .await
///     .map_err(StoreError::from_database)?
///     .map(|row| row.get(0));
///
/// // A new shape of the table: rebuilt from the log while the old one serves, then swapped.
/// projection.rebuild(log.as_ref(), 500, &|done, head| println!("{done}/{head}")).await?;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Its name: 1 to 19 of `a-z 0-9 _`, starting with a letter. Keys its checkpoint and its
    /// parked events; what the services' projector tool calls it. Never rename
    /// a projection that has run (it would start again from position 0).
    fn name(&self) -> &str;

    /// Its tables, by unqualified name: created together, rebuilt together, swapped in
    /// together. Nothing outside the projection may depend on them (a view, a foreign key):
    /// the swap drops the old ones.
    fn tables(&self) -> Vec<String>;

    /// Creates its tables if they are missing (`CREATE TABLE IF NOT EXISTS`, indexes too), by
    /// unqualified names: in the store's schema when it opens, in a scratch schema when it is
    /// rebuilt. `live` names the store's schema, for `LIKE live.table INCLUDING ALL`.
    async fn create(&self, tx: &Transaction<'_>, live: &str) -> Result<(), StoreError>;

    /// Applies `events` — after the checkpoint, in position order, each once — to its tables
    /// inside `tx`; the checkpoint moves in the same transaction. Events it has no use for it
    /// skips.
    async fn apply(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError>;

    /// The rebuild's bulk phase, into empty tables: `apply` unless a faster way is given (say,
    /// `COPY`).
    async fn load(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
        self.apply(tx, events).await
    }
}

/// Where a projection stands: its checkpoint, its lag behind the log, what it parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The last position applied (or parked).
    pub checkpoint: Position,
    /// Positions behind the log's head.
    pub lag: u64,
    /// Events parked, unreadable.
    pub parked: u64,
}

/// A projection the projector can run, rebuild and list, whatever its type.
#[async_trait]
pub trait ManagedProjection: ReadModelWriter {
    /// Its name.
    fn name(&self) -> &str;

    /// Rebuilds it from the log ([`PgProjection::rebuild`]).
    async fn rebuild(
        &self,
        log: &dyn EventLog,
        batch: usize,
        progress: &(dyn Fn(Position, Position) + Sync),
    ) -> Result<Position, StoreError>;

    /// Where it stands against `log`.
    async fn status(&self, log: &dyn EventLog) -> Result<ProjectionStatus, StoreError>;
}

/// A [`Projection`] on PostgreSQL with its checkpoint, parking and rebuild; [`Projection`]'s
/// page has the example.
pub struct PgProjection<P> {
    projection: Arc<P>,
    pool: Pool,
    /// The store's schema (a parsed `PgSchema`: safe in SQL unquoted).
    live: String,
    rebuild_lock: i64,
    /// How long applying a batch, parking or reading the checkpoint waits for the database
    /// ([`PgSettings::answer_deadline`]).
    answer_within: std::time::Duration,
}

impl<P: Projection> std::fmt::Debug for PgProjection<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgProjection")
            .field("name", &self.projection.name())
            .field("schema", &self.live)
            .field("answer_within", &self.answer_within)
            .finish_non_exhaustive()
    }
}

impl<P> Clone for PgProjection<P> {
    fn clone(&self) -> Self {
        PgProjection {
            projection: self.projection.clone(),
            pool: self.pool.clone(),
            live: self.live.clone(),
            rebuild_lock: self.rebuild_lock,
            answer_within: self.answer_within,
        }
    }
}

/// How a read pool's sessions plan prepared statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plans {
    /// PostgreSQL's own choice (`plan_cache_mode = auto`): what an application's projection
    /// gets, since its queries are not ours to judge.
    Auto,
    /// `plan_cache_mode = force_generic_plan`: planned once per session. For the read table's
    /// queries, each of which has one right plan whatever its parameters (an index scan). With
    /// `auto`, `LIMIT $n` made the generic plan look 10,000 times dearer than a custom one, so
    /// PostgreSQL planned every page afresh: half its CPU per page (bench/RESULTS.md).
    Generic,
}

/// Opens the read side's pool on `READ_DATABASE_URL` (or `DATABASE_URL`), in `PG_SCHEMA`, and
/// applies the read migrations.
pub(crate) async fn read_pool(settings: &PgSettings, plans: Plans) -> Result<Pool, StoreError> {
    let pool = read_sessions_pool(settings, plans, settings.pool_size as usize, &[])?;
    // One session now, before the migrations (which connect through sqlx): a URL whose TLS
    // this client cannot satisfy fails at start-up, with this client's own reason.
    drop(pool.get().await.map_err(crate::postgres::db_error)?);
    migrate_read(settings).await?;
    Ok(pool)
}

/// A pool of up to `size` sessions on the read database, opened as they are needed, with
/// `extra` session settings (no migrations: [`read_pool`] applies them).
pub(crate) fn read_sessions_pool(
    settings: &PgSettings,
    plans: Plans,
    size: usize,
    extra: &[(&'static str, &str)],
) -> Result<Pool, StoreError> {
    let url = settings.read_url().ok_or_else(|| {
        StoreError::misconfigured("neither READ_DATABASE_URL nor DATABASE_URL is set")
    })?;
    let planning: &[(&'static str, &str)] = match plans {
        Plans::Auto => &[],
        Plans::Generic => &[("plan_cache_mode", "force_generic_plan")],
    };
    let (config, tls) = settings.tokio_postgres_config(url, &[planning, extra].concat())?;
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.acquire_timeout))
        .recycle_timeout(Some(settings.acquire_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(db_error)
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let mut bytes = name.bytes();
    let first = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first && rest && name.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(StoreError::corrupt(format!(
            "projection name {name:?}: 1 to {MAX_NAME} of a-z, 0-9 and _, starting with a letter"
        )))
    }
}

impl<P: Projection> PgProjection<P> {
    /// The answer of a call on `client` that was waited for at most the answer deadline: past
    /// it the session is taken out of the pool for good (closed, never handed out again: it
    /// may hold the checkpoint's lock in an open transaction) and the call fails as
    /// unavailable, so a silent read database cannot stall the projector.
    fn settle<T>(
        &self,
        answer: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
        client: deadpool_postgres::Object,
    ) -> Result<T, StoreError> {
        match answer {
            Ok(answer) => answer,
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                metrics::counter!("store_statements_unanswered_total").increment(1);
                Err(StoreError::unavailable(format!(
                    "no answer from the read database within {} ms",
                    self.answer_within.as_millis()
                )))
            }
        }
    }

    /// Applies `events` on `client`, in one transaction with the checkpoint.
    async fn apply_on(
        &self,
        client: &mut deadpool_postgres::Object,
        events: &[LoggedEvent],
    ) -> Result<(), StoreError> {
        let name = self.projection.name();
        let by_name: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
        let tx = client.transaction().await.map_err(db_error)?;
        // Locks the checkpoint: one projector applies at a time, and what it skips is decided
        // under the lock. The commit need not wait for its WAL flush: rows and checkpoint are
        // lost together in a crash, and applied again from the log (both requests pipelined).
        let (_, checkpoint) = tokio::try_join!(
            tx.batch_execute("SET LOCAL synchronous_commit TO OFF"),
            tx.query_one(
                "SELECT position FROM projector_checkpoint WHERE name = $1 FOR UPDATE",
                &by_name,
            )
        )
        .map_err(db_error)?;
        let checkpoint: i64 = checkpoint.get(0);
        let first_fresh = events.partition_point(|e| (e.position.0 as i64) <= checkpoint);
        let fresh = &events[first_fresh..];
        let Some(last) = fresh.last() else {
            return Ok(()); // all applied already
        };
        self.projection.apply(&tx, fresh).await?;
        tx.execute(
            "UPDATE projector_checkpoint SET position = $2 WHERE name = $1",
            &[&self.projection.name(), &position_i64(last.position)?],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// Parks `unreadable` on `client` and moves the checkpoint to `last`.
    async fn park_on(
        &self,
        client: &mut deadpool_postgres::Object,
        unreadable: &[UnreadableLogged],
        last: Position,
    ) -> Result<(), StoreError> {
        let tx = client.transaction().await.map_err(db_error)?;
        let name = self.projection.name();
        tx.query_one(
            "SELECT position FROM projector_checkpoint WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(db_error)?;
        insert_parked(&tx, &self.live, name, unreadable).await?;
        tx.execute(
            "UPDATE projector_checkpoint SET position = greatest(position, $2) WHERE name = $1",
            &[&name, &position_i64(last)?],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// Opens `projection` on the read database (`READ_DATABASE_URL`, else `DATABASE_URL`, in
    /// `PG_SCHEMA`): migrations, its checkpoint row and its tables, created if missing.
    pub async fn open(settings: &PgSettings, projection: P) -> Result<Self, StoreError> {
        let pool = read_pool(settings, Plans::Auto).await?;
        Self::on_pool(pool, settings, projection).await
    }

    /// A session of this projection's pool, in the store's schema (its `search_path`), with the
    /// session settings and TLS of every other: to read the projection's own tables by their
    /// unqualified names. Give it back (drop it) soon; the pool is shared with the projection.
    pub async fn session(&self) -> Result<crate::postgres::Session, StoreError> {
        self.pool.get().await.map_err(db_error)
    }

    /// `projection` on an open, migrated pool of the read database whose sessions resolve
    /// names in `live`.
    pub(crate) async fn on_pool(
        pool: Pool,
        settings: &PgSettings,
        projection: P,
    ) -> Result<Self, StoreError> {
        let live = settings.schema.as_str();
        let name = projection.name().to_owned();
        check_name(&name)?;
        let base = if name == "buy_order_view" {
            REBUILD_LOCK
        } else {
            REBUILD_LOCK ^ crate::postgres::connection::schema::fnv(&name)
        };
        let this = PgProjection {
            projection: Arc::new(projection),
            pool,
            live: live.to_owned(),
            rebuild_lock: crate::postgres::connection::schema::lock_key(base, live),
            answer_within: settings.answer_deadline(),
        };
        let mut client = this.pool.get().await.map_err(db_error)?;
        // A hot standby replays what the primary's projector created: reading is all it does.
        let standby: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(db_error)?
            .get(0);
        if standby {
            drop(client);
            return Ok(this);
        }
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO projector_checkpoint (name, position) VALUES ($1, 0) \
             ON CONFLICT (name) DO NOTHING",
            &[&name],
        )
        .await
        .map_err(db_error)?;
        // `CREATE … IF NOT EXISTS` of tables that exist says so at NOTICE, on every start.
        tx.batch_execute("SET LOCAL client_min_messages TO warning")
            .await
            .map_err(db_error)?;
        this.projection.create(&tx, live).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(this)
    }

    /// The projection itself.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Rebuilds the projection from position 0 into fresh tables (in a scratch schema,
    /// `<schema>_rb_<name>`) while the live ones keep serving and being projected, then, under
    /// the checkpoint's lock, applies what arrived meanwhile, swaps the fresh tables in (the
    /// old ones dropped, in one transaction: readers see one or the other) and moves the
    /// checkpoint to what they cover. `progress(done, head)` after each step. Unreadable events
    /// are parked; parked rows it could now read are cleared.
    ///
    /// One rebuild of a projection at a time: it holds a session advisory lock for its whole
    /// run, and a second is refused at once, changing nothing.
    ///
    /// A rebuild through a `log` that cannot read an event the live tables have applied (a
    /// handle opened without the upcaster the live projector had) is refused with
    /// [`StoreError::Misconfigured`], changing nothing: it would otherwise park the event and
    /// silently drop its rows. Register upcasters once, on the settings
    /// ([`PgSettings::with_upcaster`]).
    pub async fn rebuild(
        &self,
        log: &dyn EventLog,
        batch: usize,
        progress: &(dyn Fn(Position, Position) + Sync),
    ) -> Result<Position, StoreError> {
        let mut client = self.pool.get().await.map_err(db_error)?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.rebuild_lock])
            .await
            .map_err(db_error)?
            .get(0);
        if !locked {
            return Err(StoreError::unavailable(format!(
                "another `projector rebuild` of {} is running on this read database; wait \
                 for it to finish (nothing was changed)",
                self.projection.name()
            )));
        }
        let rebuilt = self.rebuild_locked(&mut client, log, batch, progress).await;
        if rebuilt.is_err() {
            // Refused or failed: the live tables are untouched; the scratch ones go.
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.scratch()))
                .await;
        }
        // On a broken connection the session, and so the lock, is gone already.
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.rebuild_lock])
            .await;
        rebuilt
    }

    async fn rebuild_locked(
        &self,
        client: &mut deadpool_postgres::Object,
        log: &dyn EventLog,
        batch: usize,
        progress: &(dyn Fn(Position, Position) + Sync),
    ) -> Result<Position, StoreError> {
        let (live, name) = (self.live.as_str(), self.projection.name());
        let scratch = self.scratch();
        let applied = self.applied_live(client).await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {scratch} CASCADE; CREATE SCHEMA {scratch};"
            ))
            .await
            .map_err(db_error)?;
        let in_scratch = format!("SET LOCAL search_path TO {scratch}");
        let tx = client.transaction().await.map_err(db_error)?;
        tx.batch_execute(&in_scratch).await.map_err(db_error)?;
        self.projection.create(&tx, live).await?;
        tx.commit().await.map_err(db_error)?;

        let head = log.head().await?;
        let mut done = Position::ZERO;
        let mut parked: Vec<i64> = Vec::new();
        // Bulk of the work, outside any lock of the live tables: each step in a transaction of
        // its own (no WAL flush waited for: a crash loses the scratch tables, which the next
        // rebuild drops anyway), the next step read from the log while this one is written.
        let mut next = log.read_after_with_unreadable(done, REBUILD_STEP).await?;
        while let Some(last) = next.reached() {
            applied.refuse_unread(name, &next.unreadable)?;
            let step = async {
                let tx = client.transaction().await.map_err(db_error)?;
                tx.batch_execute(&format!(
                    "{in_scratch}; SET LOCAL synchronous_commit TO OFF"
                ))
                .await
                .map_err(db_error)?;
                if !next.events.is_empty() {
                    self.projection.load(&tx, &next.events).await?;
                }
                insert_parked(&tx, live, name, &next.unreadable).await?;
                tx.commit().await.map_err(db_error)
            };
            let (stepped, following) =
                tokio::join!(step, log.read_after_with_unreadable(last, REBUILD_STEP));
            stepped?;
            parked.extend(positions(&next.unreadable)?);
            next = following?;
            done = last;
            progress(done, head.max(done));
        }
        // The swap: under the checkpoint's lock (the live projector waits), add what arrived
        // meanwhile, then put the fresh tables in the old ones' place.
        let tx = client.transaction().await.map_err(db_error)?;
        tx.batch_execute(&in_scratch).await.map_err(db_error)?;
        tx.query_one(
            &format!("SELECT position FROM {live}.projector_checkpoint WHERE name = $1 FOR UPDATE"),
            &[&name],
        )
        .await
        .map_err(db_error)?;
        loop {
            let read: LogRead = log.read_after_with_unreadable(done, batch.max(1)).await?;
            let Some(last) = read.reached() else { break };
            applied.refuse_unread(name, &read.unreadable)?;
            if !read.events.is_empty() {
                self.projection.apply(&tx, &read.events).await?;
            }
            insert_parked(&tx, live, name, &read.unreadable).await?;
            parked.extend(positions(&read.unreadable)?);
            done = last;
        }
        let mut swap = String::new();
        for table in self.projection.tables() {
            swap.push_str(&format!(
                "DROP TABLE IF EXISTS {live}.{table}; ALTER TABLE {scratch}.{table} SET SCHEMA {live};"
            ));
        }
        tx.batch_execute(&swap).await.map_err(db_error)?;
        tx.execute(
            &format!(
                "DELETE FROM {live}.parked_events WHERE projection = $1 AND position <= $2 \
                 AND NOT (position = ANY($3))"
            ),
            &[&name, &position_i64(done)?, &parked],
        )
        .await
        .map_err(db_error)?;
        tx.execute(
            &format!("UPDATE {live}.projector_checkpoint SET position = $2 WHERE name = $1"),
            &[&name, &position_i64(done)?],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {scratch} CASCADE"))
            .await
            .map_err(db_error)?;
        progress(done, done);
        Ok(done)
    }

    /// The scratch schema a rebuild fills.
    fn scratch(&self) -> String {
        format!("{}_rb_{}", self.live, self.projection.name())
    }

    /// What the live tables cover: their checkpoint and the positions they parked.
    async fn applied_live(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<AppliedLive, StoreError> {
        let live = &self.live;
        let row = client
            .query_one(
                &format!(
                    "SELECT c.position, coalesce((SELECT array_agg(p.position) FROM \
                     {live}.parked_events p WHERE p.projection = c.name), '{{}}') \
                     FROM {live}.projector_checkpoint c WHERE c.name = $1"
                ),
                &[&self.projection.name()],
            )
            .await
            .map_err(db_error)?;
        Ok(AppliedLive {
            checkpoint: row.get(0),
            parked: row.get::<_, Vec<i64>>(1).into_iter().collect(),
        })
    }

    /// Where the projection stands against `log`.
    pub async fn status(&self, log: &dyn EventLog) -> Result<ProjectionStatus, StoreError> {
        let client = self.pool.get().await.map_err(db_error)?;
        let row = client
            .query_one(
                "SELECT (SELECT position FROM projector_checkpoint WHERE name = $1), \
                        (SELECT count(*) FROM parked_events WHERE projection = $1)",
                &[&self.projection.name()],
            )
            .await
            .map_err(db_error)?;
        let checkpoint = Position(row.get::<_, Option<i64>>(0).unwrap_or(0).max(0) as u64);
        let head = log.head().await?;
        Ok(ProjectionStatus {
            name: self.projection.name().to_owned(),
            checkpoint,
            lag: head.0.saturating_sub(checkpoint.0),
            parked: row.get::<_, i64>(1).max(0) as u64,
        })
    }
}

#[async_trait]
impl<P: Projection> ReadModelWriter for PgProjection<P> {
    async fn apply(&self, events: &[LoggedEvent]) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(db_error)?;
        let applied = self.apply_on(&mut client, events);
        let answer = tokio::time::timeout(self.answer_within, applied).await;
        self.settle(answer, client)
    }

    async fn checkpoint(&self) -> Result<Position, StoreError> {
        let client = self.pool.get().await.map_err(db_error)?;
        let name = self.projection.name();
        let by_name: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
        let read = client.query_one(
            "SELECT position FROM projector_checkpoint WHERE name = $1",
            &by_name,
        );
        let answer = tokio::time::timeout(self.answer_within, read).await;
        let answer = answer.map(|row| row.map_err(db_error));
        let row = self.settle(answer, client)?;
        Ok(Position(row.get::<_, i64>(0).max(0) as u64))
    }

    async fn park(&self, unreadable: &[UnreadableLogged]) -> Result<(), StoreError> {
        let Some(last) = unreadable.iter().map(|e| e.position).max() else {
            return Ok(());
        };
        let mut client = self.pool.get().await.map_err(db_error)?;
        let parked = self.park_on(&mut client, unreadable, last);
        let answer = tokio::time::timeout(self.answer_within, parked).await;
        self.settle(answer, client)
    }

    async fn parked(&self) -> Result<Vec<UnreadableLogged>, StoreError> {
        let client = self.pool.get().await.map_err(db_error)?;
        let rows = client
            .query(
                "SELECT position, aggregate_id, sequence, reason FROM parked_events \
                 WHERE projection = $1 ORDER BY position",
                &[&self.projection.name()],
            )
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|row| UnreadableLogged {
                position: Position(row.get::<_, i64>(0).max(0) as u64),
                aggregate_id: row.get(1),
                sequence: row.get::<_, i64>(2).max(0) as u64,
                reason: row.get(3),
            })
            .collect())
    }
}

#[async_trait]
impl<P: Projection> ManagedProjection for PgProjection<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn rebuild(
        &self,
        log: &dyn EventLog,
        batch: usize,
        progress: &(dyn Fn(Position, Position) + Sync),
    ) -> Result<Position, StoreError> {
        PgProjection::rebuild(self, log, batch, progress).await
    }

    async fn status(&self, log: &dyn EventLog) -> Result<ProjectionStatus, StoreError> {
        PgProjection::status(self, log).await
    }
}

fn positions(unreadable: &[UnreadableLogged]) -> Result<Vec<i64>, StoreError> {
    unreadable
        .iter()
        .map(|e| position_i64(e.position))
        .collect()
}

/// Records `unreadable` in `live.parked_events` under `projection` (again: the reason is
/// refreshed), in one statement.
async fn insert_parked(
    client: &impl GenericClient,
    live: &str,
    projection: &str,
    unreadable: &[UnreadableLogged],
) -> Result<(), StoreError> {
    if unreadable.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = unreadable.iter().map(|e| e.aggregate_id.as_str()).collect();
    let sequences: Vec<i64> = unreadable
        .iter()
        .map(|e| i64::try_from(e.sequence).unwrap_or(i64::MAX))
        .collect();
    let reasons: Vec<&str> = unreadable.iter().map(|e| e.reason.as_str()).collect();
    client
        .execute(
            &format!(
                "INSERT INTO {live}.parked_events (projection, position, aggregate_id, sequence, \
                 reason) SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], \
                 $5::text[]) ON CONFLICT (projection, position) DO UPDATE SET reason = \
                 excluded.reason"
            ),
            &[
                &projection,
                &positions(unreadable)?,
                &ids,
                &sequences,
                &reasons,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// What the live tables of a projection cover, for a rebuild to check its reader against.
struct AppliedLive {
    checkpoint: i64,
    parked: std::collections::HashSet<i64>,
}

impl AppliedLive {
    /// Refuses a rebuild that cannot read an event the live tables applied.
    fn refuse_unread(&self, name: &str, unreadable: &[UnreadableLogged]) -> Result<(), StoreError> {
        for event in unreadable {
            let position = position_i64(event.position)?;
            if position <= self.checkpoint && !self.parked.contains(&position) {
                return Err(StoreError::misconfigured(format!(
                    "rebuild of {name} refused, nothing changed: the live tables applied the \
                     event at position {} (aggregate {}), which this rebuild's log cannot read \
                     ({}); open the store with the upcasters the projector has \
                     (PgSettings::with_upcaster)",
                    event.position, event.aggregate_id, event.reason
                )));
            }
        }
        Ok(())
    }
}
