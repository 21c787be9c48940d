//! amqps:// against a real TLS endpoint (stunnel in front of the tests' broker, with a
//! certificate authority the test makes): what verifies, and what each failed check says.

use event_bus::connection::{open, parse};
use event_bus::testing::{amqp_url, TlsBroker};
use event_bus::BusError;
use settings_kit::testing::TestCa;

/// Opens `url` and says why it failed (or that it did not).
fn failure(url: &str) -> String {
    match open(&parse(url).unwrap()) {
        Ok(connection) => {
            let _ = connection.close();
            panic!("{url} connected, and should not have")
        }
        Err(BusError::Unavailable(why)) => why,
        Err(other) => panic!("{other:?}"),
    }
}

fn connects(url: &str) {
    let mut connection = open(&parse(url).unwrap()).unwrap_or_else(|e| panic!("{url}: {e}"));
    // A round trip over it, not just the handshake.
    let channel = connection.open_channel(None).unwrap();
    channel
        .queue_declare(
            "",
            amiquip::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .unwrap();
    connection.close().unwrap();
}

#[test]
fn a_trusted_certificate_for_the_host_connects_and_each_failed_check_says_which() {
    let ca = TestCa::new("amqps");
    let server = ca.issue("localhost", &["localhost"]);
    let broker = TlsBroker::start(&server, None);
    let trusted = format!("cacertfile={}", ca.certificate().display());

    // Verified: the chain to the given authority, and the host name.
    connects(&broker.url("localhost", &trusted));

    // The certificate names localhost, not 127.0.0.1.
    let why = failure(&broker.url("127.0.0.1", &trusted));
    assert!(why.contains("not issued for 127.0.0.1"), "{why}");
    // ...unless the name to check is given as RabbitMQ's URIs give it.
    connects(&broker.url(
        "127.0.0.1",
        &format!("{trusted}&server_name_indication=localhost"),
    ));

    // Without its authority, the system's roots do not trust it.
    let why = failure(&broker.url("localhost", ""));
    assert!(why.contains("not signed by a trusted authority"), "{why}");
    // Another authority is no better (cacertfile replaces the system's roots).
    let other = TestCa::new("other");
    let why = failure(&broker.url(
        "localhost",
        &format!("cacertfile={}", other.certificate().display()),
    ));
    assert!(why.contains("not signed by a trusted authority"), "{why}");

    // Explicitly unverified: encrypted, nothing checked.
    connects(&broker.url("127.0.0.1", "verify=verify_none"));

    // Plain AMQP to the TLS port, and TLS to the plain port.
    let plain_to_tls = format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.port());
    let why = failure(&plain_to_tls);
    assert!(why.contains("speaks TLS, not plain AMQP"), "{why}");
    let tls_to_plain = amqp_url()
        .replacen("amqp://", "amqps://", 1)
        .replace("%2f", &format!("%2f?{trusted}"));
    let why = failure(&tls_to_plain);
    assert!(why.contains("does not speak TLS"), "{why}");
}

#[test]
fn a_broker_that_requires_a_client_certificate_takes_one_signed_by_its_authority() {
    let ca = TestCa::new("amqps-mtls");
    let server = ca.issue("localhost", &["localhost"]);
    let client = ca.issue("relay", &[]);
    let broker = TlsBroker::start(&server, Some(&ca.certificate()));
    let trusted = format!("cacertfile={}", ca.certificate().display());

    connects(&broker.url(
        "localhost",
        &format!(
            "{trusted}&certfile={}&keyfile={}",
            client.cert.display(),
            client.key.display()
        ),
    ));
    // Without one, the endpoint ends the handshake.
    let why = failure(&broker.url("localhost", &trusted));
    assert!(why.contains("requires a client certificate"), "{why}");
    // A certificate from an authority it does not trust is refused the same way.
    let strangers = TestCa::new("stranger");
    let stranger = strangers.issue("relay", &[]);
    let why = failure(&broker.url(
        "localhost",
        &format!(
            "{trusted}&certfile={}&keyfile={}",
            stranger.cert.display(),
            stranger.key.display()
        ),
    ));
    assert!(why.contains("refused our client certificate"), "{why}");
}

#[test]
fn tls_parameters_are_checked_when_parsed_and_never_show_the_password() {
    let ca = TestCa::new("amqps-parse");
    let pem = ca.certificate();
    let refused = |url: &str| match parse(url) {
        Err(BusError::BadUrl(why)) => {
            assert!(!why.contains("S3cret"), "{why}");
            why
        }
        other => panic!("{url}: {other:?}"),
    };
    let base = "amqps://u:S3cret@broker.example/orders";
    assert!(refused(&format!("{base}?cacertfile=/nonexistent.pem"))
        .contains("cacertfile /nonexistent.pem"));
    assert!(refused(&format!("{base}?verify=maybe")).contains("verify must be"));
    assert!(refused(&format!("{base}?certfile={}", pem.display())).contains("go together"));
    assert!(refused(&format!(
        "{base}?cacertfile={}&verify=verify_none",
        pem.display()
    ))
    .contains("nothing would be verified"));
    assert!(refused(&format!("{base}?password=S3cret")).contains("\"password\""));
    assert!(refused(&format!(
        "amqp://u:S3cret@broker.example/orders?cacertfile={}",
        pem.display()
    ))
    .contains("for amqps:// URLs"));
    // A key that is not the certificate's pair.
    let one = ca.issue("one", &[]);
    let two = ca.issue("two", &[]);
    assert!(refused(&format!(
        "{base}?certfile={}&keyfile={}",
        one.cert.display(),
        two.key.display()
    ))
    .contains("certfile"));
    let address = parse(&format!("{base}?cacertfile={}", pem.display())).unwrap();
    assert!(address.is_tls());
    assert!(!format!("{address:?}").contains("S3cret"));
}
