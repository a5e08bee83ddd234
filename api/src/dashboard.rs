//! The dashboard at `/`: one page and its assets (`api/dashboard/`), embedded
//! in the binary at build time and served without the API token; the page
//! itself asks GraphQL for everything, with the token when the server needs one.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    /// Path under `/assets/` (`index.html` is served at `/`).
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../dashboard/", $path)),
        }
    };
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

const ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("calls.js", "text/javascript; charset=utf-8"),
    asset!("call.js", "text/javascript; charset=utf-8"),
    asset!("inbox.js", "text/javascript; charset=utf-8"),
    asset!("stats.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("vendor/graphql-ws.js", "text/javascript; charset=utf-8"),
];

/// What the page may load and run: only this origin (its scripts, its
/// GraphQL, its WebSocket), no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Strong validators: the SHA-256 of each file, computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS)
        .map(|asset| {
            let digest = hex::encode(&Sha256::digest(asset.body)[..16]);
            HeaderValue::from_str(&format!("\"{digest}\"")).expect("hex is a valid header")
        })
        .collect()
});

/// `GET /` and `GET /assets/{*path}`; no token needed.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    let mut response = serve(&INDEX, &ETAGS[0], &headers);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => serve(&ASSETS[i], &ETAGS[i + 1], &headers),
        None => (StatusCode::NOT_FOUND, "no such dashboard asset").into_response(),
    }
}

/// The file, or `304` when the browser's copy is current. Assets keep their
/// names across releases, so browsers revalidate every time (`no-cache`) and
/// the ETag makes that a small 304.
fn serve(asset: &Asset, etag: &HeaderValue, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).expect("dashboard files are UTF-8")
    }

    fn served(path: &str) -> bool {
        ASSETS.iter().any(|a| a.path == path)
    }

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        for reference in text(&INDEX).split("/assets/").skip(1) {
            let path = reference.split('"').next().unwrap();
            assert!(served(path), "index.html names /assets/{path}");
        }
    }

    #[test]
    fn every_module_a_script_imports_is_embedded() {
        let mut checked = 0;
        for script in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let imports = text(script)
                .lines()
                .filter(|l| l.starts_with("import ") || l.starts_with("} from "))
                .filter_map(|l| l.split_once(" from '"));
            for (_, from) in imports {
                let target = from.trim_start_matches("./").split('\'').next().unwrap();
                assert!(served(target), "{} imports {target}", script.path);
                checked += 1;
            }
        }
        assert!(checked >= 10, "the imports were read ({checked})");
    }

    #[test]
    fn a_current_copy_is_answered_304() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, ETAGS[1].clone());
        let response = serve(&ASSETS[0], &ETAGS[1], &headers);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let response = serve(&ASSETS[0], &ETAGS[1], &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::ETAG], ETAGS[1]);
    }
}
