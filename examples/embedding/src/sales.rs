//! The application's own read model, kept from the order log by order-store: BTC sold per
//! currency, in a table of its own next to the store's, read back through the projection's
//! session. And the upcaster for the history it imported from its old system.

use order_domain::cqrs_es::persist::SemanticVersionEventUpcaster;
use order_store::postgres::{PgProjection, Projection, Transaction};
use order_store::{async_trait, LoggedEvent, StoreError};

/// BTC sold per currency, in satoshis.
pub struct SoldPerCurrency;

#[async_trait]
impl Projection for SoldPerCurrency {
    fn name(&self) -> &str {
        "sold_per_currency"
    }

    fn tables(&self) -> Vec<String> {
        vec!["sold_per_currency".into()]
    }

    async fn create(&self, tx: &Transaction<'_>, _live: &str) -> Result<(), StoreError> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS sold_per_currency \
             (currency text PRIMARY KEY, satoshis bigint NOT NULL CHECK (satoshis >= 0))",
        )
        .await
        .map_err(StoreError::from_database)
    }

    async fn apply(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
        for placed in events.iter().filter_map(|e| e.event.as_placed()) {
            let satoshis = i64::try_from(placed.satoshis.count())
                .map_err(|e| StoreError::corrupt(format!("satoshis: {e}")))?;
            tx.execute(
                "INSERT INTO sold_per_currency VALUES ($1, $2) ON CONFLICT (currency) \
                 DO UPDATE SET satoshis = sold_per_currency.satoshis + excluded.satoshis",
                &[&placed.currency.code(), &satoshis],
            )
            .await
            .map_err(StoreError::from_database)?;
        }
        Ok(())
    }
}

/// The satoshis sold in `currency` so far, as projected.
pub async fn sold(
    projection: &PgProjection<SoldPerCurrency>,
    currency: order_domain::Currency,
) -> Result<i64, StoreError> {
    let session = projection.session().await?;
    let row = session
        .query_opt(
            "SELECT satoshis FROM sold_per_currency WHERE currency = $1",
            &[&currency.code()],
        )
        .await
        .map_err(StoreError::from_database)?;
    Ok(row.map_or(0, |row| row.get(0)))
}

/// The old system's orders were imported as `BuyOrderPlaced` 0.9.0, without `rate_source`:
/// this brings them to 1.0.0, saying where they came from.
pub fn imported_history() -> SemanticVersionEventUpcaster {
    SemanticVersionEventUpcaster::new(
        "BuyOrderPlaced",
        "1.0.0",
        Box::new(|mut payload| {
            payload["BuyOrderPlaced"]["rate_source"] = "imported".into();
            payload
        }),
    )
}
