//! OpenAPI pieces every service shares: the error body's schema and serving the document.

use serde_json::Value;
use utoipa::ToSchema;
use warp::{Filter, Rejection, Reply};

/// The error body, `{"error":{"code":…,"message":…}}`, as documented (what [`crate::ApiError`]
/// renders).
#[derive(ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error: a stable code, a message, and fields some codes add.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `validation_failed`, `btc_cap_exceeded`, …
    pub code: String,
    /// For people: what went wrong and how to fix it.
    pub message: String,
    /// `validation_failed`: each bad field and the rule it breaks.
    pub fields: Option<Vec<FieldProblem>>,
    /// `btc_cap_exceeded`: BTC still available under the cap.
    #[schema(pattern = r"^[0-9]+\.[0-9]{8}$")]
    pub remaining_btc: Option<String>,
    /// `btc_cap_exceeded`: BTC the refused order asked for.
    #[schema(pattern = r"^[0-9]+\.[0-9]{8}$")]
    pub requested_btc: Option<String>,
}

/// A field that broke a rule.
#[derive(ToSchema)]
pub struct FieldProblem {
    /// The field (or header) name.
    pub field: String,
    /// The rule it broke.
    pub message: String,
}

/// Adds the `api_key` security scheme (`Authorization: Bearer <key>`) that the client routes
/// name with `security(("api_key" = []))`. Use as `#[openapi(modifiers(&BearerAuth))]`.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key from `buy-orders clients add <name>` (`bo_…`). Required unless the \
                 service runs with AUTH=off.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// The ops routes' entries in each service's document (utoipa reads them from these stubs).
#[utoipa::path(get, path = "/healthcheck", tag = "ops",
    summary = "Is the process alive",
    description = "200 `{\"status\":\"ok\"}` while the process serves. Checks no dependency: `/readyz` does.",
    responses((status = 200, description = "Alive")))]
#[allow(dead_code)]
pub fn healthcheck() {}

/// `GET /readyz`'s entry.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    summary = "Can the service do its job",
    description = "200 when every dependency the service needs answers (the write API: the order store; the read API: the read table), decided within 0.8 s; otherwise 503 `unavailable` naming the dependency.",
    responses(
    (status = 200, description = "Every backend the service needs answers"),
    (status = 503, description = "`unavailable`", body = ErrorBody)))]
#[allow(dead_code)]
pub fn readyz() {}

/// `GET /metrics`'s entry.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    summary = "Prometheus metrics",
    description = "Every metric of the process in Prometheus's text format, each with its `# HELP` line.",
    responses(
    (status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
#[allow(dead_code)]
pub fn metrics() {}

/// `GET /openapi.json`'s entry.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    summary = "This OpenAPI document",
    description = "The service's OpenAPI 3.1 document, as `/docs` renders it.",
    responses((status = 200, description = "This document")))]
#[allow(dead_code)]
pub fn openapi_json() {}

/// `GET /openapi.json`: the service's document.
///
/// The document is serialized once, here, and shared: the route is cloned with the service for
/// every connection, and a `serde_json::Value` captured by value was a deep copy of the whole
/// document per connection (~100 KB each, measured under 2,000 slow connections).
pub fn openapi_route(
    document: Value,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let body =
        bytes::Bytes::from(serde_json::to_vec(&document).expect("a JSON value always serializes"));
    warp::path!("openapi.json").and(warp::get()).map(move || {
        let mut response = warp::reply::Response::new(body.clone().into());
        response.headers_mut().insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static("application/json"),
        );
        response
    })
}

/// A service's documentation routes: `GET /openapi.json` (its `document`) and `GET /docs`
/// (Swagger UI for it).
pub fn routes(
    document: Value,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    openapi_route(document).or(swagger_ui()).unify()
}

/// The Content-Security-Policy of the documentation page: everything from this service, nothing
/// inline but styles (Swagger UI sets element styles), no framing. The page works behind a
/// firewall and under this policy because every asset is served by the service itself.
pub const DOCS_CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /docs`: Swagger UI for the service's own `/openapi.json`, with "Try it out" (the
/// document's `api_key` scheme is `Authorization: Bearer`). Its assets are vendored in the binary
/// (utoipa-swagger-ui's `vendored` feature: no CDN, no download at build time) and served from
/// `/docs/…`, each under [`DOCS_CSP`].
pub fn swagger_ui() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let config = std::sync::Arc::new(
        utoipa_swagger_ui::Config::from("/openapi.json")
            .try_it_out_enabled(true)
            .persist_authorization(false),
    );
    warp::path("docs")
        .and(warp::get())
        .and(warp::path::full())
        .and(warp::path::tail())
        .map(move |full: warp::path::FullPath, tail: warp::path::Tail| {
            use warp::http::{header, HeaderValue, StatusCode};
            if full.as_str() == "/docs" {
                let mut response = warp::reply::Response::new(Default::default());
                *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
                response
                    .headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/docs/"));
                return response;
            }
            let mut response = match utoipa_swagger_ui::serve(tail.as_str(), config.clone()) {
                Ok(Some(file)) => {
                    let mut response = warp::reply::Response::new(file.bytes.into_owned().into());
                    if let Ok(kind) = HeaderValue::from_str(&file.content_type) {
                        response.headers_mut().insert(header::CONTENT_TYPE, kind);
                    }
                    response
                }
                Ok(None) => {
                    crate::ApiError::not_found("no such documentation file").into_response()
                }
                Err(err) => {
                    tracing::error!(%err, "documentation page failed");
                    crate::ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the server failed to handle the request",
                    )
                    .into_response()
                }
            };
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCS_CSP),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        })
}
