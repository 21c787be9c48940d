//! An in-memory read table.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use order_domain::{ClientId, OrderId};
use parking_lot::RwLock;

use crate::consistency::AppliedWatch;
use crate::error::{ReadError, StoreError};
use crate::log::{LoggedEvent, Position, UnreadableLogged};
use crate::read_model::{ReadModel, ReadModelWriter};
use crate::view::{OrderView, Page, PageRequest, Scope};

/// The read table in memory: rows keyed by log position (the page order), an index by id, one
/// by client, and the checkpoint. A page is a range scan of the position map (or of the
/// client's positions), newest first.
#[derive(Default)]
pub struct MemReadModel {
    state: RwLock<State>,
    /// The checkpoint, for reads waiting on a consistency token.
    applied: AppliedWatch,
}

#[derive(Default)]
struct State {
    rows: BTreeMap<Position, OrderView>,
    positions: HashMap<OrderId, (Position, ClientId)>,
    by_client: HashMap<ClientId, BTreeSet<Position>>,
    checkpoint: Position,
    parked: BTreeMap<Position, UnreadableLogged>,
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
        for logged in events {
            if logged.position <= state.checkpoint {
                continue; // already applied
            }
            let state = &mut *state;
            state.checkpoint = logged.position;
            let Some(placed) = logged.event.as_placed() else {
                continue; // not an order: nothing to show
            };
            if let Entry::Vacant(slot) = state.positions.entry(placed.order_id) {
                slot.insert((logged.position, placed.client_id.clone()));
                state.rows.insert(logged.position, OrderView::from(placed));
                state
                    .by_client
                    .entry(placed.client_id.clone())
                    .or_default()
                    .insert(logged.position);
            }
        }
        self.applied.advance(state.checkpoint);
        Ok(())
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
        let before = match request.after {
            None => None,
            Some(id) => Some(
                state
                    .positions
                    .get(&id)
                    .filter(|(_, owner)| scope.sees(owner))
                    .map(|(position, _)| *position)
                    .ok_or(ReadError::UnknownReference(id))?,
            ),
        };
        let bound = before.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let size = request.size.get();
        let positions: Vec<Position> = match scope {
            Scope::All => state
                .rows
                .range((std::ops::Bound::Unbounded, bound))
                .rev()
                .take(size)
                .map(|(position, _)| *position)
                .collect(),
            Scope::Client(client) => state.by_client.get(client).map_or_else(Vec::new, |own| {
                own.range((std::ops::Bound::Unbounded, bound))
                    .rev()
                    .take(size)
                    .copied()
                    .collect()
            }),
        };
        let rows = positions
            .iter()
            .filter_map(|position| state.rows.get(position).cloned())
            .collect();
        Ok(Page::new(rows))
    }

    async fn get(&self, id: OrderId, scope: &Scope) -> Result<Option<OrderView>, ReadError> {
        let state = self.state.read();
        Ok(state
            .positions
            .get(&id)
            .filter(|(_, owner)| scope.sees(owner))
            .and_then(|(position, _)| state.rows.get(position))
            .cloned())
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
