//! Schema evolution: reading events written by older versions of Marquee.
//!
//! An event's stored `event_version` says which shape its payload has. When a shape changes,
//! the event's version goes up here and an upcaster turns the previous shape into the next;
//! readers (aggregates, projections, the history API) upcast every payload before decoding
//! it, so the rest of the code only ever sees the current shape. Stored events are never
//! rewritten.
//!
//! | event | version | change |
//! |---|---|---|
//! | `PaymentFailed` | 2 | adds `retryable`; version 1 events were all declines a customer could retry with another card, so they read as `true` |

use serde_json::Value;

/// The version every event type is written with now.
pub fn current_version(event_type: &str) -> &'static str {
    match event_type {
        "PaymentFailed" => "2",
        _ => "1",
    }
}

/// Why an old payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error("{event_type} version {version} is newer than this build knows ({known})")]
    TooNew {
        event_type: String,
        version: String,
        known: &'static str,
    },
    #[error("{event_type} version {version} is not a known version")]
    Unknown { event_type: String, version: String },
}

/// Brings a stored payload (in its wire form, `{"<EventType>": {...}}`) from `version` up to
/// the current version of its event type. Returns the new version.
pub fn upcast(
    event_type: &str,
    version: &str,
    payload: &mut Value,
) -> Result<&'static str, UpcastError> {
    let current = current_version(event_type);
    let mut at: u32 = version.parse().map_err(|_| UpcastError::Unknown {
        event_type: event_type.to_owned(),
        version: version.to_owned(),
    })?;
    let target: u32 = current.parse().expect("current versions are numbers");
    if at > target {
        return Err(UpcastError::TooNew {
            event_type: event_type.to_owned(),
            version: version.to_owned(),
            known: current,
        });
    }
    while at < target {
        let fields = payload.get_mut(event_type);
        match (event_type, at, fields) {
            ("PaymentFailed", 1, Some(Value::Object(fields))) => {
                fields.entry("retryable").or_insert(Value::Bool(true));
            }
            _ => {
                return Err(UpcastError::Unknown {
                    event_type: event_type.to_owned(),
                    version: at.to_string(),
                })
            }
        }
        at += 1;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::showtime::ShowtimeEvent;
    use serde_json::json;

    #[test]
    fn a_version_1_payment_failure_reads_as_retryable() {
        let mut v1 = json!({"PaymentFailed": {
            "reservation_id": "00000000-0000-0000-0000-000000000001",
            "payment_id": "00000000-0000-0000-0000-000000000002",
            "reason": "card_declined",
            "failed_at": "2030-01-01T20:00:00Z"
        }});
        assert!(
            serde_json::from_value::<ShowtimeEvent>(v1.clone()).is_err(),
            "v1 does not decode as is"
        );
        assert_eq!(upcast("PaymentFailed", "1", &mut v1), Ok("2"));
        match serde_json::from_value::<ShowtimeEvent>(v1).unwrap() {
            ShowtimeEvent::PaymentFailed(f) => assert!(f.retryable),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn current_events_pass_unchanged_and_unknown_versions_are_errors() {
        let mut v = json!({"HoldExpired": {"reservation_id": "x", "expired_at": "y"}});
        let before = v.clone();
        assert_eq!(upcast("HoldExpired", "1", &mut v), Ok("1"));
        assert_eq!(v, before);
        assert!(matches!(
            upcast("PaymentFailed", "3", &mut v),
            Err(UpcastError::TooNew { .. })
        ));
        assert!(matches!(
            upcast("PaymentFailed", "one", &mut v),
            Err(UpcastError::Unknown { .. })
        ));
    }
}
