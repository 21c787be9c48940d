//! The registry on the real PostgreSQL: what every service relies on when `AUTH=required`.
//! Each test gets a database of its own (`TestDb`).

use std::sync::Arc;

use api_keys::{
    ClientError, ClientRegistry, Identity, IdentityError, KeyDirectory, PgClientRegistry,
};
use order_domain::ClientId;
use order_store::postgres::{PgSchema, PgSettings};
use order_store::testing::TestDb;

fn name(text: &str) -> ClientId {
    ClientId::parse(text).unwrap()
}

#[tokio::test]
async fn clients_are_added_listed_and_revoked_and_the_directory_follows() {
    let db = TestDb::create().await;
    let registry = Arc::new(
        PgClientRegistry::open(&PgSettings::for_url(db.url()))
            .await
            .unwrap(),
    );
    let key = registry.add(&name("shop-1"), false).await.unwrap().reveal();
    registry.add(&name("ops"), true).await.unwrap();
    assert_eq!(
        registry.add(&name("shop-1"), true).await,
        Err(ClientError::Exists(name("shop-1")))
    );
    let listed = registry.list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.name.as_str(), c.admin))
            .collect::<Vec<_>>(),
        [("shop-1", false), ("ops", true)]
    );
    let directory = KeyDirectory::load(registry.clone()).await.unwrap();
    let identity = Identity::Keys(directory.clone());
    assert_eq!(
        identity.resolve(Some(&key), None).unwrap().client,
        name("shop-1")
    );

    assert_eq!(registry.revoke(&name("shop-1")).await, Ok(true));
    assert_eq!(registry.revoke(&name("shop-1")).await, Ok(false));
    assert_eq!(
        registry.revoke(&name("nobody")).await,
        Err(ClientError::NotFound(name("nobody")))
    );
    directory.refresh().await.unwrap();
    assert_eq!(
        identity.resolve(Some(&key), None),
        Err(IdentityError::Unauthenticated)
    );
    assert!(
        registry.list().await.unwrap()[0].revoked_at.is_some(),
        "a revoked client is still listed, with when"
    );
    // Names are never reused, even once revoked.
    assert!(matches!(
        registry.add(&name("shop-1"), false).await,
        Err(ClientError::Exists(_))
    ));
}

#[tokio::test]
async fn the_registry_lives_in_the_stores_schema_and_speaks_tls_when_asked() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(&format!("{}?sslmode=require", db.url()))
        .in_schema(PgSchema::parse("shop_a").unwrap());
    let registry = PgClientRegistry::open(&settings).await.unwrap();
    registry.add(&name("over-tls"), false).await.unwrap();

    let pool = sqlx::PgPool::connect(&format!("{}?sslmode=disable", db.url()))
        .await
        .unwrap();
    let (schema, plain): (String, i64) = sqlx::query_as(
        "SELECT (SELECT table_schema::text FROM information_schema.tables \
                  WHERE table_name = 'api_clients'), \
                (SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                  WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
                    AND NOT s.ssl)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        schema, "shop_a",
        "api_clients sits beside the store's tables"
    );
    assert_eq!(plain, 0, "the registry's sessions are encrypted");
    pool.close().await;
}

/// Waits (up to 10 s) until `check` holds: for changes that arrive by notification.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn registry(db: &TestDb) -> Arc<PgClientRegistry> {
    Arc::new(
        PgClientRegistry::open(&PgSettings::for_url(db.url()))
            .await
            .unwrap(),
    )
}

/// A directory that polls once a minute: whatever it learns sooner, it learned by `NOTIFY`.
async fn notified_directory(registry: Arc<PgClientRegistry>) -> Identity {
    let freshness = api_keys::Freshness {
        refresh: std::time::Duration::from_secs(60),
        max_staleness: std::time::Duration::from_secs(120),
    };
    Identity::from_registry(registry, freshness, std::future::pending())
        .await
        .unwrap()
}

fn client_of(identity: &Identity, key: &str) -> Option<String> {
    identity
        .resolve(Some(key), None)
        .ok()
        .map(|caller| caller.client.as_str().to_owned())
}

/// A rotation without grace: the new key is the same client's, the old one is refused, and a
/// directory that polls once a minute learns both from the notification.
#[tokio::test]
async fn a_rotated_key_is_the_same_client_and_the_old_one_stops_at_once() {
    let db = TestDb::create().await;
    let registry = registry(&db).await;
    let old = registry.add(&name("bob"), false).await.unwrap().reveal();
    let identity = notified_directory(registry.clone()).await;
    assert_eq!(client_of(&identity, &old).as_deref(), Some("bob"));

    let new = registry
        .rotate(&name("bob"), std::time::Duration::ZERO)
        .await
        .unwrap()
        .reveal();
    eventually("the new key works", || {
        client_of(&identity, &new).as_deref() == Some("bob")
    })
    .await;
    assert_eq!(client_of(&identity, &old), None, "the old key is revoked");
    let keys = registry.keys(&name("bob")).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].revoked_at.is_some() && keys[1].revoked_at.is_none());
    assert!(new.contains(&keys[1].key_id) && old.contains(&keys[0].key_id));
    // Still one client, whose orders stay its own.
    assert_eq!(registry.list().await.unwrap().len(), 1);
    assert_eq!(
        registry
            .rotate(&name("nobody"), std::time::Duration::ZERO)
            .await,
        Err(ClientError::NotFound(name("nobody")))
    );
    registry.revoke(&name("bob")).await.unwrap();
    assert_eq!(
        registry
            .rotate(&name("bob"), std::time::Duration::ZERO)
            .await,
        Err(ClientError::Revoked(name("bob")))
    );
    eventually("a revoked client's keys are all refused", || {
        client_of(&identity, &new).is_none()
    })
    .await;
}

/// With a grace both keys work, and the old one stops at the end of it, checked at the request
/// (no reload happens in between: the directory polls once a minute). One key revoked alone
/// leaves the other working.
#[tokio::test]
async fn a_grace_keeps_the_old_key_until_it_ends_and_one_key_can_be_revoked_alone() {
    let db = TestDb::create().await;
    let registry = registry(&db).await;
    let old = registry.add(&name("shop"), false).await.unwrap().reveal();
    let identity = notified_directory(registry.clone()).await;
    let new = registry
        .rotate(&name("shop"), std::time::Duration::from_secs(2))
        .await
        .unwrap()
        .reveal();
    eventually("the new key works", || client_of(&identity, &new).is_some()).await;
    assert_eq!(
        client_of(&identity, &old).as_deref(),
        Some("shop"),
        "in its grace"
    );
    let keys = registry.keys(&name("shop")).await.unwrap();
    assert!(keys[0].expires_at.is_some() && keys[0].revoked_at.is_none());
    assert!(keys[1].expires_at.is_none());
    eventually("the old key stops when its grace ends", || {
        client_of(&identity, &old).is_none()
    })
    .await;
    assert!(client_of(&identity, &new).is_some());

    // A third key; the second revoked alone; the third keeps working.
    let third = registry
        .rotate(&name("shop"), std::time::Duration::from_secs(3600))
        .await
        .unwrap()
        .reveal();
    let second_id = keys[1].key_id.clone();
    assert_eq!(
        registry.revoke_key(&name("shop"), &second_id).await,
        Ok(true)
    );
    assert_eq!(
        registry.revoke_key(&name("shop"), &second_id).await,
        Ok(false)
    );
    assert!(matches!(
        registry.revoke_key(&name("shop"), "0000000000000000").await,
        Err(ClientError::KeyNotFound { .. })
    ));
    eventually("the revoked key is refused", || {
        client_of(&identity, &new).is_none()
    })
    .await;
    assert_eq!(client_of(&identity, &third).as_deref(), Some("shop"));
}

/// Two operators rotating one client at once: both get a key, the rotations are taken in turn,
/// and exactly one key is in force afterwards (the later one), never two nor none.
#[tokio::test]
async fn two_rotations_at_once_leave_exactly_one_key_in_force() {
    let db = TestDb::create().await;
    let registry = registry(&db).await;
    let race = name("race");
    registry.add(&race, false).await.unwrap();
    for _ in 0..5 {
        let (a, b) = tokio::join!(
            registry.rotate(&race, std::time::Duration::ZERO),
            registry.rotate(&race, std::time::Duration::ZERO)
        );
        let (a, b) = (a.unwrap().reveal(), b.unwrap().reveal());
        let directory = KeyDirectory::load(registry.clone()).await.unwrap();
        let works = [&a, &b]
            .iter()
            .filter(|key| directory.authenticate(key).is_some())
            .count();
        assert_eq!(works, 1, "exactly one of the two new keys is in force");
        let now = chrono::Utc::now();
        let in_force = registry
            .keys(&name("race"))
            .await
            .unwrap()
            .iter()
            .filter(|key| key.in_force(now))
            .count();
        assert_eq!(in_force, 1);
    }
}

/// A service of the previous version reads only `api_clients`' key columns (its query, kept
/// here verbatim): during a rolling upgrade it accepts the client's newest key in force, and no
/// other: after a rotation the new key, after that key is revoked alone the one left, and a
/// client left with no key in force has no usable key there either.
#[tokio::test]
async fn the_previous_version_reading_api_clients_sees_the_newest_key_in_force() {
    let db = TestDb::create().await;
    let registry = registry(&db).await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let legacy = || async {
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT name, key_id, key_hash FROM api_clients WHERE revoked_at IS NULL",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let accepts = |rows: &[(String, String, Vec<u8>)], key: &str| {
        let parsed = api_keys::ApiKey::parse(key).unwrap();
        rows.iter()
            .any(|(_, id, hash)| id == parsed.id() && hash.as_slice() == &parsed.hash()[..])
    };
    let first = registry.add(&name("legacy"), false).await.unwrap().reveal();
    assert!(accepts(&legacy().await, &first));
    let second = registry
        .rotate(&name("legacy"), std::time::Duration::from_secs(3600))
        .await
        .unwrap()
        .reveal();
    let rows = legacy().await;
    assert!(accepts(&rows, &second) && !accepts(&rows, &first));
    let second_id = api_keys::ApiKey::parse(&second).unwrap().id().to_owned();
    registry
        .revoke_key(&name("legacy"), &second_id)
        .await
        .unwrap();
    let rows = legacy().await;
    assert!(
        accepts(&rows, &first) && !accepts(&rows, &second),
        "back to the one in force"
    );
    let first_id = api_keys::ApiKey::parse(&first).unwrap().id().to_owned();
    registry
        .revoke_key(&name("legacy"), &first_id)
        .await
        .unwrap();
    let rows = legacy().await;
    assert_eq!(rows.len(), 1, "the client is not revoked, only its keys");
    assert!(!accepts(&rows, &first) && !accepts(&rows, &second));
}

/// When a key was last used is written by the directory at its reloads, never per request.
#[tokio::test]
async fn last_use_is_recorded_at_the_next_reload() {
    let db = TestDb::create().await;
    let registry = registry(&db).await;
    let key = registry.add(&name("used"), false).await.unwrap().reveal();
    let directory = KeyDirectory::load(registry.clone()).await.unwrap();
    assert_eq!(
        registry.keys(&name("used")).await.unwrap()[0].last_used_at,
        None
    );
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    assert!(directory.authenticate(&key).is_some());
    assert_eq!(
        registry.keys(&name("used")).await.unwrap()[0].last_used_at,
        None,
        "not written per request"
    );
    directory.refresh().await.unwrap();
    let used = registry.keys(&name("used")).await.unwrap()[0].last_used_at;
    assert!(used.is_some_and(|at| at >= before), "{used:?}");
}
