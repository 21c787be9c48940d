//! Reading a JSON request body: content type first, then a hard size limit, then the JSON.

use futures::{Stream, StreamExt};
use serde_json::value::RawValue;
use warp::http::StatusCode;
use warp::{Buf, Filter, Rejection};

use crate::error::ApiError;

/// The largest request body any buy-orders route accepts: 16 KiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

fn too_large(limit: usize) -> Rejection {
    warp::reject::custom(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body must be at most {limit} bytes"),
    ))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Extracts the body as JSON, exactly: checked to be JSON, and kept as its text
/// ([`RawValue`]), so that a route reads a number as written, never through `f64`, without
/// turning on serde_json's `arbitrary_precision` for a whole application.
///
/// - 415 `unsupported_media_type` unless `Content-Type` is `application/json`;
/// - 413 `payload_too_large` past `limit` bytes, whether announced by `Content-Length` or
///   found while reading a chunked body (reading stops there);
/// - 400 `invalid_json` if it does not parse, with serde's line and column.
pub fn json_body(
    limit: usize,
) -> impl Filter<Extract = (Box<RawValue>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|content_type: Option<String>| async move {
            match content_type {
                Some(ct) if is_json(&ct) => Ok(()),
                other => Err(warp::reject::custom(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "Content-Type must be application/json (got {})",
                        other.as_deref().unwrap_or("none")
                    ),
                ))),
            }
        })
        .untuple_one()
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(move |announced: Option<u64>, stream| async move {
            if announced.is_some_and(|len| len > limit as u64) {
                return Err(too_large(limit));
            }
            let body = read_limited(stream, limit).await?;
            serde_json::from_slice::<Box<RawValue>>(&body).map_err(|e| {
                warp::reject::custom(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the request body is not valid JSON: {e}"),
                ))
            })
        })
}

/// Reads a body stream into memory, refusing it as soon as it passes `limit` bytes.
async fn read_limited(
    stream: impl Stream<Item = Result<impl Buf, warp::Error>>,
    limit: usize,
) -> Result<Vec<u8>, Rejection> {
    let mut stream = std::pin::pin!(stream);
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| {
            let timed_out =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .find_map(|e| e.downcast_ref::<crate::serve::BodyTimedOut>());
            warp::reject::custom(match timed_out {
                Some(late) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("{late}; send the whole body promptly"),
                ),
                None => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("the request body could not be read: {e}"),
                ),
            })
        })?;
        if body.len() + chunk.remaining() > limit {
            return Err(too_large(limit));
        }
        while chunk.has_remaining() {
            let bytes = chunk.chunk();
            body.extend_from_slice(bytes);
            let n = bytes.len();
            chunk.advance(n);
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recover;
    use serde_json::Value;

    fn route(
    ) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
        json_body(32)
            .map(|v: Box<RawValue>| v.get().to_owned())
            .recover(recover)
    }

    async fn status_and_code(req: warp::test::RequestBuilder) -> (u16, String) {
        let response = req.reply(&route()).await;
        let json: Value = serde_json::from_slice(response.body()).unwrap();
        let code = json["error"]["code"].as_str().unwrap_or("").to_owned();
        (response.status().as_u16(), code)
    }

    #[tokio::test]
    async fn accepts_json_within_the_limit_exactly() {
        let response = warp::test::request()
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"a":"#)
            .reply(&route())
            .await;
        assert_eq!(response.status(), 400, "cut JSON is invalid");
        let response = warp::test::request()
            .header("content-type", "Application/JSON")
            .body(r#"{"a":12345678901234567890.123}"#)
            .reply(&route())
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.body().as_ref(),
            br#"{"a":12345678901234567890.123}"#
        );
    }

    #[tokio::test]
    async fn refuses_wrong_type_oversize_and_bad_json() {
        let json = |body: &str| {
            warp::test::request()
                .header("content-type", "application/json")
                .body(body)
        };
        assert_eq!(
            status_and_code(warp::test::request().body("{}")).await,
            (415, "unsupported_media_type".into())
        );
        assert_eq!(
            status_and_code(
                warp::test::request()
                    .header("content-type", "text/plain")
                    .body("{}")
            )
            .await,
            (415, "unsupported_media_type".into())
        );
        assert_eq!(
            status_and_code(json(&format!("\"{}\"", "x".repeat(40)))).await,
            (413, "payload_too_large".into())
        );
        assert_eq!(
            status_and_code(json("{nope")).await,
            (400, "invalid_json".into())
        );
        assert_eq!(
            status_and_code(json("")).await,
            (400, "invalid_json".into())
        );
    }
}
