//! Static files: the embedded demo, or a web root served by tower-http's
//! `ServeDir` behind a check that nothing outside the root can be read.
//!
//! `ServeDir` already refuses `..` segments (also percent-encoded ones); the
//! check here adds what it does not do: a symlink inside the root that
//! points outside it is treated as absent.

use std::path::{Component, Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::assets::{self, Asset};
use super::Shared;

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

/// Serves an embedded asset, answering `If-None-Match` with 304.
fn embedded(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = asset.etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(csp) = asset.csp {
        resp.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        );
    }
    resp
}

/// The request path as a relative path inside the root, or None when it
/// could name something outside it (`..`, a drive, a NUL, a backslash).
fn relative_path(uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(uri_path)
        .decode_utf8()
        .ok()?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut rel = PathBuf::new();
    for comp in Path::new(decoded.trim_start_matches('/')).components() {
        match comp {
            Component::Normal(c) => rel.push(c),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(rel)
}

/// Whether the file a request names resolves (through any symlinks) to a
/// place inside `root`. A missing file passes: ServeDir answers 404.
async fn inside_root(root: &Path, rel: &Path) -> bool {
    let Ok(root) = tokio::fs::canonicalize(root).await else {
        return false;
    };
    let full = root.join(rel);
    let mut candidates = vec![full.clone()];
    if tokio::fs::metadata(&full).await.is_ok_and(|m| m.is_dir()) {
        candidates.push(full.join("index.html"));
    }
    for c in candidates {
        match tokio::fs::canonicalize(&c).await {
            Ok(real) if !real.starts_with(&root) => return false,
            Ok(_) => {}
            // A dangling symlink cannot be served anyway; anything absent
            // is left to ServeDir's 404.
            Err(_) => {}
        }
    }
    true
}

pub(super) async fn static_files(State(front): State<Shared>, req: Request) -> Response {
    let Some(root) = &front.root else {
        return match assets::demo(req.uri().path()) {
            Some(asset) => embedded(asset, req.headers()),
            None => not_found(),
        };
    };
    let Some(rel) = relative_path(req.uri().path()) else {
        return not_found();
    };
    if !inside_root(root, &rel).await {
        front.exec.hub().monitor().emit(format_args!(
            "refused {}: resolves outside the web root",
            req.uri().path()
        ));
        return not_found();
    }
    match ServeDir::new(root).oneshot(req).await {
        Ok(resp) => resp.into_response(),
        Err(never) => match never {},
    }
}

/// `/ws.js`: the web root's own when it has one, the built-in one otherwise.
pub(super) async fn ws_js(State(front): State<Shared>, req: Request) -> Response {
    if let Some(root) = &front.root {
        if tokio::fs::metadata(root.join("ws.js"))
            .await
            .is_ok_and(|m| m.is_file())
        {
            return static_files(State(front.clone()), req).await;
        }
    }
    embedded(&assets::WS_JS, req.headers())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/..%2f..%2fetc",
            "/a%00b",
            "/a\\..\\b",
            "/%c0%ae",
        ] {
            assert!(relative_path(bad).is_none(), "{bad}");
        }
        assert_eq!(
            relative_path("/a/./b.html"),
            Some(PathBuf::from("a/b.html"))
        );
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(
            relative_path("/caf%C3%A9.txt"),
            Some(PathBuf::from("café.txt"))
        );
    }
}
