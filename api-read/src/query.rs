//! The edge of the read API: the query string becomes a `PageRequest`, or a 422; a consistency
//! token (header or query) becomes a `ConsistencyToken`, or a 400.

use order_domain::OrderId;
use order_store::{ConsistencyToken, PageRequest, PageSize};
use service_kit::ApiError;
use warp::http::StatusCode;

/// The query parameter carrying the token, for callers that cannot set headers (a browser's
/// link); the header is [`ConsistencyToken::HEADER`].
pub const TOKEN_PARAMETER: &str = "consistency_token";

/// A query string's parameters, decoded once for everything read from them.
pub(crate) fn parameters(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::validation(format!("query string: {e}")))
}

/// The token a read asks to be consistent with: the `Consistency-Token` header, or the
/// `consistency_token` query parameter, or neither. Both may be given only alike; a malformed
/// token, one given twice, or two that differ are 400 `invalid_consistency_token` (never
/// guessed at: a read that silently ignored its token would answer stale data as fresh).
pub fn parse_consistency_token(
    query: &str,
    header: Option<&str>,
) -> Result<Option<ConsistencyToken>, ApiError> {
    consistency_token(&parameters(query)?, header)
}

/// [`parse_consistency_token`] from decoded parameters.
pub(crate) fn consistency_token(
    parameters: &[(String, String)],
    header: Option<&str>,
) -> Result<Option<ConsistencyToken>, ApiError> {
    let invalid =
        |why: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_consistency_token", why);
    let mut given = parameters
        .iter()
        .filter(|(name, _)| name == TOKEN_PARAMETER)
        .map(|(_, value)| value.as_str());
    let in_query = given.next();
    if given.next().is_some() {
        return Err(invalid(format!("{TOKEN_PARAMETER}: given more than once")));
    }
    let text = match (in_query, header) {
        (None, None) => return Ok(None),
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(format!(
                "the {TOKEN_PARAMETER} parameter and the Consistency-Token header differ"
            )))
        }
        (Some(text), _) | (None, Some(text)) => text,
    };
    text.parse()
        .map(Some)
        .map_err(|e: order_store::BadToken| invalid(e.to_string()))
}

/// Parses `last_reference=<order id>&page_size=<1..=100>`, both optional (an empty
/// `last_reference=` means the first page). A parameter given twice is refused rather than
/// guessed at; unknown parameters are ignored.
pub fn parse_page_request(query: &str) -> Result<PageRequest, ApiError> {
    page_request(&parameters(query)?)
}

/// [`parse_page_request`] from decoded parameters.
pub(crate) fn page_request(parameters: &[(String, String)]) -> Result<PageRequest, ApiError> {
    let mut request = PageRequest::default();
    let mut seen = (false, false);
    for (name, value) in parameters {
        match name.as_str() {
            "last_reference" => {
                if std::mem::replace(&mut seen.0, true) {
                    return Err(ApiError::validation("last_reference: given more than once"));
                }
                if !value.is_empty() {
                    let id = OrderId::parse(value)
                        .map_err(|e| ApiError::validation(format!("last_reference: {e}")))?;
                    request.after = Some(id);
                }
            }
            "page_size" => {
                if std::mem::replace(&mut seen.1, true) {
                    return Err(ApiError::validation("page_size: given more than once"));
                }
                request.size = value
                    .parse::<PageSize>()
                    .map_err(|e| ApiError::validation(format!("page_size: {e}")))?;
            }
            _ => {}
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ct1_000000000000002a";

    #[test]
    fn a_token_from_the_header_or_the_query_and_only_one_of_them() {
        assert_eq!(parse_consistency_token("page_size=3", None).unwrap(), None);
        let want = Some(TOKEN.parse::<ConsistencyToken>().unwrap());
        assert_eq!(parse_consistency_token("", Some(TOKEN)).unwrap(), want);
        let query = format!("consistency_token={TOKEN}");
        assert_eq!(parse_consistency_token(&query, None).unwrap(), want);
        assert_eq!(parse_consistency_token(&query, Some(TOKEN)).unwrap(), want);
        let escaped = format!("page_size=2&consistency%5Ftoken={TOKEN}");
        assert_eq!(parse_consistency_token(&escaped, None).unwrap(), want);
        for (query, header) in [
            (
                format!("consistency_token={TOKEN}&consistency_token={TOKEN}"),
                None,
            ),
            (query.clone(), Some("ct1_000000000000002b")),
            (String::new(), Some("")),
            ("consistency_token=".to_owned(), None),
            ("consistency_token=secret-looking".to_owned(), None),
            (String::new(), Some("ct1_0000000000000000")),
        ] {
            let err = parse_consistency_token(&query, header).unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.code),
                (400, "invalid_consistency_token"),
                "{query} {header:?}"
            );
            assert!(!err.message.contains("secret-looking"), "never echoed");
        }
    }

    const ID: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse_page_request("").unwrap(), PageRequest::default());
        assert_eq!(parse_page_request("").unwrap().size.get(), 10);
        let r = parse_page_request(&format!("last_reference={ID}&page_size=100")).unwrap();
        assert_eq!(r.after.unwrap().to_string(), ID);
        assert_eq!(r.size.get(), 100);
        assert_eq!(
            parse_page_request("last_reference=&x=1").unwrap().after,
            None
        );
    }

    #[test]
    fn bad_values_are_422_naming_the_parameter() {
        for (query, field) in [
            ("page_size=0", "page_size"),
            ("page_size=101", "page_size"),
            ("page_size=abc", "page_size"),
            ("page_size=", "page_size"),
            ("page_size=5&page_size=6", "page_size"),
            ("last_reference=123", "last_reference"),
            (
                &format!("last_reference={ID}&last_reference={ID}"),
                "last_reference",
            ),
        ] {
            let err = parse_page_request(query).unwrap_err();
            assert_eq!(err.status, 422, "{query}");
            assert!(err.message.starts_with(field), "{query}: {}", err.message);
        }
    }
}
