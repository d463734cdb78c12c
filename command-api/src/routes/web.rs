//! The web pages for customers and admins (`web/` at the top of the repository), compiled into
//! the binary so `marquee` serves them with no files beside it.
//!
//! The pages are plain HTML, CSS and JavaScript modules with no build step; they talk to the
//! public HTTP API only, exactly as any other client would. Each file is answered with its
//! content type, a strong `ETag` (a hash of its bytes, so a new build is never served from a
//! stale cache) and `Cache-Control: no-cache` (a browser revalidates and usually gets a `304`).
//! They carry their own Content-Security-Policy: this server's scripts, styles and API only,
//! `data:` images (the ticket QR codes are drawn into one), no inline script, no framing.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The Content-Security-Policy of the pages.
pub const WEB_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// One embedded file: where it is served, its bytes and its content type.
struct Asset {
    path: &'static str,
    body: &'static str,
    content_type: &'static str,
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            body: include_str!(concat!("../../../web/", $file)),
            content_type: $type,
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/favicon.svg", "favicon.svg", "image/svg+xml"),
    asset!("/js/app.js", "js/app.js", JS),
    asset!("/js/page.js", "js/page.js", JS),
    asset!("/js/api.js", "js/api.js", JS),
    asset!("/js/customer.js", "js/customer.js", JS),
    asset!("/js/seatmap.js", "js/seatmap.js", JS),
    asset!("/js/qr.js", "js/qr.js", JS),
    asset!("/js/admin.js", "js/admin.js", JS),
];

/// The strong ETag of each asset, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hash = hex::encode(&Sha256::digest(a.body.as_bytes())[..12]);
            HeaderValue::from_str(&format!("\"{hash}\"")).expect("hex is a valid header")
        })
        .collect()
});

/// The pages' routes. They take no state, so they merge into any router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(serve))
    })
}

async fn serve(request: Request) -> Response {
    let path = request.uri().path();
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (asset, etag) = (&ASSETS[index], &ETAGS[index]);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(WEB_CSP),
    );
    if request.headers().get(header::IF_NONE_MATCH) == Some(etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.body).into_response()
}
