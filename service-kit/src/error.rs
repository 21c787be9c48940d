//! The JSON error body and the rejection handler that produces it.

use std::convert::Infallible;

use serde_json::{json, Map, Value};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reject::{
    LengthRequired, MethodNotAllowed, PayloadTooLarge, Reject, UnsupportedMediaType,
};
use warp::reply::Response;
use warp::{Rejection, Reply};

/// An error answer: status, a stable machine-readable `code`, a message for people, optional
/// extra fields inside the `error` object, and an optional `Retry-After` (seconds).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code clients can branch on, e.g. `validation_failed`.
    pub code: &'static str,
    /// What went wrong and, where it helps, how to fix it.
    pub message: String,
    /// More fields of the `error` object (e.g. `remaining_btc`).
    pub extra: Map<String, Value>,
    /// Seconds after which a retry may succeed, sent as `Retry-After`.
    pub retry_after: Option<u32>,
    /// Further response headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 401 `unauthenticated`, with `WWW-Authenticate: Bearer`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"buy-orders\""),
        )
    }

    /// Adds a field to the `error` object.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 422 `validation_failed`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
    }

    /// 503 `unavailable`: a backend is down; retry shortly.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).retry_after(1)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl Reject for ApiError {}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.extend(self.extra);
        let mut response =
            warp::reply::with_status(warp::reply::json(&json!({ "error": error })), self.status)
                .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Turns any rejection into the JSON error body. Use as `routes.recover(recover)`.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(to_api_error(&rejection).into_response())
}

fn to_api_error(rejection: &Rejection) -> ApiError {
    if let Some(err) = rejection.find::<ApiError>() {
        return err.clone();
    }
    if rejection.is_not_found() {
        return ApiError::not_found("no such route");
    }
    if rejection.find::<MethodNotAllowed>().is_some() {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        );
    }
    if rejection.find::<PayloadTooLarge>().is_some() {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        );
    }
    if rejection.find::<UnsupportedMediaType>().is_some() {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        );
    }
    if rejection.find::<LengthRequired>().is_some() {
        return ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required",
        );
    }
    if let Some(err) = rejection.find::<warp::reject::InvalidQuery>() {
        return ApiError::validation(format!("query string: {err}"));
    }
    if let Some(err) = rejection.find::<warp::reject::InvalidHeader>() {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", err.to_string());
    }
    if let Some(err) = rejection.find::<warp::reject::MissingHeader>() {
        return ApiError::new(StatusCode::BAD_REQUEST, "missing_header", err.to_string());
    }
    if let Some(err) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", err.to_string());
    }
    tracing::error!(?rejection, "unhandled rejection");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed to handle the request",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::Filter;

    fn json(response: &warp::http::Response<warp::hyper::body::Bytes>) -> Value {
        serde_json::from_slice(response.body()).unwrap()
    }

    #[tokio::test]
    async fn errors_render_as_json_with_extra_fields_and_retry_after() {
        let routes = warp::any()
            .and_then(|| async {
                Err::<String, _>(warp::reject::custom(
                    ApiError::unavailable("db down").with("remaining_btc", "1.00000000"),
                ))
            })
            .recover(recover);
        let response = warp::test::request().reply(&routes).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = json(&response);
        assert_eq!(body["error"]["code"], "unavailable");
        assert_eq!(body["error"]["message"], "db down");
        assert_eq!(body["error"]["remaining_btc"], "1.00000000");
    }

    #[tokio::test]
    async fn warp_rejections_become_json_errors() {
        let routes = warp::path("only")
            .and(warp::get())
            .map(|| "ok")
            .recover(recover);
        let missing = warp::test::request().path("/nope").reply(&routes).await;
        assert_eq!(missing.status(), 404);
        assert_eq!(json(&missing)["error"]["code"], "not_found");
        let wrong_method = warp::test::request()
            .method("POST")
            .path("/only")
            .reply(&routes)
            .await;
        assert_eq!(wrong_method.status(), 405);
        assert_eq!(json(&wrong_method)["error"]["code"], "method_not_allowed");
    }
}
