//! Raw bytes → [`Delivery`]. Total and pure: it refuses only what the
//! contract says is malformed (400) and reads every optional field leniently,
//! because the upstream envelope is additive and must never be rejected for
//! something new in it.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::EventKind;

/// The upstream wire format of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    V1,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::V1 => "v1",
        }
    }
}

/// One webhook delivery, understood.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub format: Format,
    /// Hex SHA-256 of the raw body: v1 deliveries carry no event id, so the
    /// bytes are their identity (scoped by the projection, see CONTRACT §2).
    pub dedupe_key: String,
    /// `event.type` exactly as sent.
    pub event_type: String,
    pub kind: EventKind,
    /// The platform's call id (`event.data.call.id`).
    pub call_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub call: CallFields,
    pub analysis: Option<AnalysisFields>,
    pub credits: Option<Credits>,
    pub report: Option<Report>,
    pub action: Option<ActionFields>,
    /// The body exactly as received.
    pub body: String,
}

/// Fields of `event.data.call`; absent, null and ill-typed all read as `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallFields {
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub recording_url: Option<String>,
    pub detail_url: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnalysisFields {
    pub success: Option<bool>,
    pub summary: Option<String>,
    pub required_actions: Vec<String>,
    pub insights: Option<Value>,
    pub outcome: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credits {
    pub used: Option<f64>,
    pub available: Option<f64>,
}

/// `data.report` of `call.lifecycle-ended`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub re_attempt_count: Option<i32>,
    pub rescheduled_count: Option<i32>,
    pub final_status: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActionFields {
    /// `data.action`; any string is kept (the platform adds actions).
    pub kind: String,
    pub reason: Option<String>,
    pub payload: Option<Value>,
}

/// Why a body is not a delivery (HTTP 400). The code is part of the API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("body has no `event` object")]
    MissingEvent,
    #[error("`event.type` is missing")]
    MissingType,
    #[error("`event.type` must be a string")]
    TypeNotString,
}

impl ParseError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingEvent => "missing_event",
            Self::MissingType => "missing_event_type",
            Self::TypeNotString => "invalid_event_type",
        }
    }
}

/// Parse one raw delivery body.
pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::MalformedJson(e.to_string()))?;
    let Value::Object(root) = value else {
        return Err(ParseError::NotAnObject);
    };
    let Some(Value::Object(event)) = root.get("event") else {
        return Err(ParseError::MissingEvent);
    };
    let event_type = match event.get("type") {
        None | Some(Value::Null) => return Err(ParseError::MissingType),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ParseError::TypeNotString),
    };
    // serde_json accepted the bytes, so they are UTF-8.
    let body =
        String::from_utf8(body.to_vec()).map_err(|e| ParseError::MalformedJson(e.to_string()))?;
    let kind = EventKind::from_v1(&event_type);
    let data = event.get("data").and_then(Value::as_object);
    let call = data.and_then(|d| d.get("call")).and_then(Value::as_object);

    let action = (kind == EventKind::Action).then(|| ActionFields {
        kind: field(data, "action")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        reason: field(data, "reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        payload: field(data, "payload").cloned(),
    });
    let analysis = field(data, "analysis")
        .and_then(Value::as_object)
        .map(|a| AnalysisFields {
            success: a.get("success").and_then(Value::as_bool),
            summary: a.get("summary").and_then(Value::as_str).map(str::to_owned),
            required_actions: a
                .get("requiredActions")
                .and_then(Value::as_array)
                .map(|xs| {
                    xs.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            insights: a.get("insights").filter(|v| !v.is_null()).cloned(),
            outcome: a.get("outcome").filter(|v| !v.is_null()).cloned(),
        });
    let credits = field(data, "credits")
        .and_then(Value::as_object)
        .map(|c| Credits {
            used: c.get("used").and_then(Value::as_f64),
            available: c.get("available").and_then(Value::as_f64),
        });
    let report = field(data, "report")
        .and_then(Value::as_object)
        .map(|r| Report {
            re_attempt_count: r.get("reAttemptCount").and_then(as_i32),
            rescheduled_count: r.get("rescheduledCount").and_then(as_i32),
            final_status: r
                .get("finalStatus")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });

    Ok(Delivery {
        format: Format::V1,
        dedupe_key: hex::encode(Sha256::digest(body.as_bytes())),
        event_type,
        kind,
        call_id: field(call, "id").and_then(id_string),
        metadata: root.get("metadata").and_then(Value::as_object).cloned(),
        call: CallFields {
            started_at: field(call, "startedAt").and_then(timestamp),
            ended_at: field(call, "endedAt").and_then(timestamp),
            duration_seconds: field(call, "durationSeconds").and_then(Value::as_f64),
            recording_url: field(call, "recordingUrl")
                .and_then(Value::as_str)
                .map(str::to_owned),
            detail_url: field(call, "detailUrl")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        analysis,
        credits,
        report,
        action,
        body,
    })
}

/// `obj[key]`, with null read as absent.
fn field<'a>(obj: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    obj.and_then(|o| o.get(key)).filter(|v| !v.is_null())
}

/// Call ids are strings; a number is taken as its text, anything else ignored.
fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_i32(v: &Value) -> Option<i32> {
    v.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .or_else(|| v.as_f64().map(|f| f as i32))
}

/// RFC 3339, kept to the microsecond (what both databases store).
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(path: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn lines(path: &str) -> Vec<Vec<u8>> {
        let raw = fixture(path);
        raw.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn every_v1_fixture_line_parses_with_its_call_id_and_a_known_type() {
        for file in [
            "v1/happy-path.jsonl",
            "v1/retry-no-answer-busy.jsonl",
            "v1/rescheduled-then-invalid.jsonl",
        ] {
            for line in lines(file) {
                let d = parse(&line).expect("fixture parses");
                assert_ne!(d.kind, EventKind::Unknown, "{file}: {}", d.event_type);
                assert!(
                    d.call_id.as_deref().is_some_and(|id| id.starts_with("c_")),
                    "{file}"
                );
                assert!(d.metadata.is_some());
                assert_eq!(d.body.as_bytes(), &line[..]);
            }
        }
    }

    #[test]
    fn happy_path_fields_are_read() {
        let l = lines("v1/happy-path.jsonl");
        let completed = parse(&l[4]).unwrap();
        assert_eq!(completed.kind, EventKind::Completed);
        assert_eq!(completed.call.duration_seconds, Some(157.0));
        assert_eq!(
            completed.call.started_at.unwrap().to_rfc3339(),
            "2026-11-20T10:00:04+00:00"
        );
        assert_eq!(
            completed.call.recording_url.as_deref(),
            Some("https://recordings.example.invalid/c_7f3e2a90.mp3")
        );
        let eoc = parse(&l[5]).unwrap();
        let analysis = eoc.analysis.unwrap();
        assert_eq!(analysis.success, Some(true));
        assert_eq!(analysis.required_actions, vec!["create-order"]);
        assert_eq!(eoc.credits.unwrap().used, Some(2.5));
        let action = parse(&l[2]).unwrap().action.unwrap();
        assert_eq!(action.kind, "create_order");
        assert_eq!(action.payload.unwrap()["paymentMode"], "cod");
        let report = parse(&l[6]).unwrap().report.unwrap();
        assert_eq!(report.final_status.as_deref(), Some("completed"));
        assert_eq!(report.re_attempt_count, Some(0));
    }

    #[test]
    fn edge_fixtures_parse() {
        let unknown = parse(&fixture("edge/unknown-type.json")).unwrap();
        assert_eq!(
            (unknown.kind, unknown.event_type.as_str()),
            (EventKind::Unknown, "call.transferred")
        );
        assert_eq!(unknown.call_id.as_deref(), Some("c_unknown-1"));
        let action = parse(&fixture("edge/unknown-action.json")).unwrap();
        assert_eq!(action.action.unwrap().kind, "book_appointment");
        let orphan = parse(&fixture("edge/action-without-call.json")).unwrap();
        assert_eq!(orphan.call_id, None);
        assert_eq!(
            orphan.action.unwrap().reason.as_deref(),
            Some("invalid_cart_data")
        );
        assert_eq!(
            parse(&fixture("edge/no-metadata.json")).unwrap().metadata,
            None
        );
        let extra = parse(&fixture("edge/extra-fields.json")).unwrap();
        assert_eq!(
            (extra.kind, extra.call_id.as_deref()),
            (EventKind::Failed, Some("c_extra-1"))
        );
    }

    #[test]
    fn bad_fixtures_are_refused_with_their_reason() {
        assert_eq!(
            parse(&fixture("bad/array.json")),
            Err(ParseError::NotAnObject)
        );
        assert_eq!(
            parse(&fixture("bad/no-event.json")),
            Err(ParseError::MissingEvent)
        );
        assert_eq!(
            parse(&fixture("bad/no-type.json")),
            Err(ParseError::MissingType)
        );
        assert_eq!(
            parse(&fixture("bad/type-not-string.json")),
            Err(ParseError::TypeNotString)
        );
        assert!(matches!(
            parse(&fixture("bad/not-json.txt")),
            Err(ParseError::MalformedJson(_))
        ));
    }

    #[test]
    fn the_dedupe_key_is_the_sha256_of_the_exact_bytes() {
        let a = parse(br#"{"event":{"type":"x"}}"#).unwrap();
        let b = parse(br#"{"event": {"type":"x"}}"#).unwrap();
        assert_ne!(a.dedupe_key, b.dedupe_key);
        assert_eq!(
            a.dedupe_key,
            hex::encode(Sha256::digest(br#"{"event":{"type":"x"}}"#))
        );
    }

    #[test]
    fn ill_typed_optional_fields_read_as_absent() {
        let d = parse(br#"{"metadata":[1],"event":{"type":"call.completed","data":{"call":{"id":7,"startedAt":"yesterday","durationSeconds":"long"}}}}"#).unwrap();
        assert_eq!(d.call_id.as_deref(), Some("7"));
        assert_eq!(
            (d.metadata, d.call.started_at, d.call.duration_seconds),
            (None, None, None)
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z.\\-]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop_oneof![
                Just("event".to_owned()),
                Just("type".to_owned()),
                Just("data".to_owned()),
                Just("call".to_owned()),
                Just("id".to_owned()),
                Just("metadata".to_owned()),
                Just("analysis".to_owned()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(keys, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_arbitrary_json(value in arb_json()) {
            let bytes = serde_json::to_vec(&value).unwrap();
            if let Ok(d) = parse(&bytes) {
                prop_assert_eq!(d.body.as_bytes(), &bytes[..]);
            }
        }
    }
}
