//! The edge of the read API: the query string becomes a `PageRequest`, or a 422.

use order_domain::OrderId;
use order_store::{PageRequest, PageSize};
use service_kit::ApiError;

/// Parses `last_reference=<order id>&page_size=<1..=100>`, both optional (an empty
/// `last_reference=` means the first page). A parameter given twice is refused rather than
/// guessed at; unknown parameters are ignored.
pub fn parse_page_request(query: &str) -> Result<PageRequest, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::validation(format!("query string: {e}")))?;
    let mut request = PageRequest::default();
    let mut seen = (false, false);
    for (name, value) in pairs {
        match name.as_str() {
            "last_reference" => {
                if std::mem::replace(&mut seen.0, true) {
                    return Err(ApiError::validation("last_reference: given more than once"));
                }
                if !value.is_empty() {
                    let id = OrderId::parse(&value)
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
