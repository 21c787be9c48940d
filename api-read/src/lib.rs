//! # api-read
//!
//! The read API of buy-orders, served from the read table only (never the event store):
//!
//! - `GET /buy_orders?last_reference=<id>&page_size=<1..=100>`: orders newest first, keyset
//!   pagination by the previous page's last id.
//! - `GET /buy_orders/<id>`: one order.
//! - `GET /healthcheck`.
//!
//! Built from an injected [`order_store::ReadModel`]. The read side is eventually consistent:
//! an order appears here shortly after `PUT /buy_order` answers (the lag: docs/operations.md, and bench/RESULTS.md for figures).
//! Read-your-writes on request: both order routes take the `Consistency-Token` a `PUT` answered
//! with (header, or `consistency_token` in the query) and answer only once the read table has
//! applied it, waiting up to [`ReadApi::with_consistency_wait`], else 503 `not_yet_consistent`.

pub mod config;
mod error;
pub mod openapi;
mod query;

use std::sync::Arc;

use std::time::Duration;

use api_keys::{Caller, Identity};
use order_domain::OrderId;
use order_store::{ConsistencyToken, ReadModel, Scope};
use service_kit::{health_route, ApiError, RateLimits};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

pub use query::{parse_consistency_token, parse_page_request, TOKEN_PARAMETER};

/// The read API's routes, as metric labels.
pub const ROUTES: &[(&str, &str)] = &[("/buy_orders", "GET"), ("/buy_orders/:id", "GET")];

/// Observability of the read API: ready when the read table answers.
pub fn ops(model: Arc<dyn ReadModel>) -> service_kit::Ops {
    service_kit::metrics_doc::describe(METRICS);
    order_store::describe_metrics();
    api_keys::describe_metrics();
    service_kit::Ops::new("api-read", ROUTES, move || {
        let model = model.clone();
        async move {
            model
                .ping()
                .await
                .map_err(|e| service_kit::NotReady::new("read table", e))
        }
    })
}

/// The metrics the read API itself records.
pub const METRICS: &[service_kit::metrics_doc::MetricDoc] =
    &[service_kit::metrics_doc::MetricDoc::counter(
        "consistency_waits_expired_total",
        "Reads whose consistency token the read table had not applied within READ_CONSISTENCY_WAIT_MS (503 not_yet_consistent)",
    )];

/// What the read routes need: the read table, who may read it, how often.
#[derive(Clone)]
pub struct ReadApi {
    model: Arc<dyn ReadModel>,
    identity: Identity,
    limits: Arc<RateLimits>,
    consistency_wait: Duration,
}

/// How long a read waits for its consistency token by default (`READ_CONSISTENCY_WAIT_MS`).
pub const CONSISTENCY_WAIT: Duration = Duration::from_secs(2);

impl ReadApi {
    /// Routes over `model`: callers identified by `identity` see their own orders (an admin, or
    /// anyone with authentication off, sees all), each limited by `limits`.
    pub fn new(model: Arc<dyn ReadModel>, identity: Identity, limits: Arc<RateLimits>) -> Self {
        ReadApi {
            model,
            identity,
            limits,
            consistency_wait: CONSISTENCY_WAIT,
        }
    }

    /// Sets how long a read given a consistency token waits for the read table to apply it
    /// before answering 503 `not_yet_consistent` (keep it under the HTTP request deadline).
    pub fn with_consistency_wait(mut self, wait: Duration) -> Self {
        self.consistency_wait = wait;
        self
    }

    /// Returns once the read table has applied `token` (none: at once), or the error to answer.
    async fn consistent_with(&self, token: Option<ConsistencyToken>) -> Result<(), ApiError> {
        let Some(token) = token else {
            return Ok(());
        };
        let wait = self
            .model
            .wait_applied(token.position(), self.consistency_wait);
        match wait.await {
            Ok(true) => Ok(()),
            Ok(false) => {
                metrics::counter!("consistency_waits_expired_total").increment(1);
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_yet_consistent",
                    format!(
                        "the read table has not yet applied your write (waited {} ms); retry \
                         with the same token",
                        self.consistency_wait.as_millis()
                    ),
                )
                .retry_after(1))
            }
            Err(err) => Err(error::to_api_error(err.into())),
        }
    }

    /// Who calls, as a scope: the filter every order route starts with.
    fn scope(&self) -> impl Filter<Extract = (Scope,), Error = Rejection> + Clone {
        api_keys::http::caller(self.identity.clone(), self.limits.clone())
            .map(|caller: Caller| Scope::from(&caller))
    }

    /// `GET /buy_orders`, `GET /buy_orders/<id>` and `GET /healthcheck`. Rejections still need
    /// [`service_kit::recover`] (done by [`service_kit::serve`]).
    pub fn routes(&self) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
        let api = self.clone();
        let list = warp::path!("buy_orders")
            .and(warp::get())
            .and(self.scope())
            .and(raw_query())
            .and(warp::header::optional::<String>(ConsistencyToken::HEADER))
            .and_then(move |scope: Scope, query: String, token: Option<String>| {
                let api = api.clone();
                async move {
                    api.list(&scope, &query, token.as_deref())
                        .await
                        .map_err(warp::reject::custom)
                }
            });
        let api = self.clone();
        let one = warp::path!("buy_orders" / String)
            .and(warp::get())
            .and(self.scope())
            .and(raw_query())
            .and(warp::header::optional::<String>(ConsistencyToken::HEADER))
            .and_then(
                move |id: String, scope: Scope, query: String, token: Option<String>| {
                    let api = api.clone();
                    async move {
                        api.one(&scope, &id, &query, token.as_deref())
                            .await
                            .map_err(warp::reject::custom)
                    }
                },
            );
        let health = health_route().map(Reply::into_response);
        let docs = service_kit::docs::routes(openapi::document());
        list.or(one).unify().or(health).unify().or(docs).unify()
    }

    async fn list(
        &self,
        scope: &Scope,
        query: &str,
        token: Option<&str>,
    ) -> Result<Response, ApiError> {
        let parameters = query::parameters(query)?;
        let request = query::page_request(&parameters)?;
        self.consistent_with(query::consistency_token(&parameters, token)?)
            .await?;
        let page = self
            .model
            .page(request, scope)
            .await
            .map_err(error::to_api_error)?;
        Ok(warp::reply::json(&page).into_response())
    }

    async fn one(
        &self,
        scope: &Scope,
        id: &str,
        query: &str,
        token: Option<&str>,
    ) -> Result<Response, ApiError> {
        let id = OrderId::parse(id).map_err(|e| ApiError::validation(format!("order id: {e}")))?;
        self.consistent_with(parse_consistency_token(query, token)?)
            .await?;
        // Another client's order answers exactly as one that does not exist.
        match self
            .model
            .get(id, scope)
            .await
            .map_err(error::to_api_error)?
        {
            Some(order) => Ok(warp::reply::json(&order).into_response()),
            None => Err(ApiError::not_found(format!("no order {id}"))),
        }
    }
}

/// The query string, or an empty one.
fn raw_query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}
