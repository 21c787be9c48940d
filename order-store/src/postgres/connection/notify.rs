//! Following a `NOTIFY` channel of the store's schema on a session of its own, reconnecting
//! as needed, and proving a quiet session alive: the store's head of log and `api-keys`'
//! registry both wake on one.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// How long the LISTEN session may stay quiet before it is probed.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// The first wait before reconnecting, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a listener is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice<'a> {
    /// The session is (again) listening: notifications sent while it was not were lost, so
    /// whatever they would have said must be read afresh.
    Listening,
    /// A notification, with its payload.
    Payload(&'a str),
}

/// Listens on `channel(schema)` (the schema the pool's sessions use) until `closed`
/// completes, calling `on_notice` for each notification and after each (re)connection.
///
/// A quiet session is proved every ten seconds with a query that must answer within
/// `answer_within`: a session whose peer went silent (frozen, not closed: the kernel still
/// acknowledges, no keepalive fires) would otherwise wait for notifications forever. A lost
/// session is reconnected with backoff (100 ms doubling to 5 s).
pub async fn listen(
    pool: PgPool,
    channel: impl Fn(&str) -> String,
    answer_within: Duration,
    mut on_notice: impl FnMut(Notice<'_>),
    closed: impl std::future::Future<Output = ()>,
) {
    let mut closed = std::pin::pin!(closed);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            let schema: String = sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&mut listener)
                .await?;
            listener.listen(&channel(&schema)).await?;
            on_notice(Notice::Listening);
            loop {
                let note = match tokio::time::timeout(PROBE_EVERY, listener.recv()).await {
                    Ok(note) => note?,
                    Err(_) => {
                        let probe = sqlx::query("SELECT 1").execute(&mut listener);
                        match tokio::time::timeout(answer_within, probe).await {
                            Ok(answered) => {
                                answered?;
                                continue;
                            }
                            Err(_) => {
                                return Err(sqlx::Error::Io(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "the LISTEN session did not answer its probe",
                                )))
                            }
                        }
                    }
                };
                on_notice(Notice::Payload(note.payload()));
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = &mut closed => return,
            result = session => {
                if let Err(err) = result {
                    tracing::warn!(%err, "notifications lost; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = &mut closed => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
