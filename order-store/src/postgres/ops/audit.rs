//! Proving the books on a live database (`buy-orders audit`): the rules hold by construction,
//! and this checks that they still hold in the tables, whatever was done to them by hand.
//!
//! Each check reads a snapshot (`REPEATABLE READ, READ ONLY`): no lock that a writer waits for,
//! and every number of a check comes from the same instant. The read table's snapshot is taken
//! first, so every event its checkpoint covers is in the log's later snapshot.
//!
//! - **ledger**: `btc_ledger.sold_sats` equals the satoshis of every stored order;
//! - **positions**: the log's positions are exactly 1..N, no gap, no duplicate, N the ledger's
//!   `last_position`;
//! - **orders**: every order keeps the rules, recomputed from its own fields: readable at its
//!   version (currency, amount range and decimals, positive rate), BTC = amount / rate rounded
//!   up to the satoshi, its id derived from its client and key and equal to its aggregate's;
//! - **read table**: `buy_order_view` equals the log up to its checkpoint (ids, clients,
//!   currencies, amounts, rates, BTC, timestamps), parked events aside, and holds nothing else;
//! - **relay**: the relay's checkpoint is not ahead of the log;
//! - **epochs**: the log was never rewound under the relay (no row in `log_rewinds`: positions
//!   published from a history an asynchronous failover lost, which name other orders now); the
//!   epochs (database timelines) the log went through are listed.

use std::fmt::Write as _;

use cqrs_es::persist::SerializedEvent;
use order_domain::{btc_for, BuyOrderPlaced, EventReader, OrderId, Satoshis};
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Row};

use crate::error::StoreError;
use crate::postgres::write::event_store::READ_LOG_AFTER;
use crate::postgres::{db_error, PgSettings};

/// Rows read per query.
const BATCH: i64 = 5_000;
/// Order ids listed per check; the rest are counted.
const LISTED: usize = 20;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check (`ledger`, `positions`, `orders`, `read table`, `relay`).
    pub check: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// One line: what was found.
    pub summary: String,
    /// The orders (ids, or positions where no id is known) behind a failure: at most 20.
    pub orders: Vec<String>,
    /// How many there were in all.
    pub count: u64,
}

/// Every check's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// One per check, in the order they ran.
    pub findings: Vec<Finding>,
}

impl AuditReport {
    /// Whether every check holds.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }

    /// The report: one line per check, then the orders behind each failure.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            let mark = if finding.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "{mark}  {:<10}  {}", finding.check, finding.summary);
            for order in &finding.orders {
                let _ = writeln!(out, "      {:<10}  {order}", "");
            }
            let more = finding.count.saturating_sub(finding.orders.len() as u64);
            if more > 0 {
                let _ = writeln!(out, "      {:<10}  … and {more} more", "");
            }
        }
        out
    }
}

/// Problems found by one check, listing the first few.
#[derive(Default)]
struct Problems {
    listed: Vec<String>,
    count: u64,
}

impl Problems {
    fn add(&mut self, what: String) {
        self.count += 1;
        if self.listed.len() < LISTED {
            self.listed.push(what);
        }
    }

    fn finding(
        self,
        check: &'static str,
        ok: String,
        failed: impl FnOnce(u64) -> String,
    ) -> Finding {
        Finding {
            check,
            ok: self.count == 0,
            summary: if self.count == 0 {
                ok
            } else {
                failed(self.count)
            },
            orders: self.listed,
            count: self.count,
        }
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(format!("{what}: {e}"))
}

/// A read-only snapshot on its own connection, without the services' statement and idle
/// timeouts (an audit scans every event), so nothing it reads can change under it.
async fn snapshot(settings: &PgSettings, url: &str) -> Result<PgConnection, StoreError> {
    // Connecting is bounded by the acquire timeout, as every pool's is: a silent peer fails it.
    let options = settings.sqlx_options(url)?;
    let connect = PgConnection::connect_with(&options);
    let mut connection = tokio::time::timeout(settings.acquire_timeout, connect)
        .await
        .map_err(|_| {
            StoreError::unavailable(format!(
                "no connection to the database within {} ms",
                settings.acquire_timeout.as_millis()
            ))
        })?
        .map_err(db_error)?;
    sqlx::raw_sql(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
         SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0;",
    )
    .execute(&mut connection)
    .await
    .map_err(db_error)?;
    Ok(connection)
}

/// One stored order as the audit sees it.
struct Stored {
    position: i64,
    aggregate_id: String,
    /// The satoshis field as stored, as the trigger summed it (even for an unreadable event).
    raw_satoshis: Option<u64>,
    /// The order, if readable at its version.
    placed: Result<BuyOrderPlaced, String>,
}

fn stored(row: &PgRow, reader: &EventReader) -> Result<Stored, StoreError> {
    let position: i64 = row
        .try_get("position")
        .map_err(|e| corrupt("position", e))?;
    let aggregate_id: String = row
        .try_get("aggregate_id")
        .map_err(|e| corrupt("aggregate_id", e))?;
    let payload: serde_json::Value = row.try_get("payload").map_err(|e| corrupt("payload", e))?;
    let raw_satoshis = payload
        .get("BuyOrderPlaced")
        .and_then(|placed| placed.get("satoshis"))
        .and_then(serde_json::Value::as_u64);
    let event = SerializedEvent::new(
        aggregate_id.clone(),
        1,
        "BuyOrder".into(),
        row.try_get("event_type")
            .map_err(|e| corrupt("event_type", e))?,
        row.try_get("event_version")
            .map_err(|e| corrupt("event_version", e))?,
        payload,
        serde_json::Value::Null,
    );
    let placed = reader
        .read(event)
        .map_err(|e| e.to_string())
        .and_then(|event| event.into_placed().ok_or_else(|| "not an order".to_owned()));
    Ok(Stored {
        position,
        aggregate_id,
        raw_satoshis,
        placed,
    })
}

/// What is wrong with an order by the rules, recomputed from its own fields.
fn broken_rule(stored: &Stored) -> Option<String> {
    let placed = match &stored.placed {
        Ok(placed) => placed,
        Err(why) => return Some(format!("unreadable: {why}")),
    };
    if placed.order_id.to_string() != stored.aggregate_id {
        return Some(format!(
            "aggregate id {} is not its order id",
            stored.aggregate_id
        ));
    }
    if OrderId::derive(&placed.client_id, &placed.idempotency_key) != placed.order_id {
        return Some("its id is not derived from its client and key".into());
    }
    match btc_for(placed.amount, placed.rate) {
        Ok(btc) if btc == placed.satoshis => None,
        Ok(btc) => Some(format!(
            "{} {} at {} is {btc} BTC, stored {} BTC",
            placed.amount, placed.currency, placed.rate, placed.satoshis
        )),
        Err(e) => Some(format!(
            "{} {} at {}: {e}",
            placed.amount, placed.currency, placed.rate
        )),
    }
}

/// A read row, as text where it is a number, so nothing is rounded on the way.
struct ReadRow {
    position: i64,
    id: String,
    client_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    currency: String,
    amount: String,
    rate: String,
    btc: String,
}

fn read_row(row: &PgRow) -> Result<ReadRow, StoreError> {
    let get = |name: &str| -> Result<String, StoreError> {
        row.try_get(name).map_err(|e| corrupt(name, e))
    };
    Ok(ReadRow {
        position: row
            .try_get("position")
            .map_err(|e| corrupt("position", e))?,
        id: get("id")?,
        client_id: row
            .try_get("client_id")
            .map_err(|e| corrupt("client_id", e))?,
        created_at: row
            .try_get("created_at")
            .map_err(|e| corrupt("created_at", e))?,
        currency: get("currency")?,
        amount: get("currency_amount")?,
        rate: get("btc_rate")?,
        btc: get("btc_amount")?,
    })
}

/// Whether `row` shows `placed` exactly: numbers compared as decimals (a rate keeps its
/// source's decimals in the table, `48478.80`, which is the same number as `48478.8`).
fn row_differs(row: &ReadRow, placed: &BuyOrderPlaced) -> Option<String> {
    let decimal = |text: &str| text.parse::<Decimal>().ok();
    let mut differs = Vec::new();
    if row.id != placed.order_id.to_string() {
        differs.push("id");
    }
    if row.client_id.as_deref() != Some(placed.client_id.as_str()) {
        differs.push("client");
    }
    if row.created_at != placed.placed_at {
        differs.push("created_at");
    }
    if row.currency != placed.currency.code() {
        differs.push("currency");
    }
    if decimal(&row.amount) != Some(placed.amount.to_decimal()) {
        differs.push("amount");
    }
    if decimal(&row.rate) != Some(placed.rate.as_decimal()) {
        differs.push("rate");
    }
    let btc = decimal(&row.btc).and_then(|d| Satoshis::from_btc_decimal(d).ok());
    if btc != Some(placed.satoshis) {
        differs.push("btc_amount");
    }
    (!differs.is_empty()).then(|| differs.join(", "))
}

/// Runs every check on `DATABASE_URL` and `READ_DATABASE_URL` (else `DATABASE_URL`), in
/// `PG_SCHEMA`. An `Err` is a check that could not run (a database away); discrepancies are
/// findings.
pub async fn audit(settings: &PgSettings) -> Result<AuditReport, StoreError> {
    let write_url = settings
        .write_url()
        .ok_or_else(|| StoreError::misconfigured("DATABASE_URL is not set"))?;
    let read_url = settings.read_url().unwrap_or(write_url);
    // The read table first: every event its checkpoint covers committed before it.
    let mut read = snapshot(settings, read_url).await?;
    let checkpoint: i64 = sqlx::query_scalar(
        "SELECT position FROM projector_checkpoint WHERE name = 'buy_order_view'",
    )
    .fetch_one(&mut read)
    .await
    .map_err(db_error)?;
    let parked: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM parked_events WHERE projection = 'buy_order_view' ORDER BY position",
    )
    .fetch_all(&mut read)
    .await
    .map_err(db_error)?;
    let mut write = snapshot(settings, write_url).await?;
    let ledger = sqlx::query("SELECT sold_sats, last_position FROM btc_ledger")
        .fetch_one(&mut write)
        .await
        .map_err(db_error)?;
    let sold: i64 = ledger
        .try_get("sold_sats")
        .map_err(|e| corrupt("sold_sats", e))?;
    let last_position: i64 = ledger
        .try_get("last_position")
        .map_err(|e| corrupt("last_position", e))?;
    let relay: Option<i64> =
        sqlx::query_scalar("SELECT position FROM relay_checkpoint WHERE name = 'rabbitmq'")
            .fetch_optional(&mut write)
            .await
            .map_err(db_error)?;
    let epochs: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT epoch, first_position FROM log_epochs ORDER BY first_position, epoch",
    )
    .fetch_all(&mut write)
    .await
    .map_err(db_error)?;
    let rewinds: Vec<(Option<i32>, i64, i64, String)> = sqlx::query_as(
        "SELECT epoch, first_position, published_up_to, detail FROM log_rewinds ORDER BY id",
    )
    .fetch_all(&mut write)
    .await
    .map_err(db_error)?;

    let reader = EventReader::new();
    let (mut positions, mut orders, mut table) = (
        Problems::default(),
        Problems::default(),
        Problems::default(),
    );
    let (mut count, mut sum, mut expected, mut after) = (0_u64, 0_u128, 1_i64, 0_i64);
    let mut unsummed = 0_u64;
    let mut rows_checked = 0_u64;
    loop {
        // the log as every reader reads it: by position alone, on its one index
        let batch = sqlx::query(READ_LOG_AFTER)
            .bind(after)
            .bind(BATCH)
            .fetch_all(&mut write)
            .await
            .map_err(db_error)?;
        let Some(last) = batch.last() else { break };
        let last: i64 = last
            .try_get("position")
            .map_err(|e| corrupt("position", e))?;
        let events = batch
            .iter()
            .map(|row| stored(row, &reader))
            .collect::<Result<Vec<_>, _>>()?;
        // The read rows for this stretch of the log (up to the table's checkpoint).
        let rows = if after < checkpoint {
            sqlx::query(
                "SELECT position, id::text AS id, client_id, created_at, currency, \
                        currency_amount::text AS currency_amount, btc_rate::text AS btc_rate, \
                        btc_amount::text AS btc_amount \
                 FROM buy_order_view WHERE position > $1 AND position <= $2 ORDER BY position",
            )
            .bind(after)
            .bind(last.min(checkpoint))
            .fetch_all(&mut read)
            .await
            .map_err(db_error)?
            .iter()
            .map(read_row)
            .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let mut rows = rows.into_iter().peekable();
        for event in &events {
            count += 1;
            match event.position.cmp(&expected) {
                std::cmp::Ordering::Equal => expected += 1,
                std::cmp::Ordering::Greater => {
                    positions.add(format!(
                        "positions {expected}..{} missing (before {})",
                        event.position - 1,
                        event.aggregate_id
                    ));
                    expected = event.position + 1;
                }
                std::cmp::Ordering::Less => {
                    positions.add(format!(
                        "{} duplicates position {}",
                        event.aggregate_id, event.position
                    ));
                }
            }
            match event.raw_satoshis {
                Some(sats) => sum += u128::from(sats),
                None => unsummed += 1,
            }
            if let Some(why) = broken_rule(event) {
                orders.add(format!(
                    "{} (position {}): {why}",
                    event.aggregate_id, event.position
                ));
            }
            if event.position > checkpoint {
                continue;
            }
            // Rows the table holds before this event's position belong to no event.
            while let Some(extra) = rows.next_if(|row| row.position < event.position) {
                table.add(format!(
                    "{} (position {}): a row with no event",
                    extra.id, extra.position
                ));
            }
            let row = rows.next_if(|row| row.position == event.position);
            match (row, &event.placed) {
                (None, _) if parked.binary_search(&event.position).is_ok() => {}
                (None, _) => table.add(format!(
                    "{} (position {}): missing",
                    event.aggregate_id, event.position
                )),
                (Some(row), Ok(placed)) => {
                    rows_checked += 1;
                    if let Some(fields) = row_differs(&row, placed) {
                        table.add(format!(
                            "{} (position {}): differs in {fields}",
                            event.aggregate_id, event.position
                        ));
                    }
                }
                (Some(row), Err(_)) => table.add(format!(
                    "{} (position {}): a row for an event no reader can read",
                    row.id, row.position
                )),
            }
        }
        for extra in rows {
            table.add(format!(
                "{} (position {}): a row with no event",
                extra.id, extra.position
            ));
        }
        after = last;
    }
    // Rows past everything the log holds, or past the checkpoint.
    let beyond = sqlx::query(
        "SELECT position, id::text AS id FROM buy_order_view WHERE position > $1 \
         ORDER BY position LIMIT $2",
    )
    .bind(after.min(checkpoint))
    .bind(LISTED as i64 + 1)
    .fetch_all(&mut read)
    .await
    .map_err(db_error)?;
    for row in &beyond {
        let (position, id): (i64, String) = (row.get("position"), row.get("id"));
        table.add(format!(
            "{id} (position {position}): beyond the checkpoint {checkpoint} or the log"
        ));
    }
    if checkpoint > after {
        table.add(format!(
            "the checkpoint {checkpoint} is ahead of the log's last position {after}"
        ));
    }
    if after != last_position {
        positions.add(format!(
            "the ledger's last_position is {last_position}, the log ends at {after}"
        ));
    }
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut read).await;
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut write).await;

    let mut ledger = Problems::default();
    if unsummed > 0 {
        ledger.add(format!(
            "{unsummed} stored orders have no satoshis field to sum"
        ));
    }
    let sold_u = u128::try_from(sold).unwrap_or(u128::MAX);
    if sold_u != sum {
        let (word, by) = if sold_u > sum {
            ("more", sold_u - sum)
        } else {
            ("less", sum - sold_u)
        };
        ledger.add(format!(
            "sold_sats {sold}, the {count} stored orders sum to {sum} ({by} {word})"
        ));
    }
    let mut relay_problems = Problems::default();
    let relay_at = relay.unwrap_or(0);
    if relay_at > after {
        relay_problems.add(format!(
            "the relay's checkpoint {relay_at} is ahead of the log's last position {after}"
        ));
    }
    let mut rewound = Problems::default();
    for (epoch, first, up_to, detail) in &rewinds {
        let epoch = epoch.map_or_else(|| "?".to_owned(), |e| e.to_string());
        rewound.add(format!(
            "positions {first}..={up_to} rewound (now epoch {epoch}): {detail}"
        ));
    }
    let epochs_seen = epochs
        .iter()
        .map(|(epoch, first)| format!("epoch {epoch} from position {first}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(AuditReport {
        findings: vec![
            ledger.finding(
                "ledger",
                format!("sold_sats {sold} = the satoshis of the {count} stored orders"),
                |n| format!("{n} discrepancy in sold_sats"),
            ),
            positions.finding(
                "positions",
                if after == 0 {
                    "the log is empty, as the ledger says".to_owned()
                } else {
                    format!("1..{after}: no gap, no duplicate, as the ledger's last_position")
                },
                |n| format!("{n} gaps or duplicates"),
            ),
            orders.finding(
                "orders",
                format!("{count} orders keep the rules (readable, BTC = amount / rate rounded up, id)"),
                |n| format!("{n} orders break the rules"),
            ),
            table.finding(
                "read table",
                format!(
                    "{rows_checked} rows equal the log up to the checkpoint {checkpoint} ({} parked)",
                    parked.len()
                ),
                |n| format!("{n} rows differ from the log up to the checkpoint {checkpoint}"),
            ),
            relay_problems.finding(
                "relay",
                format!("checkpoint {relay_at} is not ahead of the log ({after})"),
                |_| "checkpoint ahead of the log".to_owned(),
            ),
            rewound.finding(
                "epochs",
                format!("never rewound under the relay ({epochs_seen})"),
                |n| {
                    format!(
                        "{n} rewinds: positions published before a failover name other orders now \
                         ({epochs_seen})"
                    )
                },
            ),
        ],
    })
}
