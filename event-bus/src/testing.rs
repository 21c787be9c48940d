//! Test support (feature `test-support`): a topology with names of its own per test, so tests
//! share the machine's RabbitMQ in parallel, deleted when the test ends.

use amiquip::QueueDeleteOptions;

use crate::connection::{open, parse, AmqpAddress};
use crate::message::Topology;

/// The broker tests use; `TEST_AMQP_URL` overrides it.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A port on 127.0.0.1 that nothing listens on (for a server a test starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh topology (exchange, queue, dead letters) for one test.
pub struct TestTopology {
    /// The names.
    pub topology: Topology,
    address: AmqpAddress,
}

impl TestTopology {
    /// Declares a topology with unique names. Panics with a clear message if RabbitMQ is not
    /// reachable: a test that needs it fails rather than skip (`.ci/run` starts it).
    pub fn create() -> TestTopology {
        let url = amqp_url();
        let address = parse(&url).expect("TEST_AMQP_URL");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let topology = Topology::new(&format!("bo_test_{id}"), &format!("bo_test_{id}_view"));
        let mut connection = open(&address).unwrap_or_else(|e| {
            panic!("RabbitMQ is not reachable at {url} ({e}); start it (see .ci/run)")
        });
        topology
            .declare_all(&mut connection)
            .expect("declaring the test topology");
        let _ = connection.close();
        TestTopology { topology, address }
    }

    /// The broker's address.
    pub fn address(&self) -> AmqpAddress {
        self.address.clone()
    }

    /// Publishes `body` to the exchange as a `BuyOrderPlaced` message with `message_id`, as any
    /// publisher could (for messages the relay would never send).
    pub fn publish_raw(&self, body: &[u8], message_id: &str) {
        let mut connection = open(&self.address).expect("RabbitMQ");
        let channel = connection.open_channel(None).expect("a channel");
        let properties = amiquip::AmqpProperties::default().with_message_id(message_id.into());
        channel
            .basic_publish(
                self.topology.exchange.as_str(),
                amiquip::Publish::with_properties(body, "BuyOrderPlaced", properties),
            )
            .expect("published");
        let _ = connection.close();
    }

    /// How many messages wait in `queue`.
    pub fn message_count(&self, queue: &str) -> u32 {
        let mut connection = open(&self.address).expect("RabbitMQ");
        let channel = connection.open_channel(None).expect("a channel");
        let count = channel
            .queue_declare_passive(queue)
            .ok()
            .and_then(|q| q.declared_message_count())
            .unwrap_or(0);
        let _ = connection.close();
        count
    }
}

impl Drop for TestTopology {
    fn drop(&mut self) {
        let Ok(mut connection) = open(&self.address) else {
            return;
        };
        if let Ok(channel) = connection.open_channel(None) {
            for queue in [&self.topology.queue, &self.topology.dead_letter_queue] {
                let _ = channel.queue_delete(queue.as_str(), QueueDeleteOptions::default());
            }
            for exchange in [&self.topology.exchange, &self.topology.dead_letter_exchange] {
                let _ = channel.exchange_delete(exchange.as_str(), false);
            }
        }
        let _ = connection.close();
    }
}

/// A RabbitMQ node of a test's own (its own node name, port and data directory, started with
/// the machine's `rabbitmq-server`), for tests that stop or restart the broker: the machine's
/// shared broker is never touched. Stopped, and its data removed, when dropped.
pub struct PrivateBroker {
    node: String,
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivateBroker {
    /// Starts a node and waits (up to a minute) until it accepts connections. Panics with a
    /// clear message if it cannot: a test that needs it fails rather than skip.
    pub fn start() -> PrivateBroker {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let broker = PrivateBroker {
            node: format!("bo_test_{}@localhost", &id[..12]),
            port: free_port(),
            dir: std::env::temp_dir().join(format!("bo-rabbitmq-{}", &id[..12])),
        };
        std::fs::create_dir_all(&broker.dir).expect("the node's directory");
        std::fs::write(broker.dir.join("enabled_plugins"), "[].\n").expect("its plugins file");
        // Its own listener: the machine's configuration names the shared node's port.
        std::fs::write(
            broker.dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{}\n", broker.port),
        )
        .expect("its configuration");
        // As root, rabbitmq-server runs as the rabbitmq user, which must own the directory.
        let _ = std::process::Command::new("chown")
            .args(["-R", "rabbitmq"])
            .arg(&broker.dir)
            .status();
        broker.run_node(free_port());
        broker
    }

    fn run_node(&self, dist_port: u16) {
        let status = std::process::Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .status()
            .unwrap_or_else(|e| panic!("rabbitmq-server is needed for this test ({e})"));
        assert!(status.success(), "rabbitmq-server: {status}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the private RabbitMQ node {} did not start (logs in {:?})",
                self.node,
                self.dir.join("log")
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The node's URL (guest, vhost `/`).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the node as a whole (every connection dropped, the process gone), then starts it
    /// again on the same data: durable queues and persistent messages are what survives.
    pub fn restart(&self) {
        self.stop();
        self.run_node(free_port());
    }

    fn stop(&self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS endpoint in front of the tests' broker ([`amqp_url`]): Debian's `stunnel4` on a port
/// of its own, presenting a certificate the test made (`settings_kit::testing::TestCa`), as a
/// managed broker's `amqps://` endpoint does. It can also require a client certificate. Stopped
/// when dropped.
pub struct TlsBroker {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl TlsBroker {
    /// Serves TLS with `server` (a certificate and key) and forwards to the broker. With
    /// `client_ca`, a client must present a certificate that authority signed.
    pub fn start(
        server: &settings_kit::testing::Issued,
        client_ca: Option<&std::path::Path>,
    ) -> TlsBroker {
        let behind = parse(&amqp_url()).expect("TEST_AMQP_URL");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "bo-stunnel-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).expect("a directory for stunnel");
        let mut conf = format!(
            "foreground = yes\npid =\noutput = {log}\n\n[amqps]\naccept = 127.0.0.1:{port}\n\
             connect = {host}:{target}\ncert = {cert}\nkey = {key}\n",
            log = dir.join("log").display(),
            host = behind.host,
            target = behind.port,
            cert = server.cert.display(),
            key = server.key.display(),
        );
        if let Some(ca) = client_ca {
            conf.push_str(&format!("verifyChain = yes\nCAfile = {}\n", ca.display()));
        }
        let conf_path = dir.join("stunnel.conf");
        std::fs::write(&conf_path, conf).expect("stunnel.conf");
        let child = std::process::Command::new("stunnel4")
            .arg(&conf_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("stunnel4 is needed (Debian's stunnel4, see .ci/run): {e}"));
        let tls = TlsBroker { child, port, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "stunnel did not listen on {port}: {}",
                std::fs::read_to_string(tls.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        tls
    }

    /// Its port, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An `amqps://` URL of it through `host` (which the certificate may or may not name),
    /// with `query` (RabbitMQ's TLS parameters) if not empty.
    pub fn url(&self, host: &str, query: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("amqps://guest:guest@{host}:{}/%2f{query}", self.port)
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
