//! An in-memory read table.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use order_domain::{BuyOrderEvent, OrderId};
use parking_lot::RwLock;

use crate::error::{ReadError, StoreError};
use crate::log::{LoggedEvent, Position};
use crate::read_model::{ReadModel, ReadModelWriter};
use crate::view::{OrderView, Page, PageRequest};

/// The read table in memory: rows keyed by log position (the page order), an index by id, and
/// the checkpoint. A page is a range scan of the position map, newest first.
#[derive(Default)]
pub struct MemReadModel {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    rows: BTreeMap<Position, OrderView>,
    positions: HashMap<OrderId, Position>,
    checkpoint: Position,
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
            let BuyOrderEvent::BuyOrderPlaced(placed) = &logged.event;
            let state = &mut *state;
            if let Entry::Vacant(slot) = state.positions.entry(placed.order_id) {
                slot.insert(logged.position);
                state.rows.insert(logged.position, OrderView::from(placed));
            }
            state.checkpoint = logged.position;
        }
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Position, StoreError> {
        Ok(self.state.read().checkpoint)
    }
}

#[async_trait]
impl ReadModel for MemReadModel {
    async fn page(&self, request: PageRequest) -> Result<Page, ReadError> {
        let state = self.state.read();
        let before = match request.after {
            None => None,
            Some(id) => Some(
                *state
                    .positions
                    .get(&id)
                    .ok_or(ReadError::UnknownReference(id))?,
            ),
        };
        let rows = match before {
            None => state.rows.range(..),
            Some(bound) => state.rows.range(..bound),
        };
        let rows = rows
            .rev()
            .take(request.size.get())
            .map(|(_, row)| row.clone())
            .collect();
        Ok(Page::new(rows))
    }

    async fn get(&self, id: OrderId) -> Result<Option<OrderView>, ReadError> {
        let state = self.state.read();
        Ok(state
            .positions
            .get(&id)
            .and_then(|position| state.rows.get(position))
            .cloned())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
