//! The web page: a list of the keys with live values and a page per key with charts. Its
//! files are compiled into the binary (no CDN, works offline); the page itself talks to
//! the server only through the JSON API and the v2 websocket, like any other client.
//!
//! `/` and every `/ui/...` path (deep links such as `/ui/key/room.temp`) answer the same
//! page, whose script reads the path; `/ui/assets/NAME` are its files. uPlot is vendored by
//! `scripts/vendor-uplot.sh` (pinned version and hash) with its license.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::{Body, full};

/// `(name, content type, bytes)` of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/vendor/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../web/vendor/uPlot.LICENSE"),
    ),
];

const INDEX: &[u8] = include_bytes!("../../web/index.html");

/// The page or one of its files for a GET of `path`, if it is one of the page's paths.
pub fn serve(path: &str) -> Option<Response<Body>> {
    if let Some(name) = path.strip_prefix("/ui/assets/") {
        let Some((_, kind, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
            return Some(super::text(StatusCode::NOT_FOUND, "no such asset"));
        };
        return Some(answer(kind, bytes, "public, max-age=300"));
    }
    if path == "/" || path == "/index.html" || path.starts_with("/ui/") || path == "/ui" {
        return Some(answer("text/html; charset=utf-8", INDEX, "no-cache"));
    }
    None
}

fn answer(kind: &'static str, bytes: &'static [u8], cache: &'static str) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
