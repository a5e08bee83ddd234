//! Opaque cursors: URL-safe base64 of a small JSON object naming the row's
//! position (order key and id). Clients must not build them; the server
//! refuses a cursor that does not decode into the shape it expects.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ServiceError;

pub fn encode(position: &impl Serialize) -> String {
    let json = serde_json::to_vec(position).expect("a cursor serializes");
    URL_SAFE_NO_PAD.encode(json)
}

/// Decode a cursor of the kind `what` names (for the error message).
pub fn decode<T: DeserializeOwned>(cursor: &str, what: &str) -> Result<T, ServiceError> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| {
            ServiceError::bad_input(format!(
                "invalid cursor {cursor:?}: use a cursor from a {what} page with the same order"
            ))
        })
}

/// The position of a row in a list ordered by its integer id only.
#[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdCursor {
    /// What the id is of (`action`, `event`), so one list's cursor is not taken for another's.
    pub of: String,
    pub id: i64,
}

impl IdCursor {
    pub fn encode(of: &str, id: i64) -> String {
        encode(&Self {
            of: of.to_owned(),
            id,
        })
    }

    pub fn decode(cursor: &str, of: &str) -> Result<i64, ServiceError> {
        let decoded: Self = decode(cursor, of)?;
        if decoded.of == of {
            Ok(decoded.id)
        } else {
            Err(ServiceError::bad_input(format!(
                "invalid cursor {cursor:?}: it is a cursor of {}, not of {of}",
                decoded.of
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_cursors_round_trip_and_refuse_other_lists() {
        let c = IdCursor::encode("event", 42);
        assert_eq!(IdCursor::decode(&c, "event").unwrap(), 42);
        assert!(IdCursor::decode(&c, "action").is_err());
        assert!(IdCursor::decode("not a cursor", "event").is_err());
        assert!(!c.contains('='), "URL-safe without padding");
    }
}
