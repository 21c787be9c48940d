//! The edge: a raw request becomes a `PlaceBuyOrder` of parsed domain types, or a 422 that
//! names every field that is wrong and the rule it breaks.

use std::collections::BTreeMap;

use order_domain::{ClientId, Currency, FiatAmount, IdempotencyKey, PlaceBuyOrder};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use service_kit::ApiError;
use warp::{Filter, Rejection};

/// The headers `PUT /buy_order` reads.
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders {
    /// `Idempotency-Key`: the key, when it is not in the body.
    pub idempotency_key: Option<String>,
}

impl RequestHeaders {
    /// Extracts the headers (as text; a header that is not UTF-8 is a 400).
    pub fn filter() -> impl Filter<Extract = (RequestHeaders,), Error = Rejection> + Clone {
        warp::header::optional::<String>("idempotency-key")
            .map(|idempotency_key| RequestHeaders { idempotency_key })
    }
}

/// Field problems found so far.
#[derive(Default)]
struct Problems(Vec<(&'static str, String)>);

impl Problems {
    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &'static str,
        r: Result<T, E>,
    ) -> Option<T> {
        r.map_err(|e| self.add(field, e.to_string())).ok()
    }

    fn into_error(self) -> ApiError {
        let message = self
            .0
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect::<Vec<_>>()
            .join("; ");
        let fields: Vec<Value> = self
            .0
            .iter()
            .map(|(field, message)| json!({ "field": field, "message": message }))
            .collect();
        ApiError::validation(message).with("fields", fields)
    }
}

/// The JSON text of `raw` as a string, if it is a JSON string.
fn string(raw: &str) -> Option<String> {
    serde_json::from_str::<String>(raw).ok()
}

/// Parses `{"currency":"USD","amount":"123.45","idempotence_key":"<uuid>"}` plus headers, for
/// `client` (the caller, already identified).
pub fn parse_place(
    body: &RawValue,
    headers: &RequestHeaders,
    client_id: ClientId,
) -> Result<PlaceBuyOrder, ApiError> {
    let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(body.get()) else {
        return Err(ApiError::validation(
            "the body must be a JSON object with currency, amount and idempotence_key",
        ));
    };
    // A field's raw JSON text; absent and null alike are `None`.
    let field = |name: &str| {
        fields
            .get(name)
            .map(|raw| raw.get().trim())
            .filter(|text| *text != "null")
    };
    let mut problems = Problems::default();

    let currency = match field("currency") {
        None => {
            problems.add("currency", "is required: one of USD, EUR, GBP");
            None
        }
        Some(raw) => match string(raw) {
            Some(code) => problems.check("currency", code.parse::<Currency>()),
            None => {
                problems.add("currency", "must be a string: one of USD, EUR, GBP");
                None
            }
        },
    };

    let amount = match field("amount") {
        None => {
            problems.add("amount", "is required: a decimal such as \"123.45\"");
            None
        }
        Some(raw) => match order_domain::decimal_text(raw) {
            Some(text) => problems.check("amount", FiatAmount::parse(&text)),
            None => {
                problems.add(
                    "amount",
                    "must be a decimal string or number such as \"123.45\"",
                );
                None
            }
        },
    };

    let in_body = match field("idempotence_key") {
        None => Ok(None),
        Some(raw) => string(raw).map(Some).ok_or(()),
    };
    let key = match (in_body, headers.idempotency_key.as_deref()) {
        (Err(()), _) => {
            problems.add("idempotence_key", "must be a UUID string");
            None
        }
        (Ok(Some(body)), Some(header)) if body.as_str() != header => {
            problems.add(
                "idempotence_key",
                "differs from the Idempotency-Key header; send one, or the same in both",
            );
            None
        }
        (Ok(None), None) => {
            problems.add(
                "idempotence_key",
                "is required, in the body or in the Idempotency-Key header",
            );
            None
        }
        (Ok(body), header) => body
            .as_deref()
            .or(header)
            .and_then(|text| problems.check("idempotence_key", IdempotencyKey::parse(text))),
    };

    match (currency, amount, key) {
        (Some(currency), Some(amount), Some(idempotency_key)) if problems.0.is_empty() => {
            Ok(PlaceBuyOrder {
                client_id,
                idempotency_key,
                currency,
                amount,
            })
        }
        _ => Err(problems.into_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

    fn parse(body: Value, key_header: Option<&str>) -> Result<PlaceBuyOrder, ApiError> {
        parse_text(&body.to_string(), key_header)
    }

    /// As `parse`, from the body's text exactly.
    fn parse_text(body: &str, key_header: Option<&str>) -> Result<PlaceBuyOrder, ApiError> {
        let body = RawValue::from_string(body.to_owned()).unwrap();
        parse_place(
            &body,
            &RequestHeaders {
                idempotency_key: key_header.map(str::to_owned),
            },
            ClientId::parse("shop-1").unwrap(),
        )
    }

    fn message(body: Value, key_header: Option<&str>) -> String {
        parse(body, key_header).unwrap_err().message
    }

    #[test]
    fn a_good_request_parses_with_the_key_in_body_or_header() {
        let cmd = parse(
            json!({"currency":"USD","amount":"123.45","idempotence_key":KEY}),
            None,
        )
        .unwrap();
        assert_eq!(cmd.amount.cents(), 12345);
        assert_eq!(cmd.client_id.as_str(), "shop-1");
        let cmd = parse(json!({"currency":"EUR","amount":10}), Some(KEY)).unwrap();
        assert_eq!(cmd.idempotency_key.to_string(), KEY);
        let same_in_both = parse(
            json!({"currency":"EUR","amount":10,"idempotence_key":KEY}),
            Some(KEY),
        );
        assert!(same_in_both.is_ok());
    }

    #[test]
    fn numbers_are_exact() {
        let body =
            format!(r#"{{"currency":"USD","amount":999999999.99,"idempotence_key":"{KEY}"}}"#);
        assert_eq!(
            parse_text(&body, None).unwrap().amount.cents(),
            99_999_999_999
        );
        let body = format!(
            r#"{{"currency":"USD","amount":0.1000000000000000055511151231257827,"idempotence_key":"{KEY}"}}"#
        );
        assert!(parse_text(&body, None)
            .unwrap_err()
            .message
            .contains("at most 2 decimal places"));
        let body = format!(r#"{{"currency":"USD","amount":1e400,"idempotence_key":"{KEY}"}}"#);
        assert!(parse_text(&body, None)
            .unwrap_err()
            .message
            .contains("amount"));
    }

    #[test]
    fn every_bad_field_is_named_with_its_rule() {
        let msg = message(json!({"currency":"JPY","amount":"1.234"}), None);
        assert!(
            msg.contains("currency: must be one of USD, EUR, GBP"),
            "{msg}"
        );
        assert!(
            msg.contains("amount: must have at most 2 decimal places"),
            "{msg}"
        );
        assert!(msg.contains("idempotence_key: is required"), "{msg}");
        let err = parse(json!({"currency":"JPY","amount":"1.234"}), None).unwrap_err();
        assert_eq!(err.extra["fields"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn wrong_types_and_shapes_are_refused() {
        assert!(message(json!([1, 2]), Some(KEY)).contains("JSON object"));
        assert!(message(json!({"currency":1,"amount":"1"}), Some(KEY))
            .contains("currency: must be a string"));
        assert!(message(json!({"currency":"USD","amount":true}), Some(KEY))
            .contains("amount: must be a decimal"));
        assert!(message(json!({"currency":"USD"}), Some(KEY)).contains("amount: is required"));
        assert!(
            message(json!({"currency":"USD","amount":"0"}), Some(KEY)).contains("greater than 0")
        );
        assert!(
            message(json!({"currency":"USD","amount":"1000000000"}), Some(KEY))
                .contains("less than 1000000000")
        );
        assert!(message(
            json!({"currency":"USD","amount":"1","idempotence_key":5}),
            None
        )
        .contains("idempotence_key: must be a UUID"));
        assert!(message(
            json!({"currency":"USD","amount":"1","idempotence_key":"nope"}),
            None
        )
        .contains("idempotence_key: must be a UUID"));
        let other = "00000000-0000-0000-0000-000000000001";
        assert!(message(
            json!({"currency":"USD","amount":"1","idempotence_key":other}),
            Some(KEY)
        )
        .contains("differs"));
    }
}
