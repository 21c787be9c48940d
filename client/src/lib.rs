//! # buy-orders-client
//!
//! A Rust client of the buy-orders REST APIs, for applications that place orders and show them:
//! the retry of a payment-like call done once, correctly, rather than by every integrator.
//!
//! | module | what it holds |
//! |---|---|
//! | `client` | [`Client`], [`ClientBuilder`]: placing, reading, paging as a `Stream` |
//! | `model` | [`NewOrder`], [`Placed`], [`BuyOrder`], [`Page`], [`ConsistencyToken`] |
//! | `error` | [`Error`], [`ErrorCode`]: the API's codes, or the network's failure |
//! | `retry` | which failures are retried, and the waits between attempts |
//!
//! What it promises:
//! - **One order per purchase.** [`Client::place`] sends every attempt under the same
//!   idempotence key (yours, or one it makes), so a retry after a lost answer replays the
//!   stored order instead of buying again. It retries only what may pass (no answer, 503 —
//!   `outcome_unknown` included — and 429), after `Retry-After` when the server gives one,
//!   and stops at a deadline with the key in the error, never with a new one.
//! - **Read your writes.** Reads carry the consistency token of the newest order this client
//!   (or a clone of it) placed, so a list right after a placement shows it.
//! - **Exact money.** Amounts are the domain's types (`FiatAmount`, `BtcRate`, `Satoshis`), read
//!   from their decimal text: no `f64` anywhere.
//!
//! ```no_run
//! use buy_orders_client::{Client, NewOrder};
//! use futures::TryStreamExt;
//! use order_domain::{Currency, FiatAmount};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder(std::env::var("BUY_ORDERS_API_KEY")?)
//!     .write_url("http://127.0.0.1:8777")
//!     .read_url("http://127.0.0.1:8778")
//!     .build()?;
//! let placed = client
//!     .place(NewOrder::new(Currency::EUR, FiatAmount::parse("25.00")?))
//!     .await?;
//! println!("bought {} BTC", placed.order.btc_amount);
//! // Read-your-writes: the first page already shows it.
//! let newest: Vec<_> = client.list(10).try_collect().await?;
//! assert_eq!(newest[0].id, placed.order.id);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod client;
mod error;
mod model;
mod retry;

pub use client::{Client, ClientBuilder};
pub use error::{Error, ErrorCode};
pub use model::{BuyOrder, ConsistencyToken, NewOrder, Page, Placed};
/// The domain's value types used in requests and answers, re-exported.
pub use order_domain::{BtcRate, Currency, FiatAmount, IdempotencyKey, OrderId, Satoshis};
