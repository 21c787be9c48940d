//! Test support (feature `test-support`): a fresh PostgreSQL database per test, so tests run
//! in parallel against the real server without seeing each other's data.

pub use crate::postgres::read::read_model::SHARED_READS;
use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;

/// The server tests use; `TEST_POSTGRES_URL` overrides it (any database on it: used to create
/// and drop the per-test ones).
fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A writer on `store` that prices 1 BTC at 100 of every currency: the one the store's tests
/// place orders through.
pub fn writer(
    store: &crate::postgres::PgEventStore,
) -> crate::CqrsOrderWriter<crate::postgres::PgEventStore> {
    let rate = order_domain::BtcRate::parse("100").expect("a valid rate");
    crate::CqrsOrderWriter::new(
        store.clone(),
        order_domain::BuyOrderServices::new(std::sync::Arc::new(
            order_domain::FixedSource::uniform(rate),
        )),
    )
}

/// A database created for one test and dropped when this value is dropped.
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Creates an empty database. Panics with a clear message if PostgreSQL is not reachable:
    /// a test that needs it fails rather than skip (`.ci/run` starts it).
    pub async fn create() -> TestDb {
        let admin = admin_url();
        let name = format!("bo_test_{}", uuid::Uuid::new_v4().simple());
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is not reachable at {admin} ({e}); start it (see .ci/run)")
            });
        pool.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        pool.close().await;
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        TestDb {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin_url())
                    .await
                    .ok()?;
                pool.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .ok()?;
                pool.close().await;
                Some(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} was not dropped", self.name);
        }
    }
}

/// Writes events 1..=n straight into the log of the write store at `pool` (the trigger off for
/// the bulk load; positions and ledger set to match): a large log in a second or two. Valid
/// `BuyOrderPlaced` events of client `bulk`, 0.0001 BTC each.
pub async fn bulk_events(pool: &sqlx::PgPool, n: i64) {
    sqlx::raw_sql(&format!(
        "ALTER TABLE events DISABLE TRIGGER events_position_and_cap;
         INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, position)
         SELECT 'BuyOrder', id::text, 1, 'BuyOrderPlaced', '1.0',
                json_build_object('BuyOrderPlaced', json_build_object(
                  'order_id', id, 'client_id', 'bulk', 'idempotency_key', gen_random_uuid(),
                  'currency', 'USD', 'amount', '5.00', 'rate', '50000', 'rate_source', 'test',
                  'rate_quoted_at', '2026-11-26T00:00:00Z', 'satoshis', 10000,
                  'placed_at', '2026-11-26T00:00:00.000001Z')),
                '{{}}'::json, g
           FROM (SELECT g, gen_random_uuid() AS id FROM generate_series(1, {n}) g) s;
         ALTER TABLE events ENABLE TRIGGER events_position_and_cap;
         UPDATE btc_ledger SET cap_sats = 2100000000000000, sold_sats = {n} * 10000,
                               last_position = {n};"
    ))
    .execute(pool)
    .await
    .unwrap_or_else(|e| panic!("cannot write {n} events: {e}"));
}

/// Watches what one client sends for the message that commits: a COMMIT, or the execution of a
/// call of `buy_orders_append` (the group committer's one statement, which commits as its own
/// implicit transaction). sqlx prepares a statement (Parse) in one round trip and executes it
/// (Bind, naming the statement) in another, later ones by name only, so the names of the
/// statements that call it are remembered per connection.
#[derive(Default)]
struct CommitWatch {
    append_statements: std::collections::HashSet<Vec<u8>>,
}

impl CommitWatch {
    /// Whether `chunk` commits. Frontend messages are a type byte, a big-endian length that
    /// counts itself, and a body; a chunk that does not parse as whole messages (the startup
    /// message) is only searched for COMMIT.
    fn commits(&mut self, chunk: &[u8]) -> bool {
        let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        if has(chunk, b"COMMIT") {
            return true;
        }
        let mut rest = chunk;
        let mut executes = false;
        while rest.len() >= 5 {
            let kind = rest[0];
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if len < 4 || rest.len() < 1 + len {
                return false;
            }
            let body = &rest[5..1 + len];
            let mut strings = body.split(|b| *b == 0);
            match kind {
                b'P' => {
                    let name = strings.next().unwrap_or_default();
                    if has(strings.next().unwrap_or_default(), b"buy_orders_append") {
                        self.append_statements.insert(name.to_vec());
                    }
                }
                b'B' => {
                    let _portal = strings.next();
                    let statement = strings.next().unwrap_or_default();
                    executes |= self.append_statements.contains(statement);
                }
                _ => {}
            }
            rest = &rest[1 + len..];
        }
        executes
    }
}

/// A `BuyOrderPlaced` that `cmd` could produce, for `satoshis` (rate 1, stamped now): for tests
/// that commit events straight to an event store.
pub fn placed_event(
    cmd: &order_domain::PlaceBuyOrder,
    satoshis: u64,
) -> order_domain::BuyOrderEvent {
    use order_domain::{BtcRate, BuyOrderEvent, BuyOrderPlaced, Satoshis};
    BuyOrderEvent::BuyOrderPlaced(BuyOrderPlaced {
        order_id: cmd.order_id(),
        client_id: cmd.client_id.clone(),
        idempotency_key: cmd.idempotency_key,
        currency: cmd.currency,
        amount: cmd.amount,
        rate: BtcRate::parse("1").expect("a valid rate"),
        rate_source: "test".into(),
        rate_quoted_at: chrono::Utc::now(),
        satoshis: Satoshis::new(satoshis),
        placed_at: chrono::Utc::now(),
    })
}

/// Inserts an event for `cmd`'s order as a writer of `version` would have stored it (through
/// the trigger, like any insert): `shape` edits the current JSON of the `BuyOrderPlaced` object
/// first (remove a field, add one). For tests of stored events of other versions.
pub async fn store_versioned(
    pool: &sqlx::PgPool,
    cmd: &order_domain::PlaceBuyOrder,
    version: &str,
    shape: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) {
    let mut event = placed_event(cmd, cmd.amount.cents() * 10_000);
    // Stamped as a store stamps (microseconds), so the read table holds it exactly.
    event.set_placed_at(order_domain::Clock::now(&order_domain::SystemClock));
    let mut payload = serde_json::to_value(&event).expect("an event serializes");
    if let Some(fields) = payload
        .get_mut("BuyOrderPlaced")
        .and_then(|placed| placed.as_object_mut())
    {
        shape(fields);
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('BuyOrder', $1, 1, 'BuyOrderPlaced', $2, $3, '{}')",
    )
    .bind(cmd.order_id().to_string())
    .bind(version)
    .bind(payload)
    .execute(pool)
    .await
    .unwrap_or_else(|e| panic!("cannot store a {version} event: {e}"));
}

/// A shape order-domain never wrote, for tests of the upcasting path: `BuyOrderPlaced` 0.9.0,
/// without `rate_source` ([`store_versioned`] with [`without_rate_source`]), and the upcaster
/// that brings it to 1.0.0 with `rate_source` "unknown".
pub fn rate_source_upcaster() -> cqrs_es::persist::SemanticVersionEventUpcaster {
    cqrs_es::persist::SemanticVersionEventUpcaster::new(
        "BuyOrderPlaced",
        "1.0.0",
        Box::new(|mut payload| {
            payload["BuyOrderPlaced"]["rate_source"] = serde_json::json!("unknown");
            payload
        }),
    )
}

/// The 0.9.0 shape: 1.0.0 without `rate_source`.
pub fn without_rate_source(fields: &mut serde_json::Map<String, serde_json::Value>) {
    fields.remove("rate_source");
}

/// Every row `scope` sees in `model`, page by page (100 a page), newest first.
pub async fn every_row(
    model: &dyn crate::ReadModel,
    scope: &crate::Scope,
) -> Vec<crate::OrderView> {
    let (mut rows, mut after) = (Vec::new(), None);
    loop {
        let request = crate::PageRequest {
            after,
            size: crate::PageSize::new(100).expect("a valid page size"),
        };
        let page = model.page(request, scope).await.expect("a page");
        if page.rows.is_empty() {
            return rows;
        }
        after = page.last_reference;
        rows.extend(page.rows);
    }
}

/// What [`OutageProxy::cut_at_next_commit`] does with the COMMIT it catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCommit {
    /// The server gets the COMMIT (and commits); its answer never reaches the client.
    Deliver,
    /// The server never gets it (and rolls the transaction back when the connection dies).
    Drop,
    /// The server never gets it, and the connection stays open with nothing more passing
    /// either way: a client host that froze or was partitioned mid-transaction. Only this
    /// connection; the database stays up for others.
    Freeze,
}

/// A TCP proxy in front of PostgreSQL that a test can cut and restore: an outage of the
/// database as the application sees it, without stopping the server other tests share. It can
/// also cut at the exact moment a client sends COMMIT ([`OutageProxy::cut_at_next_commit`]).
pub struct OutageProxy {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    at_commit: std::sync::Arc<parking_lot::Mutex<Option<AtCommit>>>,
    frozen: tokio::sync::watch::Sender<bool>,
    target: std::sync::Arc<parking_lot::Mutex<std::net::SocketAddr>>,
}

impl OutageProxy {
    /// Starts a proxy on 127.0.0.1 (an ephemeral port) forwarding to `target`.
    pub async fn start(target: std::net::SocketAddr) -> OutageProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let at_commit = std::sync::Arc::new(parking_lot::Mutex::new(None));
        let (frozen, _) = tokio::sync::watch::channel(false);
        let target = std::sync::Arc::new(parking_lot::Mutex::new(target));
        let proxy = OutageProxy {
            addr,
            up: up.clone(),
            cuts: cuts.clone(),
            at_commit: at_commit.clone(),
            frozen: frozen.clone(),
            target: target.clone(),
        };
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused, as far as the client can tell
                }
                let mut cut = cuts.subscribe();
                cut.mark_unchanged();
                let (up, cuts, at_commit) = (up.clone(), cuts.clone(), at_commit.clone());
                let frozen = frozen.subscribe();
                let target = *target.lock();
                tokio::spawn(async move {
                    // Accepted (as a frozen host's kernel would), but nothing goes on until thawed.
                    thawed(&frozen).await;
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let pipe = Pipe {
                        up,
                        cuts,
                        at_commit,
                        frozen,
                    };
                    tokio::select! {
                        _ = pipe.run(inbound, outbound) => {}
                        _ = cut.changed() => {} // both sockets dropped: the connection dies
                    }
                });
            }
        });
        proxy
    }

    /// Where the proxy listens (for a peer other than PostgreSQL: a broker, say).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `url` with its host and port replaced by the proxy's, and TLS off: the proxy reads the
    /// protocol to catch a commit, which it cannot do inside TLS.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        let plain = if path.contains('?') {
            "&sslmode=disable"
        } else {
            "?sslmode=disable"
        };
        format!("{scheme}://{user}{}/{path}{plain}", self.addr)
    }

    /// The database goes away: open connections die, new ones are refused.
    pub fn cut(&self) {
        cut_all(&self.up, &self.cuts);
    }

    /// New connections go to `target` from now on (a managed endpoint pointed at a promoted
    /// standby); open ones stay where they are until cut.
    pub fn retarget(&self, target: std::net::SocketAddr) {
        *self.target.lock() = target;
    }

    /// The database is back.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The peer goes silent without going away, as a paused VM or a stalled middlebox does:
    /// every connection stays open and nothing passes either way (what was sent is held, not
    /// lost); new connections are accepted and go nowhere. The kernel still acknowledges, so no
    /// keepalive or `TCP_USER_TIMEOUT` on either side notices. Until [`OutageProxy::thaw`].
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Everything held by [`OutageProxy::freeze`] goes on.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// The next COMMIT any client sends through the proxy is caught: delivered or dropped
    /// (`how`), and then the database goes away as with [`OutageProxy::cut`] (until
    /// [`OutageProxy::restore`]), or that one connection freezes ([`AtCommit::Freeze`]). The
    /// client is left not knowing whether it committed.
    pub fn cut_at_next_commit(&self, how: AtCommit) {
        *self.at_commit.lock() = Some(how);
    }

    /// Whether the armed COMMIT has been caught yet.
    pub fn commit_caught(&self) -> bool {
        self.at_commit.lock().is_none()
    }
}

/// Returns once the proxy is not frozen.
async fn thawed(frozen: &tokio::sync::watch::Receiver<bool>) {
    let mut frozen = frozen.clone();
    let _ = frozen.wait_for(|frozen| !frozen).await;
}

fn cut_all(up: &std::sync::atomic::AtomicBool, cuts: &tokio::sync::watch::Sender<u64>) {
    up.store(false, std::sync::atomic::Ordering::SeqCst);
    cuts.send_modify(|n| *n += 1);
}

/// One proxied connection, watching what the client sends for a COMMIT to catch.
struct Pipe {
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    at_commit: std::sync::Arc<parking_lot::Mutex<Option<AtCommit>>>,
    frozen: tokio::sync::watch::Receiver<bool>,
}

impl Pipe {
    async fn run(self, inbound: tokio::net::TcpStream, outbound: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client_in, mut client_out) = inbound.into_split();
        let (mut server_in, mut server_out) = outbound.into_split();
        let (silenced_tx, silenced) = tokio::sync::watch::channel(false);
        let frozen = self.frozen.clone();
        let down = async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                thawed(&frozen).await;
                let n = match server_in.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if *silenced.borrow() {
                    continue; // the answer to a caught COMMIT never reaches the client
                }
                thawed(&frozen).await;
                if client_out.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let up = async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut watch = CommitWatch::default();
            loop {
                thawed(&self.frozen).await;
                let n = match client_in.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                thawed(&self.frozen).await;
                let chunk = &buf[..n];
                let caught = if watch.commits(chunk) {
                    self.at_commit.lock().take()
                } else {
                    None
                };
                match caught {
                    None => {
                        if server_out.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                    Some(AtCommit::Freeze) => {
                        let _ = silenced_tx.send(true);
                        std::future::pending::<()>().await;
                    }
                    Some(how) => {
                        let _ = silenced_tx.send(true);
                        if how == AtCommit::Deliver {
                            let _ = server_out.write_all(chunk).await;
                            // Let the server commit before its connection dies.
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        cut_all(&self.up, &self.cuts);
                        return;
                    }
                }
            }
        };
        tokio::join!(down, up);
    }
}

/// A PostgreSQL server of a test's own (`initdb` in a temporary directory, on a port of its
/// own, run as the `postgres` user from the machine's PostgreSQL binaries), for tests that stop,
/// promote or cut a database without touching the shared server. Stopped (immediately) and
/// removed when dropped.
pub struct PrivateServer {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivateServer {
    fn bin_dir() -> std::path::PathBuf {
        let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        found.sort();
        found
            .pop()
            .expect("an initdb under /usr/lib/postgresql/*/bin")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// Runs one of PostgreSQL's programs as the `postgres` user; panics with its output if it
    /// fails.
    fn run(&self, program: &str, args: &[&str]) {
        let output = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn new_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bo-pg-{name}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).expect("a directory");
        let status = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown postgres {dir:?}");
        dir
    }

    /// A new primary, started, ready for streaming replication (trust authentication on
    /// 127.0.0.1, the test's own data only).
    pub fn primary() -> PrivateServer {
        let server = PrivateServer {
            bin: Self::bin_dir(),
            dir: Self::new_dir("primary"),
            port: Self::free_port(),
        };
        let data = server.data();
        server.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        server.configure(&["wal_level = replica", "max_wal_senders = 5"]);
        server.start();
        server
    }

    /// A server that takes TCP connections only over TLS with a client certificate signed by
    /// `ca` (`hostssl … cert`: the user is the certificate's common name; no password, no
    /// plain connection), presenting `cert` and `key` as its own: what some managed platforms
    /// require. Local socket connections stay trusted (for `pg_ctl`).
    pub fn requiring_client_certificates(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> PrivateServer {
        let server = PrivateServer {
            bin: Self::bin_dir(),
            dir: Self::new_dir("mtls"),
            port: Self::free_port(),
        };
        let data = server.data();
        server.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        for (from, name) in [(ca, "ca.pem"), (cert, "server.pem"), (key, "server.key")] {
            let to = format!("{data}/{name}");
            std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {from:?}: {e}"));
            let _ = std::process::Command::new("chown")
                .args(["postgres:postgres", &to])
                .status();
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            format!("{data}/server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod 600 the server's key");
        std::fs::write(
            format!("{data}/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
        )
        .expect("pg_hba.conf");
        server.configure(&[
            "ssl = on",
            "ssl_ca_file = 'ca.pem'",
            "ssl_cert_file = 'server.pem'",
            "ssl_key_file = 'server.key'",
        ]);
        server.start();
        server
    }

    /// A streaming standby of `primary`, copied with `pg_basebackup`, following it through
    /// `via` (host:port: a proxy the test can cut), started.
    pub fn standby(primary: &PrivateServer, via: std::net::SocketAddr) -> PrivateServer {
        let server = PrivateServer {
            bin: Self::bin_dir(),
            dir: Self::new_dir("standby"),
            port: Self::free_port(),
        };
        let data = server.data();
        server.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &data,
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        server.configure(&[&format!(
            "primary_conninfo = 'host={} port={} user=postgres'",
            via.ip(),
            via.port()
        )]);
        std::fs::write(format!("{data}/standby.signal"), "").expect("standby.signal");
        let _ = std::process::Command::new("chown")
            .args(["postgres:postgres", &format!("{data}/standby.signal")])
            .status();
        server.start();
        server
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn configure(&self, lines: &[&str]) {
        use std::io::Write as _;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(format!("{}/postgresql.conf", self.data()))
            .expect("postgresql.conf");
        let own = [
            format!("port = {}", self.port),
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("unix_socket_directories = '{}'", self.dir.display()),
            "fsync = off".to_owned(),
            "ssl = off".to_owned(),
        ];
        for line in own.iter().map(String::as_str).chain(lines.iter().copied()) {
            writeln!(conf, "{line}").expect("writing postgresql.conf");
        }
    }

    fn start(&self) {
        let log = self.dir.join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "start"]);
    }

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A URL of its `postgres` database (TLS off).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Stops it at once, as a crash would (`-m immediate`).
    pub fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Promotes a standby to primary (a new timeline).
    pub fn promote(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "promote"]);
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The file of the certificate the server at `url` presents: trusting it is how a test client
/// verifies this machine's self-signed server (issued for `localhost`).
pub async fn server_certificate(url: &str) -> String {
    let pool = sqlx::PgPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable ({e})"));
    let path: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&pool)
        .await
        .expect("the server names its certificate");
    pool.close().await;
    assert!(
        std::path::Path::new(&path).exists(),
        "the server's certificate {path} is readable here"
    );
    path
}
