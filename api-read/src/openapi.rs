//! The read API's OpenAPI document, generated from the code's types (utoipa). Served at
//! `GET /openapi.json` and kept in the repository (`openapi/api-read.json`; a test fails when
//! they differ).

use order_store::{OrderView, Page};
use service_kit::docs::{BearerAuth, ErrorBody, ErrorDetail, FieldProblem};
use utoipa::OpenApi;

#[utoipa::path(get, path = "/buy_orders", tag = "read",
    summary = "The caller's orders, newest first",
    description = "A page of the caller's orders (an admin's: every order), newest first. Pass the previous page's `last_reference` for the next page; every page costs the same however deep (keyset pagination).",
    security(("api_key" = [])),
    params(
        ("last_reference" = Option<String>, Query, pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$", description = "The previous page's `last_reference`; absent or empty: the first page"),
        ("page_size" = Option<u16>, Query, minimum = 1, maximum = 100, description = "Rows per page, 1..=100, default 10"),
        ("Consistency-Token" = Option<String>, Header, pattern = r"^ct1_[0-9a-f]{16}$", description = "Read your own write: the `Consistency-Token` of a `PUT /buy_order` answer, unchanged. The answer waits until the read table shows that write (at most `READ_CONSISTENCY_WAIT_MS`), else 503 `not_yet_consistent`"),
        ("consistency_token" = Option<String>, Query, pattern = r"^ct1_[0-9a-f]{16}$", description = "The same token as a query parameter (for links); if both are given they must be equal"),
    ),
    responses(
        (status = 200, description = "A page of the caller's orders (an admin's: every order), newest first", body = Page),
        (status = 400, description = "`ambiguous_credentials`: more than one `Authorization` (or `X-Client-Id`) header; `invalid_header`; `invalid_consistency_token`: not a token this API gave, or header and parameter differ", body = ErrorBody),
        (status = 401, description = "`unauthenticated`: no valid API key (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 404, description = "`unknown_reference`: no order of the caller's has that id", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over this client's rate; `too_many_failures`: too many failed authentications from this address (`AUTH_FAILURES_PER_S`); `Retry-After`", body = ErrorBody),
        (status = 503, description = "`unavailable`; `keys_unavailable`: the API keys could not be checked for longer than `AUTH_KEYS_MAX_STALENESS_MS`; `not_yet_consistent`: the read table had not applied the token's write within `READ_CONSISTENCY_WAIT_MS` (retry with the same token) (`Retry-After`)", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn get_buy_orders() {}

#[utoipa::path(get, path = "/buy_orders/{id}", tag = "read",
    summary = "One order by id",
    description = "The order with this id, if it is the caller's (an admin: anyone's); 404 otherwise, so another client's order cannot be told from a missing one.",
    security(("api_key" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The order id"),
        ("Consistency-Token" = Option<String>, Header, pattern = r"^ct1_[0-9a-f]{16}$", description = "Read your own write: the `Consistency-Token` of a `PUT /buy_order` answer, unchanged. The answer waits until the read table shows that write (at most `READ_CONSISTENCY_WAIT_MS`), else 503 `not_yet_consistent`"),
        ("consistency_token" = Option<String>, Query, pattern = r"^ct1_[0-9a-f]{16}$", description = "The same token as a query parameter (for links); if both are given they must be equal"),
    ),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "`ambiguous_credentials`: more than one `Authorization` (or `X-Client-Id`) header; `invalid_header`; `invalid_consistency_token`: not a token this API gave, or header and parameter differ", body = ErrorBody),
        (status = 401, description = "`unauthenticated`: no valid API key (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such order, or another client's", body = ErrorBody),
        (status = 422, description = "`validation_failed`: not a UUID", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over this client's rate; `too_many_failures`: too many failed authentications from this address (`AUTH_FAILURES_PER_S`); `Retry-After`", body = ErrorBody),
        (status = 503, description = "`unavailable`; `keys_unavailable`: the API keys could not be checked for longer than `AUTH_KEYS_MAX_STALENESS_MS`; `not_yet_consistent`: the read table had not applied the token's write within `READ_CONSISTENCY_WAIT_MS` (retry with the same token) (`Retry-After`)", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn get_buy_order() {}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "buy-orders read API",
        description = "Buy orders, newest first, keyset-paginated. A client sees only its own orders."
    ),
    modifiers(&BearerAuth),
    paths(
        get_buy_orders,
        get_buy_order,
        service_kit::docs::healthcheck,
        service_kit::docs::readyz,
        service_kit::docs::metrics,
        service_kit::docs::openapi_json
    ),
    components(schemas(Page, OrderView, ErrorBody, ErrorDetail, FieldProblem))
)]
pub struct ReadApiDoc;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ReadApiDoc::openapi()).expect("an OpenAPI document serializes")
}
