//! `DateTime`: an instant as RFC 3339 text. Output is always UTC with a
//! `Z`; input may carry any offset and is converted to UTC.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{DateTime as ChronoDateTime, SecondsFormat, SubsecRound, Utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub ChronoDateTime<Utc>);

/// An instant in RFC 3339 text, e.g. `2026-11-20T10:00:04Z`. calltrail
/// answers in UTC; inputs may use any offset (`2026-11-20T15:30:04+05:30`).
#[Scalar(
    name = "DateTime",
    specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339"
)]
impl ScalarType for DateTime {
    /// Checked while validating, so a malformed date is refused before anything runs.
    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(s) if ChronoDateTime::parse_from_rfc3339(s).is_ok())
    }

    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => ChronoDateTime::parse_from_rfc3339(s)
                .map(|t| Self(up_to_micros(t.to_utc())))
                .map_err(|e| {
                    InputValueError::custom(format!(
                        "{s:?} is not an RFC 3339 date-time like 2026-11-20T10:00:04Z: {e}"
                    ))
                }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// Stored times are whole microseconds (PostgreSQL's precision; SQLite
/// compares them as text, where a finer bound split differently): a time
/// between two microseconds selects as the next one does, both for `>=`
/// (`createdAfter`) and for `<` (`createdBefore`).
fn up_to_micros(t: ChronoDateTime<Utc>) -> ChronoDateTime<Utc> {
    let cut = t.trunc_subsecs(6);
    if cut == t {
        t
    } else {
        cut + chrono::TimeDelta::microseconds(1)
    }
}

impl From<ChronoDateTime<Utc>> for DateTime {
    fn from(t: ChronoDateTime<Utc>) -> Self {
        Self(t)
    }
}
