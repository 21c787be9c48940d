//! An in-memory read table.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use order_domain::{BuyOrderPlaced, ClientId, OrderId};
use parking_lot::RwLock;

use super::compact::{Chunked, Names};
use crate::consistency::AppliedWatch;
use crate::error::{ReadError, StoreError};
use crate::log::{LoggedEvent, Position, UnreadableLogged};
use crate::read_model::{ReadModel, ReadModelWriter};
use crate::view::{OrderView, Page, PageRequest, Scope};

/// The read table in memory: rows in log-position order (the page order, since positions are
/// applied in increasing order), an index by id, each client's rows, and the checkpoint. A page
/// walks the rows (or the client's) back from the reference, newest first. Rows are kept
/// compact and never moved (see `memory/compact.rs`), so a page costs the same at any size.
#[derive(Default)]
pub struct MemReadModel {
    state: RwLock<State>,
    /// The checkpoint, for reads waiting on a consistency token.
    applied: AppliedWatch,
}

#[derive(Default)]
struct State {
    rows: Chunked<Row>,
    /// Each order's row (its index in `rows`).
    ids: HashMap<OrderId, u32>,
    clients: Names<ClientId>,
    /// Each client's rows, oldest first, by the client's name in `clients`.
    by_client: Vec<Vec<u32>>,
    checkpoint: Position,
    parked: BTreeMap<Position, UnreadableLogged>,
}

/// One order of the table.
struct Row {
    view: OrderView,
    /// The owner's name in `State::clients`.
    client: u32,
}

impl State {
    /// The row of order `id`, if `scope` sees it.
    fn row_of(&self, id: &OrderId, scope: &Scope) -> Option<(u32, &Row)> {
        let index = *self.ids.get(id)?;
        let row = self.rows.get(usize::try_from(index).ok()?)?;
        let visible = match scope {
            Scope::All => true,
            Scope::Client(client) => self.clients.find(client) == Some(row.client),
        };
        visible.then_some((index, row))
    }

    fn add(&mut self, placed: &BuyOrderPlaced) -> Result<(), StoreError> {
        let Entry::Vacant(slot) = self.ids.entry(placed.order_id) else {
            return Ok(()); // already shown
        };
        let full = || StoreError::corrupt("the in-memory read table is full (2^32 orders)");
        let index = u32::try_from(self.rows.len()).map_err(|_| full())?;
        let client = self.clients.intern(&placed.client_id).map_err(|_| full())?;
        let client_index = usize::try_from(client).map_err(|_| full())?;
        if self.by_client.len() <= client_index {
            self.by_client.resize_with(client_index + 1, Vec::new);
        }
        slot.insert(index);
        self.rows.push(Row {
            view: OrderView::from(placed),
            client,
        });
        self.by_client[client_index].push(index);
        Ok(())
    }
}

impl MemReadModel {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many orders the table holds.
    pub fn len(&self) -> usize {
        self.state.read().rows.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ReadModelWriter for MemReadModel {
    async fn apply(&self, events: &[LoggedEvent]) -> Result<(), StoreError> {
        let mut state = self.state.write();
        let mut outcome = Ok(());
        for logged in events {
            if logged.position <= state.checkpoint {
                continue; // already applied
            }
            if let Some(placed) = logged.event.as_placed() {
                outcome = state.add(placed);
                if outcome.is_err() {
                    break;
                }
            } // else not an order: nothing to show
            state.checkpoint = logged.position;
        }
        self.applied.advance(state.checkpoint);
        outcome
    }

    async fn checkpoint(&self) -> Result<Position, StoreError> {
        Ok(self.state.read().checkpoint)
    }

    async fn park(&self, unreadable: &[UnreadableLogged]) -> Result<(), StoreError> {
        let mut state = self.state.write();
        for event in unreadable {
            state
                .parked
                .entry(event.position)
                .or_insert_with(|| event.clone());
            state.checkpoint = state.checkpoint.max(event.position);
        }
        self.applied.advance(state.checkpoint);
        Ok(())
    }

    async fn parked(&self) -> Result<Vec<UnreadableLogged>, StoreError> {
        Ok(self.state.read().parked.values().cloned().collect())
    }
}

#[async_trait]
impl ReadModel for MemReadModel {
    async fn page(&self, request: PageRequest, scope: &Scope) -> Result<Page, ReadError> {
        let state = self.state.read();
        // The rows before the reference's (all rows without one), newest first.
        let before = match request.after {
            None => usize::MAX,
            Some(id) => state
                .row_of(&id, scope)
                .and_then(|(index, _)| usize::try_from(index).ok())
                .ok_or(ReadError::UnknownReference(id))?,
        };
        let size = request.size.get();
        let rows = match scope {
            Scope::All => state
                .rows
                .range(0, before)
                .rev()
                .take(size)
                .map(|row| row.view.clone())
                .collect(),
            Scope::Client(client) => {
                let own = state
                    .clients
                    .find(client)
                    .and_then(|name| state.by_client.get(usize::try_from(name).ok()?))
                    .map_or(&[][..], Vec::as_slice);
                let end =
                    own.partition_point(|index| usize::try_from(*index).is_ok_and(|i| i < before));
                own[..end]
                    .iter()
                    .rev()
                    .take(size)
                    .filter_map(|index| state.rows.get(usize::try_from(*index).ok()?))
                    .map(|row| row.view.clone())
                    .collect()
            }
        };
        Ok(Page::new(rows))
    }

    async fn get(&self, id: OrderId, scope: &Scope) -> Result<Option<OrderView>, ReadError> {
        let state = self.state.read();
        Ok(state.row_of(&id, scope).map(|(_, row)| row.view.clone()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn wait_applied(
        &self,
        position: Position,
        within: std::time::Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.applied.wait(position, within).await)
    }
}
