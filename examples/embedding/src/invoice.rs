//! The application's own aggregate, on cqrs-es and postgres-es, in the `events` table of the
//! `public` schema: what a team that already runs cqrs-es on PostgreSQL has before it adds the
//! order store (in a schema of its own) to the same database.

use order_domain::cqrs_es::event_sink::EventSink;
use order_domain::cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// An invoice: issued once, with a total in cents.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Invoice {
    total_cents: Option<i64>,
}

/// Issue the invoice.
#[derive(Debug)]
pub struct Issue {
    /// The total, in cents.
    pub total_cents: i64,
}

/// What happened to an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InvoiceEvent {
    /// It was issued.
    InvoiceIssued {
        /// The total, in cents.
        total_cents: i64,
    },
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> String {
        "InvoiceIssued".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// Why an invoice refused a command.
#[derive(Debug, thiserror::Error)]
#[error("the invoice is already issued")]
pub struct AlreadyIssued;

impl Aggregate for Invoice {
    const TYPE: &'static str = "Invoice";
    type Command = Issue;
    type Event = InvoiceEvent;
    type Error = AlreadyIssued;
    type Services = ();

    async fn handle(
        &mut self,
        command: Issue,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AlreadyIssued> {
        if self.total_cents.is_some() {
            return Err(AlreadyIssued);
        }
        sink.write(
            InvoiceEvent::InvoiceIssued {
                total_cents: command.total_cents,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: InvoiceEvent) {
        match event {
            InvoiceEvent::InvoiceIssued { total_cents } => self.total_cents = Some(total_cents),
        }
    }
}

/// postgres-es's tables, as its README gives them: the application's own migration.
pub const TABLES: &str = "
CREATE TABLE IF NOT EXISTS public.events (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL, event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE TABLE IF NOT EXISTS public.snapshots (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL, last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id));";
