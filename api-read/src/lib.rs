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

pub mod config;
mod error;
pub mod openapi;
mod query;

use std::sync::Arc;

use api_keys::{Caller, Identity};
use order_domain::OrderId;
use order_store::{ReadModel, Scope};
use service_kit::{health_route, ApiError, RateLimits};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

pub use query::parse_page_request;

/// The read API's routes, as metric labels.
pub const ROUTES: &[(&str, &str)] = &[("/buy_orders", "GET"), ("/buy_orders/:id", "GET")];

/// Observability of the read API: ready when the read table answers.
pub fn ops(model: Arc<dyn ReadModel>) -> service_kit::Ops {
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

/// What the read routes need: the read table, who may read it, how often.
#[derive(Clone)]
pub struct ReadApi {
    model: Arc<dyn ReadModel>,
    identity: Identity,
    limits: Arc<RateLimits>,
}

impl ReadApi {
    /// Routes over `model`: callers identified by `identity` see their own orders (an admin, or
    /// anyone with authentication off, sees all), each limited by `limits`.
    pub fn new(model: Arc<dyn ReadModel>, identity: Identity, limits: Arc<RateLimits>) -> Self {
        ReadApi {
            model,
            identity,
            limits,
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
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and_then(move |scope: Scope, query: String| {
                let api = api.clone();
                async move { api.list(&scope, &query).await.map_err(warp::reject::custom) }
            });
        let api = self.clone();
        let one = warp::path!("buy_orders" / String)
            .and(warp::get())
            .and(self.scope())
            .and_then(move |id: String, scope: Scope| {
                let api = api.clone();
                async move { api.one(&scope, &id).await.map_err(warp::reject::custom) }
            });
        let health = health_route().map(Reply::into_response);
        let docs = service_kit::docs::routes(openapi::document());
        list.or(one).unify().or(health).unify().or(docs).unify()
    }

    async fn list(&self, scope: &Scope, query: &str) -> Result<Response, ApiError> {
        let request = parse_page_request(query)?;
        let page = self
            .model
            .page(request, scope)
            .await
            .map_err(error::to_api_error)?;
        Ok(warp::reply::json(&page).into_response())
    }

    async fn one(&self, scope: &Scope, id: &str) -> Result<Response, ApiError> {
        let id = OrderId::parse(id).map_err(|e| ApiError::validation(format!("order id: {e}")))?;
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
