//! `/graphql` over HTTP: POST (single or batched requests) and GET queries,
//! GraphiQL for browsers, the bearer token when one is configured, CORS.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{BatchRequest, Request};
use async_graphql_axum::GraphQLResponse;
use axum::body::Body;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sea_orm::DatabaseConnection;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::{BAD_REQUEST, FORBIDDEN, UNAUTHENTICATED};
use super::host::{self, AllowedHosts};
use super::{AppSchema, build_schema, execute};
use crate::serve::{BodyError, content_type, read_body};
use crate::startup::AppState;

/// What the `/graphql` handlers share.
#[derive(Clone)]
struct Gql {
    schema: AppSchema,
    db: DatabaseConnection,
    /// SHA-256 of `CALLTRAIL_API_TOKEN`: compared in constant time, length included.
    token: Option<Arc<[u8; 32]>>,
    /// `CALLTRAIL_CLIENT_TIMEOUT`: how long a request body may take to arrive.
    body_timeout: Duration,
    /// `CALLTRAIL_ALLOWED_HOSTS`: checked when there is no token.
    hosts: AllowedHosts,
}

pub(super) fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The `/graphql` routes, with CORS when origins are configured.
pub fn routes(app: &AppState) -> Router<AppState> {
    let gql = Gql {
        schema: build_schema(&app.db, &app.config, &app.metrics),
        db: app.db.read.clone(),
        token: app
            .config
            .api_token
            .as_ref()
            .map(|t| Arc::new(digest(t.0.as_bytes()))),
        body_timeout: app.config.client_timeout,
        // Checked at start (`startup.rs`); an unchecked mistake allows no host.
        hosts: AllowedHosts::parse(&app.config.allowed_hosts).unwrap_or_default(),
    };
    let mut router = Router::new()
        .route("/graphql", get(get_graphql).post(post_graphql))
        .layer(middleware::from_fn_with_state(gql.clone(), require_token));
    match cors_layer(&app.config.cors_origins) {
        Ok(Some(cors)) => router = router.layer(cors),
        Ok(None) => {}
        Err(why) => tracing::error!("{why}; CORS stays off"),
    }
    let ws = super::ws::routes(
        gql.schema.clone(),
        gql.token.clone(),
        gql.hosts.clone(),
        app,
    );
    router.with_state(gql).merge(ws)
}

/// CORS for `CALLTRAIL_CORS_ORIGINS` (`*` allows any origin); None when none is configured.
pub fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .max_age(Duration::from_secs(600)),
    ))
}

fn origin(o: &str) -> Result<HeaderValue, String> {
    let bad =
        || format!("CALLTRAIL_CORS_ORIGINS: {o:?} is not an origin like https://app.example.com");
    let (scheme, rest) = o.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        return Err(bad());
    }
    HeaderValue::from_str(o).map_err(|_| bad())
}

/// A GraphQL-shaped error answer outside execution (401, 400, 405, 413).
fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"errors": [{"message": message.into(), "extensions": {"code": code}}]});
    (status, Json(body)).into_response()
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// When a token is configured, every request but GraphiQL's page needs
/// `Authorization: Bearer <token>`; without one, the request's `Host` must
/// be one GraphQL answers to (`host.rs`).
async fn require_token(State(gql): State<Gql>, request: HttpRequest, next: Next) -> Response {
    let Some(expected) = &gql.token else {
        if !gql.hosts.allow(request.headers()) {
            return refuse(StatusCode::FORBIDDEN, FORBIDDEN, host::REFUSED);
        }
        return next.run(request).await;
    };
    if request.method() == Method::GET && wants_html(request.headers()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| digest(token.trim().as_bytes()));
    match presented {
        Some(token) if bool::from(token.ct_eq(expected.as_ref())) => next.run(request).await,
        _ => {
            let mut response = refuse(
                StatusCode::UNAUTHORIZED,
                UNAUTHENTICATED,
                "this server needs `Authorization: Bearer <token>` (CALLTRAIL_API_TOKEN)",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"calltrail\""),
            );
            response
        }
    }
}

/// `POST /graphql`: one request or a batch, as JSON (`Content-Type:
/// application/json`). Any other type is refused: a page of another site can
/// POST `text/plain` without asking (no CORS preflight), and would run its
/// mutations on a server that has no token.
async fn post_graphql(State(gql): State<Gql>, headers: HeaderMap, body: Body) -> Response {
    if !is_json(&headers) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BAD_REQUEST,
            "a GraphQL POST needs `Content-Type: application/json`",
        );
    }
    let body = match read_body(body, &headers, MAX_BODY, gql.body_timeout).await {
        Ok(body) => body,
        Err(e) => {
            let status = match e {
                BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
                BodyError::Read(_) => StatusCode::BAD_REQUEST,
            };
            return refuse(status, BAD_REQUEST, e.to_string());
        }
    };
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                format!("the body is not a GraphQL request (JSON with a `query`): {e}"),
            );
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && requests.len() > MAX_BATCH
    {
        // Each operation is limited on its own (depth, complexity): without
        // this, one POST of many could ask for any amount of work.
        return refuse(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            format!(
                "a batch holds {} operations; at most {MAX_BATCH} are run per request",
                requests.len()
            ),
        );
    }
    GraphQLResponse::from(execute(&gql.schema, &gql.db, batch).await).into_response()
}

/// Most operations one batched `POST /graphql` may hold.
pub const MAX_BATCH: usize = 20;

/// Largest `POST /graphql` body, in bytes (2 MiB).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// `application/json` or another JSON type (`application/graphql+json`),
/// parameters (`; charset=utf-8`) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let essence = content_type(headers).to_ascii_lowercase();
    essence == "application/json"
        || essence.starts_with("application/") && essence.ends_with("+json")
}

/// `GET /graphql`: GraphiQL for browsers, otherwise a query in the URL
/// (`?query=…&variables=…`). Mutations need POST.
async fn get_graphql(State(gql): State<Gql>, headers: HeaderMap, uri: Uri) -> Response {
    if wants_html(&headers) {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .title("calltrail")
                .finish(),
        )
        .into_response();
    }
    let request = match async_graphql::http::parse_query_string(uri.query().unwrap_or_default()) {
        Ok(request) if !request.query.trim().is_empty() => request,
        Ok(_) => return refuse(StatusCode::BAD_REQUEST, BAD_REQUEST, GET_USAGE),
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                format!("{GET_USAGE}: {e}"),
            );
        }
    };
    if is_mutation(&request) {
        let mut response = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            BAD_REQUEST,
            "mutations need POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    GraphQLResponse::from(execute(&gql.schema, &gql.db, request).await).into_response()
}

const GET_USAGE: &str = "a GET request needs `?query=…` (and optionally `variables`, `operationName`); browsers get GraphiQL";

/// The operation the request would run is a mutation (unparsable queries
/// are left to execution, which reports them).
fn is_mutation(request: &Request) -> bool {
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let ty = match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| op.node.ty)
        }
        _ => None,
    };
    ty == Some(OperationType::Mutation)
}
