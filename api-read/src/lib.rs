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
//! an order appears here shortly after `PUT /buy_order` answers (see the README for the lag).

pub mod config;
mod error;
pub mod openapi;
mod query;

use std::sync::Arc;

use order_domain::OrderId;
use order_store::ReadModel;
use service_kit::{health_route, ApiError};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

pub use query::parse_page_request;

/// The read API's routes, as metric labels.
pub const ROUTES: &[(&str, &str)] = &[
    ("/buy_orders", "GET"),
    ("/buy_orders/:id", "GET"),
    ("/healthcheck", "GET"),
    ("/readyz", "GET"),
    ("/metrics", "GET"),
    ("/openapi.json", "GET"),
];

/// Observability of the read API: ready when the read table answers.
pub fn ops(model: Arc<dyn ReadModel>) -> service_kit::Ops {
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

/// What the read routes need: the read table.
#[derive(Clone)]
pub struct ReadApi {
    model: Arc<dyn ReadModel>,
}

impl ReadApi {
    /// Routes over `model`.
    pub fn new(model: Arc<dyn ReadModel>) -> Self {
        ReadApi { model }
    }

    /// `GET /buy_orders`, `GET /buy_orders/<id>` and `GET /healthcheck`. Rejections still need
    /// [`service_kit::recover`] (done by [`service_kit::serve`]).
    pub fn routes(&self) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
        let api = self.clone();
        let list = warp::path!("buy_orders")
            .and(warp::get())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and_then(move |query: String| {
                let api = api.clone();
                async move { api.list(&query).await.map_err(warp::reject::custom) }
            });
        let api = self.clone();
        let one = warp::path!("buy_orders" / String)
            .and(warp::get())
            .and_then(move |id: String| {
                let api = api.clone();
                async move { api.one(&id).await.map_err(warp::reject::custom) }
            });
        let health = health_route().map(Reply::into_response);
        let docs = service_kit::docs::openapi_route(openapi::document());
        list.or(one).unify().or(health).unify().or(docs).unify()
    }

    async fn list(&self, query: &str) -> Result<Response, ApiError> {
        let request = parse_page_request(query)?;
        let page = self
            .model
            .page(request)
            .await
            .map_err(error::to_api_error)?;
        Ok(warp::reply::json(&page).into_response())
    }

    async fn one(&self, id: &str) -> Result<Response, ApiError> {
        let id = OrderId::parse(id).map_err(|e| ApiError::validation(format!("order id: {e}")))?;
        match self.model.get(id).await.map_err(error::to_api_error)? {
            Some(order) => Ok(warp::reply::json(&order).into_response()),
            None => Err(ApiError::not_found(format!("no order {id}"))),
        }
    }
}
