//! The write API's OpenAPI document, generated from the code's types (utoipa). Served at
//! `GET /openapi.json` and kept in the repository (`openapi/api-write.json`; a test fails when
//! they differ).

use order_store::OrderView;
use service_kit::docs::{BearerAuth, ErrorBody, ErrorDetail, FieldProblem};
use utoipa::{OpenApi, ToSchema};

use crate::PlaceResponse;

/// The body of `PUT /buy_order`.
#[derive(ToSchema)]
#[schema(as = PlaceBuyOrderRequest)]
pub struct PlaceRequest {
    /// The fiat currency paid.
    #[schema(pattern = "^(USD|EUR|GBP)$", example = "USD")]
    pub currency: String,
    /// The amount paid: `0 < amount < 1000000000`, at most 2 decimals. A JSON number is accepted
    /// too and read exactly (never through floating point).
    #[schema(
        pattern = r"^(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(\.[0-9]{1,2})?)$",
        example = "123.45"
    )]
    pub amount: String,
    /// The idempotence key. It may come in the `Idempotency-Key` header instead (if both are
    /// sent they must be equal).
    #[schema(format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub idempotence_key: String,
}

/// Places an order for the client whose API key is sent. (Only where the service runs with
/// AUTH=off, for local use, is there no key: the `X-Client-Id` header then names the client.)
#[utoipa::path(put, path = "/buy_order", tag = "write",
    security(("api_key" = [])),
    request_body(content = PlaceRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Placed, or replayed (header `Idempotent-Replayed: true`)", body = PlaceResponse,
            headers(
                ("Consistency-Token" = String, description = "Opaque (`ct1_…`): give it back to the read API (same header, or `consistency_token`) to read this order as soon as it is served: read-your-writes"),
                ("Idempotent-Replayed" = String, description = "`true` when an earlier request with the same key placed the order"),
            )),
        (status = 400, description = "`invalid_json`, `invalid_header`, `ambiguous_credentials` (more than one `Authorization` or `X-Client-Id` header)", body = ErrorBody),
        (status = 401, description = "`unauthenticated`: no valid API key (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 409, description = "`btc_cap_exceeded`: nothing stored", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over 16 KiB", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`validation_failed`, `idempotency_key_reused` (keys are scoped to the caller)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over this client's rate; `too_many_failures`: too many failed authentications from this address (`AUTH_FAILURES_PER_S`); `Retry-After`", body = ErrorBody),
        (status = 503, description = "`price_unavailable`, `unavailable`, `keys_unavailable`: nothing stored; `outcome_unknown`, `timeout`: retry with the same key; `Retry-After`", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn put_buy_order() {}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "buy-orders write API",
        description = "Buy bitcoin with fiat at the market rate. Every order belongs to the client whose API key placed it."
    ),
    modifiers(&BearerAuth),
    paths(
        put_buy_order,
        service_kit::docs::healthcheck,
        service_kit::docs::readyz,
        service_kit::docs::metrics,
        service_kit::docs::openapi_json
    ),
    components(schemas(
        PlaceRequest,
        PlaceResponse,
        OrderView,
        ErrorBody,
        ErrorDetail,
        FieldProblem
    ))
)]
pub struct WriteApiDoc;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(WriteApiDoc::openapi()).expect("an OpenAPI document serializes")
}
