//! # api-write
//!
//! The write API of buy-orders: `PUT /buy_order` places an order, `GET /healthcheck` says the
//! process is up. Built from an injected [`order_store::OrderWriter`], so the same routes run on
//! the in-memory store (all-in-one, tests) and on PostgreSQL.
//!
//! - [`request`]: the edge, where raw JSON and headers become a `PlaceBuyOrder` of parsed
//!   domain types, or a 422 naming every bad field.
//! - [`error`]: the one place where store and domain errors become HTTP answers.
//! - [`config`]: the binary's settings, from the environment.

pub mod config;
pub mod error;
pub mod openapi;
pub mod request;
pub mod start;

use std::sync::Arc;

use api_keys::{Caller, Identity};
use order_domain::{Currency, IdempotencyKey};
use order_store::{ConsistencyToken, OrderView, OrderWriter, Placement};
use serde::Serialize;
use service_kit::body::{json_body, MAX_BODY_BYTES};
use service_kit::metrics_doc::MetricDoc;
use service_kit::RateLimits;
use service_kit::{health_route, ApiError};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::request::{parse_place, RequestHeaders};

/// The write API's routes, as metric labels.
pub const ROUTES: &[(&str, &str)] = &[("/buy_order", "PUT")];

/// Observability of the write API: ready when the order store answers, which is exactly when it
/// can take orders. The broker is not part of it: with RabbitMQ down, orders are still accepted
/// (the relay publishes them when it is back), so an orchestrator must not pull the writers out
/// of service; the relay's own metrics (`relay_backlog_events`, `relay_lag_seconds`) show it.
pub fn ops(writer: Arc<dyn OrderWriter>) -> service_kit::Ops {
    let ops = service_kit::Ops::new("api-write", ROUTES, move || {
        let writer = writer.clone();
        async move {
            writer
                .ping()
                .await
                .map_err(|e| service_kit::NotReady::new("order store", e))
        }
    });
    service_kit::metrics_doc::describe(METRICS);
    order_store::describe_metrics();
    price_feed::describe_metrics();
    event_bus::describe_metrics();
    api_keys::describe_metrics();
    ops
}

/// The metrics the write API itself records.
pub const METRICS: &[MetricDoc] = &[
    MetricDoc::counter_by(
        "orders_placed_total",
        "Orders this process placed, by currency",
        &[
            &[("currency", "USD")],
            &[("currency", "EUR")],
            &[("currency", "GBP")],
        ],
    ),
    MetricDoc::counter(
        "btc_sold_satoshis_total",
        "Satoshis of the orders this process placed",
    ),
    MetricDoc::counter(
        "idempotent_replays_total",
        "Requests answered with the order first placed under their key",
    ),
    MetricDoc::counter(
        "cap_refusals_total",
        "Orders refused because they would cross the BTC cap",
    ),
    MetricDoc::counter(
        "price_unavailable_refusals_total",
        "Orders refused because no price could be had",
    ),
    MetricDoc::gauge(
        "btc_remaining",
        "BTC left under the cap, as committed (refreshed every 5 s)",
    ),
    MetricDoc::gauge("btc_cap", "The BTC cap itself, in BTC"),
];

/// How often the `btc_remaining` gauge is refreshed from the store.
const LEDGER_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps the `btc_remaining` and `btc_cap` gauges current (read from the store every few
/// seconds) until `shutdown`. Display figures for alerts, never money.
pub async fn watch_ledger(writer: Arc<dyn OrderWriter>, shutdown: service_kit::CancellationToken) {
    loop {
        if let Ok(remaining) = writer.remaining_btc().await {
            metrics::gauge!("btc_remaining")
                .set(remaining.to_btc_decimal().try_into().unwrap_or(0.0));
        }
        if let Ok(cap) = writer.btc_cap().await {
            metrics::gauge!("btc_cap").set(cap.to_btc_decimal().try_into().unwrap_or(0.0));
        }
        tokio::select! {
            _ = tokio::time::sleep(LEDGER_REFRESH) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// What the write routes need: where orders are placed, who may place them, how often.
#[derive(Clone)]
pub struct WriteApi {
    writer: Arc<dyn OrderWriter>,
    identity: Identity,
    limits: Arc<RateLimits>,
    metrics: Arc<OrderMetrics>,
}

/// The counters every placement updates, registered once: an order adds to them without a
/// registry lookup each (measured among the write path's costs, issue 26).
struct OrderMetrics {
    /// `orders_placed_total{currency}`, in [`Currency::ALL`]'s order.
    placed: [metrics::Counter; 3],
    sold: metrics::Counter,
    replays: metrics::Counter,
}

impl OrderMetrics {
    fn new() -> Self {
        service_kit::metrics_handle(); // the process's recorder first, or the handles go nowhere
        OrderMetrics {
            placed: Currency::ALL.map(
                |currency| metrics::counter!("orders_placed_total", "currency" => currency.code()),
            ),
            sold: metrics::counter!("btc_sold_satoshis_total"),
            replays: metrics::counter!("idempotent_replays_total"),
        }
    }

    fn placed(&self, currency: Currency) -> &metrics::Counter {
        // `ALL` lists every currency, so the position is always found.
        let index = Currency::ALL
            .iter()
            .position(|c| *c == currency)
            .unwrap_or(0);
        &self.placed[index]
    }
}

/// The answer to `PUT /buy_order`, the same for the request that placed the order and for every
/// replay of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PlaceBuyOrderResponse)]
pub struct PlaceResponse {
    /// The key the order was placed with.
    #[schema(value_type = String, format = Uuid)]
    pub idempotence_key: IdempotencyKey,
    /// The order.
    pub buy_order: OrderView,
}

impl WriteApi {
    /// Routes over `writer`: callers identified by `identity`, each limited by `limits`.
    pub fn new(writer: Arc<dyn OrderWriter>, identity: Identity, limits: Arc<RateLimits>) -> Self {
        WriteApi {
            writer,
            identity,
            limits,
            metrics: Arc::new(OrderMetrics::new()),
        }
    }

    /// `PUT /buy_order` and `GET /healthcheck`. Rejections still need
    /// [`service_kit::recover`] (done by [`service_kit::serve`]).
    pub fn routes(&self) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
        let api = self.clone();
        let caller = api_keys::http::caller(self.identity.clone(), self.limits.clone());
        let place = warp::path!("buy_order")
            .and(warp::put())
            .and(caller)
            .and(RequestHeaders::filter())
            .and(warp::header::optional::<String>(service_kit::REQUEST_ID))
            .and(json_body(MAX_BODY_BYTES))
            .and_then(move |caller, headers, request_id, body| {
                let api = api.clone();
                async move {
                    api.place(caller, headers, request_id, body)
                        .await
                        .map_err(warp::reject::custom)
                }
            });
        let health = health_route().map(Reply::into_response);
        let docs = service_kit::docs::routes(openapi::document());
        place.or(health).unify().or(docs).unify()
    }

    async fn place(
        &self,
        caller: Caller,
        headers: RequestHeaders,
        request_id: Option<String>,
        body: Box<serde_json::value::RawValue>,
    ) -> Result<Response, ApiError> {
        let command = parse_place(&body, &headers, caller.client)?;
        let placing = self.writer.place_for(command, request_id);
        let Placement {
            order,
            replayed,
            position,
        } = placing.await.map_err(|err| {
            error::log_refusal(&err);
            error::to_api_error(err)
        })?;
        if replayed {
            self.metrics.replays.increment(1);
            tracing::debug!(order_id = %order.order_id, "idempotent replay");
        } else {
            self.metrics.placed(order.currency).increment(1);
            self.metrics.sold.increment(order.satoshis.count());
            // DEBUG, not INFO: a line per order was what limited throughput (issue 26); the
            // event is the order's record, with its request id in its metadata.
            tracing::debug!(order_id = %order.order_id, currency = %order.currency,
                           amount = %order.amount, btc = %order.satoshis, rate = %order.rate,
                           "order placed");
        }
        let body = PlaceResponse {
            idempotence_key: order.idempotency_key,
            buy_order: OrderView::from(&order),
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), StatusCode::OK).into_response();
        if replayed {
            response.headers_mut().insert(
                "idempotent-replayed",
                warp::http::HeaderValue::from_static("true"),
            );
        }
        // Read-your-writes: api-read answers a read carrying this (same header, or
        // `consistency_token` in the query) only once it shows the order.
        if let Some(position) = position {
            let token = ConsistencyToken::at(position).to_string();
            if let Ok(value) = warp::http::HeaderValue::from_str(&token) {
                response
                    .headers_mut()
                    .insert(ConsistencyToken::HEADER, value);
            }
        }
        Ok(response)
    }
}
