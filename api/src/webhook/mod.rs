//! `POST /webhooks/call-events`: verify, parse, hand to the ingest writer,
//! answer after the commit (CONTRACT §2).

mod signature;

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::{Delivery, EventKind, Format, ParseError, parse};
use crate::ingest::{IngestError, Receipt};
use crate::metrics::Refusal;
use crate::serve::{BodyError, content_type, read_body};
use crate::startup::AppState;

pub use signature::{SignatureError, V2_HEADER, sign, sign_v2, verify, verify_v2};

/// Why a delivery was refused. Nothing is stored for any of these.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("content type must be application/json")]
    ContentType,
    #[error("body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("could not read the body: {0}")]
    BodyRead(String),
    #[error("the body was not received within {} seconds", .0.as_secs_f64())]
    BodyTimeout(std::time::Duration),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl WebhookError {
    /// The `reason` label of `calltrail_deliveries_total`.
    fn refusal(&self) -> Refusal {
        match self {
            Self::ContentType => Refusal::ContentType,
            Self::TooLarge(_) => Refusal::TooLarge,
            Self::BodyRead(_) | Self::Parse(_) => Refusal::Malformed,
            Self::BodyTimeout(_) => Refusal::Timeout,
            Self::Signature(_) => Refusal::Signature,
            Self::Ingest(_) => Refusal::Unavailable,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::ContentType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BodyRead(_) => (StatusCode::BAD_REQUEST, "unreadable_body"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::Signature(e) => (StatusCode::UNAUTHORIZED, e.code()),
            Self::Parse(e) => (StatusCode::BAD_REQUEST, e.code()),
            Self::Ingest(IngestError::Overloaded) => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
            Self::Ingest(IngestError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::Ingest(IngestError::ShuttingDown) => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            }
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // The database's own message stays in the log; the sender only needs to retry.
        let message = match &self {
            Self::Ingest(IngestError::Unavailable(_)) => {
                "the database is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// Any method but POST on the webhook route: `405` with an `Allow` header,
/// and the error body every refusal has (a bare 405 would leave a sender's
/// logs with nothing to read).
pub async fn wrong_method() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        Json(json!({"error": {"code": "method_not_allowed", "message": "deliveries are sent with POST"}})),
    )
        .into_response()
}

/// The webhook receiver: every answer is counted in `/metrics`.
pub async fn receive(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, WebhookError> {
    let started = Instant::now();
    let mut event_type = None;
    let result = accept(&app, &headers, body, &mut event_type).await;
    let outcome = result
        .as_ref()
        .map(|r| r.duplicate)
        .map_err(WebhookError::refusal);
    app.metrics.delivery(
        event_type.as_deref().unwrap_or("unknown"),
        outcome,
        started.elapsed(),
    );
    let Receipt {
        event_id,
        duplicate,
    } = result?;
    Ok(Json(
        json!({"received": true, "duplicate": duplicate, "eventId": event_id.to_string()}),
    ))
}

/// Check, verify, parse, commit. `event_type` is set once known (and recognized).
#[tracing::instrument(name = "webhook", skip_all, fields(event_type, call_id))]
async fn accept(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
    event_type: &mut Option<String>,
) -> Result<Receipt, WebhookError> {
    check_content_type(headers)?;
    let body = read_body(
        body,
        headers,
        app.config.max_body_bytes,
        app.config.client_timeout,
    )
    .await
    .map_err(|e| match e {
        BodyError::TooLarge(limit) => WebhookError::TooLarge(limit),
        BodyError::Timeout(after) => WebhookError::BodyTimeout(after),
        BodyError::Read(why) => WebhookError::BodyRead(why),
    })?;
    // Parsed first to know the format, whose scheme checks the signature;
    // a refused signature still answers before a malformed body.
    let parsed = parse(&body);
    let verified = check_signature(app, headers, parsed.as_ref().ok(), &body)?;
    let delivery = parsed?;
    let span = tracing::Span::current();
    span.record("event_type", delivery.event_type.as_str());
    span.record("call_id", delivery.call_id.as_deref().unwrap_or(""));
    if delivery.kind != EventKind::Unknown {
        *event_type = Some(delivery.event_type.clone());
    }
    Ok(app.ingestor.submit(delivery, verified).await?)
}

/// Each format is checked with its own scheme, so a v2 delivery cannot skip
/// the replay window by coming with a v1 signature. A body that does not
/// parse is checked with the scheme its headers claim.
fn check_signature(
    app: &AppState,
    headers: &HeaderMap,
    delivery: Option<&Delivery>,
    body: &[u8],
) -> Result<bool, SignatureError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secrets = app.config.webhook_secrets.as_ref();
    let format = match delivery {
        Some(d) => d.format,
        None if headers.contains_key(V2_HEADER) => Format::V2,
        None => Format::V1,
    };
    match format {
        Format::V1 => verify(secrets, header("x-signature"), header("x-public-key"), body),
        Format::V2 => verify_v2(
            secrets,
            header(V2_HEADER),
            body,
            app.config.clock.unix_now(),
            app.config.webhook_tolerance,
        ),
    }
}

/// `application/json`, parameters (`; charset=utf-8`) allowed.
fn check_content_type(headers: &HeaderMap) -> Result<(), WebhookError> {
    if content_type(headers).eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(WebhookError::ContentType)
    }
}
