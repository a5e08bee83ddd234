//! Raw bytes → [`Delivery`]. Total and pure: it refuses only what the
//! contract says is malformed (400) and reads every optional field leniently,
//! because the upstream envelope is additive and must never be rejected for
//! something new in it. Both wire formats are told apart by their shape (v1
//! wraps the event in `event`, v2 has `type` at the top) and become the same
//! `Delivery`.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::EventKind;

/// The upstream wire format of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"metadata", "event": {"type", "data"}}`, no event id.
    V1,
    /// `{"id", "type", "created_at", "data": {"call"}}`, the event id stable across retries.
    V2,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::V1 => "v1",
            Format::V2 => "v2",
        }
    }

    /// The stored word (`webhook_event.format`); anything else reads as v1,
    /// the format of every row written before v2 existed.
    pub fn from_db(s: &str) -> Self {
        if s == "v2" { Format::V2 } else { Format::V1 }
    }
}

/// One webhook delivery, understood.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub format: Format,
    /// What makes two deliveries one. v1: hex SHA-256 of the raw body (v1
    /// carries no event id, so the bytes are its identity, scoped by the
    /// projection, see CONTRACT §2). v2: `v2:` and the envelope `id`, stable
    /// across retries whatever their bytes.
    pub dedupe_key: String,
    /// The platform's event id (v2 `id`); None for v1.
    pub upstream_id: Option<String>,
    /// The event type exactly as sent (v1 `event.type`, v2 `type`).
    pub event_type: String,
    pub kind: EventKind,
    /// The platform's call id (v1 `event.data.call.id`, v2 `data.call.id`).
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

/// Fields of the call object (v1 `event.data.call`, v2 `data.call`);
/// absent, null and ill-typed all read as `None`. v1 has no `to`,
/// `agent_id`, `ended_reason` or `cost`; v2 no recording or detail URL.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallFields {
    /// The platform's status word as sent (`completed`, `no-answer`, `no_answer`, …).
    pub status: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub recording_url: Option<String>,
    pub detail_url: Option<String>,
    /// The number dialled (E.164).
    pub to: Option<String>,
    pub agent_id: Option<String>,
    /// Why the call ended, the platform's word (`customer_ended_call`, …).
    pub ended_reason: Option<String>,
    pub cost: Option<Cost>,
}

/// What a call cost (v2 `cost: {amount_inr, per_min_inr}`).
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    pub amount: Option<f64>,
    pub per_minute: Option<f64>,
    /// ISO 4217; v2 prices in Indian rupees (`INR`).
    pub currency: String,
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
    #[error("body has no `event` object (v1) and no `type` (v2)")]
    MissingEvent,
    #[error("the event type is missing (v1 `event.type`, v2 `type`)")]
    MissingType,
    #[error("`event.type` must be a string")]
    TypeNotString,
    #[error("a v2 body needs an `id` string (the event id that retries share)")]
    MissingId,
}

impl ParseError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingEvent => "missing_event",
            Self::MissingType => "missing_event_type",
            Self::TypeNotString => "invalid_event_type",
            Self::MissingId => "missing_event_id",
        }
    }
}

/// Parse one raw delivery body, of either format.
pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    let mut value = json(body).map_err(|e| ParseError::MalformedJson(e.to_string()))?;
    // PostgreSQL stores NUL in neither text nor `jsonb`: what calltrail reads
    // from a body has U+FFFD in its place, on both databases.
    if body.windows(6).any(|w| w == b"\\u0000") {
        without_nul(&mut value);
    }
    let Value::Object(root) = value else {
        return Err(ParseError::NotAnObject);
    };
    // serde_json accepted the bytes, so they are UTF-8.
    let text =
        || String::from_utf8(body.to_vec()).map_err(|e| ParseError::MalformedJson(e.to_string()));
    match root.get("event") {
        Some(Value::Object(event)) => parse_v1(&root, event, text()?),
        _ if root.contains_key("type") => parse_v2(&root, text()?),
        _ => Err(ParseError::MissingEvent),
    }
}

/// A body's JSON, read as leniently as JSON allows: a lone UTF-16
/// surrogate escape (`"\ud83d"`: what JavaScript's `JSON.stringify` writes
/// for a string cut inside an emoji), valid JSON grammar that serde_json
/// refuses, reads as U+FFFD, so no delivery is refused for its characters.
/// The stored body keeps its bytes whatever is read here.
pub fn json(body: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(body).or_else(|err| match without_lone_surrogates(body) {
        Some(mended) => serde_json::from_slice(&mended).map_err(|_| err),
        None => Err(err),
    })
}

/// `body` with each `\uXXXX` escape of a lone surrogate (one not part of a
/// high-low pair) written `\ufffd`; None when it has none. A backslash is
/// only ever inside a JSON string, so escapes are found without tracking
/// strings; anything malformed is left for the parser to refuse.
fn without_lone_surrogates(body: &[u8]) -> Option<Vec<u8>> {
    let unit = |at: usize| {
        let hex = body.get(at..at + 4)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let high = |u: u16| (0xD800..0xDC00).contains(&u);
    let low = |u: u16| (0xDC00..0xE000).contains(&u);
    let mut out = Vec::with_capacity(body.len());
    let (mut i, mut mended) = (0, false);
    while i < body.len() {
        if body[i] != b'\\' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        let step = match (body.get(i + 1), unit(i + 2)) {
            (Some(b'u'), Some(u))
                if high(u)
                    && body.get(i + 6..i + 8) == Some(&b"\\u"[..])
                    && unit(i + 8).is_some_and(low) =>
            {
                12
            }
            (Some(b'u'), Some(u)) if high(u) || low(u) => {
                out.extend_from_slice(b"\\ufffd");
                mended = true;
                i += 6;
                continue;
            }
            (Some(b'u'), Some(_)) => 6,
            (Some(_), _) => 2,
            (None, _) => 1,
        };
        let end = (i + step).min(body.len());
        out.extend_from_slice(&body[i..end]);
        i = end;
    }
    mended.then_some(out)
}

/// Every NUL in `value`'s keys and strings replaced by U+FFFD.
fn without_nul(value: &mut Value) {
    const NUL: char = '\0';
    match value {
        Value::String(s) if s.contains(NUL) => *s = s.replace(NUL, "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(without_nul),
        Value::Object(map) => {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(key, mut v)| {
                    without_nul(&mut v);
                    (key.replace(NUL, "\u{FFFD}"), v)
                })
                .collect();
        }
        _ => {}
    }
}

fn event_type(container: &Map<String, Value>) -> Result<String, ParseError> {
    match container.get("type") {
        None | Some(Value::Null) => Err(ParseError::MissingType),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ParseError::TypeNotString),
    }
}

/// v1: `{"metadata", "event": {"type", "data": {"call", "analysis", …}}}`.
fn parse_v1(
    root: &Map<String, Value>,
    event: &Map<String, Value>,
    body: String,
) -> Result<Delivery, ParseError> {
    let event_type = event_type(event)?;
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
        upstream_id: None,
        event_type,
        kind,
        call_id: field(call, "id").and_then(id_string),
        metadata: root.get("metadata").and_then(Value::as_object).cloned(),
        call: CallFields {
            status: string(call, "status"),
            started_at: field(call, "startedAt").and_then(timestamp),
            ended_at: field(call, "endedAt").and_then(timestamp),
            duration_seconds: field(call, "durationSeconds").and_then(Value::as_f64),
            recording_url: string(call, "recordingUrl"),
            detail_url: string(call, "detailUrl"),
            ..CallFields::default()
        },
        analysis,
        credits,
        report,
        action,
        body,
    })
}

/// v2: `{"id", "type", "created_at", "data": {"call": {"id", "object",
/// "agent_id", "to", "status", "ended_reason", "started_at", "ended_at",
/// "duration_secs", "cost": {"amount_inr", "per_min_inr"}}}}`. The `id` is
/// required: it is what retries share, so it is what dedupe compares.
fn parse_v2(root: &Map<String, Value>, body: String) -> Result<Delivery, ParseError> {
    let event_type = event_type(root)?;
    let id = match root.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err(ParseError::MissingId),
    };
    let data = root.get("data").and_then(Value::as_object);
    let call = field(data, "call").and_then(Value::as_object);
    let status = string(call, "status");
    let cost = field(call, "cost")
        .and_then(Value::as_object)
        .and_then(|c| {
            let amount = c.get("amount_inr").and_then(Value::as_f64);
            let per_minute = c.get("per_min_inr").and_then(Value::as_f64);
            (amount.is_some() || per_minute.is_some()).then(|| Cost {
                amount,
                per_minute,
                currency: "INR".to_owned(),
            })
        });
    Ok(Delivery {
        format: Format::V2,
        dedupe_key: format!("v2:{id}"),
        upstream_id: Some(id),
        kind: EventKind::from_v2(&event_type, status.as_deref()),
        event_type,
        call_id: field(call, "id").and_then(id_string),
        metadata: None,
        call: CallFields {
            status,
            started_at: field(call, "started_at").and_then(timestamp),
            ended_at: field(call, "ended_at").and_then(timestamp),
            duration_seconds: field(call, "duration_secs").and_then(Value::as_f64),
            recording_url: None,
            detail_url: None,
            to: string(call, "to"),
            agent_id: string(call, "agent_id"),
            ended_reason: string(call, "ended_reason"),
            cost,
        },
        analysis: None,
        credits: None,
        report: None,
        action: None,
        body,
    })
}

/// `obj[key]`, with null read as absent.
fn field<'a>(obj: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    obj.and_then(|o| o.get(key)).filter(|v| !v.is_null())
}

/// `obj[key]` when it is a string.
fn string(obj: Option<&Map<String, Value>>, key: &str) -> Option<String> {
    field(obj, key).and_then(Value::as_str).map(str::to_owned)
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

    #[test]
    fn every_v2_fixture_line_parses_as_v2_with_its_event_id_and_a_known_type() {
        for file in [
            "v2/completed.jsonl",
            "v2/voicemail.jsonl",
            "v2/failed.jsonl",
            "v2/aborted.jsonl",
        ] {
            for line in lines(file) {
                let d = parse(&line).expect("fixture parses");
                assert_eq!(d.format, Format::V2, "{file}");
                assert_ne!(d.kind, EventKind::Unknown, "{file}: {}", d.event_type);
                let id = d.upstream_id.clone().unwrap();
                assert!(id.starts_with("evt_"), "{file}");
                assert_eq!(d.dedupe_key, format!("v2:{id}"));
                assert!(d.call_id.as_deref().is_some_and(|c| c.starts_with("call_")));
                assert_eq!(d.body.as_bytes(), &line[..]);
            }
        }
    }

    #[test]
    fn v2_types_map_to_kinds_and_failures_to_their_status() {
        use crate::domain::CallStatus as S;
        let kinds: Vec<_> = lines("v2/failed.jsonl")
            .iter()
            .map(|l| parse(l).unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::Queued,
                EventKind::Terminal(S::NoAnswer),
                EventKind::Queued,
                EventKind::Terminal(S::Busy),
                EventKind::Queued,
                EventKind::Terminal(S::Failed),
                EventKind::Queued,
                EventKind::Terminal(S::Timeout),
            ]
        );
        for (file, last) in [
            ("v2/completed.jsonl", S::Completed),
            ("v2/voicemail.jsonl", S::Voicemail),
            ("v2/aborted.jsonl", S::Aborted),
        ] {
            let l = lines(file);
            assert_eq!(
                parse(l.last().unwrap()).unwrap().kind,
                EventKind::Terminal(last)
            );
        }
        assert_eq!(
            parse(&lines("v2/completed.jsonl")[1]).unwrap().kind,
            EventKind::InProgress
        );
        let odd = parse(br#"{"id":"evt_1","type":"call.failed","data":{"call":{"id":"c","status":"exploded"}}}"#).unwrap();
        assert_eq!(odd.kind, EventKind::Terminal(S::Failed));
        let unknown = parse(&fixture("v2/unknown-type.json")).unwrap();
        assert_eq!(
            (unknown.kind, unknown.format),
            (EventKind::Unknown, Format::V2)
        );
    }

    #[test]
    fn v2_call_fields_are_read() {
        let completed = parse(&lines("v2/completed.jsonl")[2]).unwrap();
        let c = &completed.call;
        assert_eq!(c.status.as_deref(), Some("completed"));
        assert_eq!(c.to.as_deref(), Some("+919812345678"));
        assert_eq!(
            c.agent_id.as_deref(),
            Some("agt_01JX8M2Q4R6T8V0W2Y4Z6A8B0C")
        );
        assert_eq!(c.ended_reason.as_deref(), Some("customer_ended_call"));
        assert_eq!(c.duration_seconds, Some(157.0));
        assert_eq!(
            c.started_at.unwrap().to_rfc3339(),
            "2026-11-20T10:00:04+00:00"
        );
        assert_eq!(
            c.ended_at.unwrap().to_rfc3339(),
            "2026-11-20T10:02:41+00:00"
        );
        assert_eq!(
            c.cost,
            Some(Cost {
                amount: Some(6.54),
                per_minute: Some(2.5),
                currency: "INR".into()
            })
        );
        assert_eq!(
            (completed.metadata, c.recording_url.as_deref()),
            (None, None)
        );
        let queued = parse(&lines("v2/completed.jsonl")[0]).unwrap();
        assert_eq!((queued.call.cost, queued.call.started_at), (None, None));
    }

    #[test]
    fn a_v2_retry_with_other_bytes_has_the_same_dedupe_key() {
        let first = parse(&lines("v2/completed.jsonl")[2]).unwrap();
        let retry = parse(&fixture("v2/completed-retry.json")).unwrap();
        assert_ne!(first.body, retry.body);
        assert_eq!(retry.dedupe_key, first.dedupe_key);
        assert_eq!((retry.kind, retry.call), (first.kind, first.call));
    }

    #[test]
    fn the_published_test_vector_parses() {
        let raw = fixture("v2/test-vector.json");
        assert_eq!(raw.len(), 177);
        let d = parse(&raw).unwrap();
        assert_eq!(
            (d.upstream_id.as_deref(), d.call_id.as_deref()),
            (
                Some("evt_01JZQ9C5N9P4R7S3T6V8W2X4YB"),
                Some("call_01JZQ9B4M8N3P6R2S5T7V9W1YA")
            )
        );
        assert_eq!(
            d.kind,
            EventKind::Terminal(crate::domain::CallStatus::Completed)
        );
    }

    #[test]
    fn malformed_v2_envelopes_are_refused_with_their_reason() {
        for (body, error) in [
            (
                &br#"{"type":"call.queued","data":{}}"#[..],
                ParseError::MissingId,
            ),
            (br#"{"id":7,"type":"call.queued"}"#, ParseError::MissingId),
            (br#"{"id":"","type":"call.queued"}"#, ParseError::MissingId),
            (br#"{"id":"evt_1","type":null}"#, ParseError::MissingType),
            (br#"{"id":"evt_1","type":5}"#, ParseError::TypeNotString),
            (br#"{"id":"evt_1","data":{}}"#, ParseError::MissingEvent),
        ] {
            assert_eq!(parse(body), Err(error), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(ParseError::MissingId.code(), "missing_event_id");
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
                Just("status".to_owned()),
                Just("cost".to_owned()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(keys, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn a_lone_surrogate_escape_reads_as_the_replacement_character_and_the_body_is_kept() {
        // A string cut inside an emoji, as JSON.stringify writes it; a
        // whole pair and an escaped backslash before "ud83d" stay as sent.
        let body = br#"{"metadata":{"note":"cut \ud83d","whole":"\ud83d\ude00","text":"\\ud83d"},"event":{"type":"call.initiate","data":{"call":{"id":"c_\udc00"}}}}"#;
        assert!(serde_json::from_slice::<Value>(body).is_err());
        let d = parse(body).expect("valid JSON grammar is accepted");
        let metadata = d.metadata.unwrap();
        assert_eq!(metadata["note"], "cut \u{FFFD}");
        assert_eq!(metadata["whole"], "\u{1F600}");
        assert_eq!(metadata["text"], "\\ud83d");
        assert_eq!(d.call_id.as_deref(), Some("c_\u{FFFD}"));
        assert_eq!(d.body.as_bytes(), &body[..]);
        assert_eq!(d.dedupe_key, hex::encode(Sha256::digest(body)));
        // What is not JSON stays refused.
        for bad in [
            &br#"{"a":"\ud83"}"#[..],
            br#"{"a":"\ud83d"#,
            br#"{"a":"\x"}"#,
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::MalformedJson(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nul_characters_read_as_the_replacement_character_in_keys_and_strings() {
        let body = br#"{"metadata":{"n":"a\u0000b","k\u0000":1},"event":{"type":"end-of-call","data":{"call":{"id":"c_nul"},"analysis":{"summary":"x\u0000","insights":{"deep":["\u0000"]}}}}}"#;
        let d = parse(body).unwrap();
        let metadata = d.metadata.unwrap();
        assert_eq!(metadata["n"], "a\u{FFFD}b");
        assert_eq!(metadata["k\u{FFFD}"], 1);
        let analysis = d.analysis.unwrap();
        assert_eq!(analysis.summary.as_deref(), Some("x\u{FFFD}"));
        assert_eq!(analysis.insights.unwrap()["deep"][0], "\u{FFFD}");
        assert_eq!(d.body.as_bytes(), &body[..]);
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
