//! Static files: the embedded demo, or a web root served by tower-http's
//! `ServeDir` behind checks of pagewire's own:
//!
//! - the request path may hold only plain names, none longer than a file
//!   name can be (`..`, a NUL or a backslash in any encoding is refused;
//!   `ServeDir` also refuses `..`);
//! - dot-files and dot-directories are not served unless configured,
//!   `/.well-known/` excepted;
//! - the file, followed through every symlink, must lie inside the root
//!   and outside dot-directories;
//! - only regular files are opened: a FIFO, socket or device is absent.
//!   Opening a FIFO waits for a writer, which would hold a thread, and the
//!   daemon's shutdown, for as long as none comes;
//! - text types are served with `charset=utf-8`.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nix::fcntl::OFlag;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower::ServiceExt;
use tower_http::services::fs::{Backend, File as ServedFile};
use tower_http::services::ServeDir;

use super::assets::{self, Asset};
use super::Shared;

/// Longest file name (a path component), in bytes, as on Linux (NAME_MAX).
const MAX_NAME_BYTES: usize = 255;
/// Longest path inside the root, in bytes (PATH_MAX is 4096 in all).
const MAX_PATH_BYTES: usize = 4000;
/// The one dot-directory always served (RFC 8615).
const WELL_KNOWN: &str = ".well-known";

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

/// Serves an embedded asset, answering `If-None-Match` with 304.
pub(super) fn embedded(asset: &Asset, headers: &HeaderMap) -> Response {
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
/// could name something outside it (`..`, a drive, a NUL, a backslash) or
/// cannot name a file at all (a name or a path too long for one).
fn relative_path(uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(uri_path)
        .decode_utf8()
        .ok()?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    if decoded.len() > MAX_PATH_BYTES {
        return None;
    }
    let mut rel = PathBuf::new();
    for comp in Path::new(decoded.trim_start_matches('/')).components() {
        match comp {
            Component::Normal(c) if c.len() <= MAX_NAME_BYTES => rel.push(c),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(rel)
}

/// Whether `rel` (relative to the root) goes through a dot-file or
/// dot-directory other than a leading `.well-known`.
fn is_hidden(rel: &Path) -> bool {
    rel.components().enumerate().any(|(i, comp)| match comp {
        Component::Normal(name) => {
            name.as_encoded_bytes().starts_with(b".") && !(i == 0 && name == WELL_KNOWN)
        }
        _ => false,
    })
}

/// Why a file of the root is not served, though it may exist.
#[derive(Debug, PartialEq, Eq)]
enum Hidden {
    /// It resolves (through symlinks) to a place outside the root.
    Outside,
    /// It resolves into a dot-file or dot-directory.
    DotFile,
}

/// Checks where the file a request names really is, through any symlinks:
/// inside `root`, and (unless `dotfiles`) not in a dot-directory. A missing
/// file passes: `ServeDir` answers 404.
async fn check_real_path(root: &Path, rel: &Path, dotfiles: bool) -> Result<(), Hidden> {
    let Ok(root) = tokio::fs::canonicalize(root).await else {
        return Err(Hidden::Outside);
    };
    let full = root.join(rel);
    let mut candidates = vec![full.clone()];
    if tokio::fs::metadata(&full).await.is_ok_and(|m| m.is_dir()) {
        candidates.push(full.join("index.html"));
    }
    for c in candidates {
        // A dangling symlink cannot be served anyway; anything absent is
        // left to ServeDir's 404.
        let Ok(real) = tokio::fs::canonicalize(&c).await else {
            continue;
        };
        let Ok(inside) = real.strip_prefix(&root) else {
            return Err(Hidden::Outside);
        };
        if !dotfiles && is_hidden(inside) {
            return Err(Hidden::DotFile);
        }
    }
    Ok(())
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
    if !front.serve_dotfiles && is_hidden(&rel) {
        return not_found();
    }
    match check_real_path(root, &rel, front.serve_dotfiles).await {
        Ok(()) => {}
        Err(Hidden::DotFile) => return not_found(),
        Err(Hidden::Outside) => {
            front.engine.monitor.emit_summarised(
                "refused path: resolves outside the web root",
                format_args!(
                    "refused {}: resolves outside the web root",
                    super::access::shown(req.uri().path())
                ),
            );
            return not_found();
        }
    }
    let served = ServeDir::with_backend(root, RegularFiles)
        .oneshot(req)
        .await;
    let mut resp = match served {
        Ok(resp) => resp.into_response(),
        Err(never) => match never {},
    };
    add_charset(resp.headers_mut());
    resp
}

/// Adds `charset=utf-8` to a text type that names no charset: without it a
/// browser guesses, and shows `waiting…` as `waitingâ€¦`.
fn add_charset(headers: &mut HeaderMap) {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = essence.starts_with("text/")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/manifest+json"
                | "image/svg+xml"
        );
    if !text || ct.to_ascii_lowercase().contains("charset=") {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{essence}; charset=utf-8")) {
        headers.insert(header::CONTENT_TYPE, v);
    }
}

/// `ServeDir`'s file system, opening regular files only.
#[derive(Clone, Copy, Debug, Default)]
struct RegularFiles;

/// A file is absent to a client whatever the reason it cannot be served;
/// `ServeDir` answers a NotFound error with 404.
fn absent() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// Opens `path` if it is a regular file. It is checked before opening (a
/// FIFO or device is never opened at all) and again once open (the path
/// may have been replaced in between); the open itself cannot wait, nor
/// make the file a controlling terminal.
fn open_regular(path: &Path) -> io::Result<File> {
    if !std::fs::metadata(path).map_err(|_| absent())?.is_file() {
        return Err(absent());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(|_| absent())?;
    if !file.metadata()?.is_file() {
        return Err(absent());
    }
    Ok(file)
}

type BoxedFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

impl Backend for RegularFiles {
    type File = RegularFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = BoxedFuture<RegularFile>;
    type MetadataFuture = BoxedFuture<std::fs::Metadata>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        Box::pin(async move {
            let file = tokio::task::spawn_blocking(move || open_regular(&path))
                .await
                .map_err(io::Error::other)??;
            Ok(RegularFile(tokio::fs::File::from_std(file)))
        })
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        Box::pin(async move { tokio::fs::metadata(&path).await.map_err(|_| absent()) })
    }
}

/// A regular file opened by [`RegularFiles`].
#[derive(Debug)]
struct RegularFile(tokio::fs::File);

impl AsyncRead for RegularFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncSeek for RegularFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.0).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.0).poll_complete(cx)
    }
}

impl ServedFile for RegularFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> =
        Pin<Box<dyn Future<Output = io::Result<std::fs::Metadata>> + Send + 'a>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        Box::pin(self.0.metadata())
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
        // Names and paths no file can have.
        let name = "n".repeat(MAX_NAME_BYTES);
        assert!(relative_path(&format!("/{name}")).is_some());
        assert!(relative_path(&format!("/{name}n")).is_none());
        assert!(relative_path(&format!("/a/{name}n/b")).is_none());
        assert!(relative_path(&"/a".repeat(MAX_PATH_BYTES)).is_none());
    }

    #[test]
    fn dot_files_are_hidden_but_well_known() {
        for hidden in [
            ".env",
            ".git/config",
            "a/.hidden/x",
            "a/..b",
            ".well-known/.x",
            "a/.well-known/x",
        ] {
            assert!(is_hidden(Path::new(hidden)), "{hidden}");
        }
        for shown in [
            "",
            "a/b.txt",
            "a.b/c",
            ".well-known/security.txt",
            ".well-known",
        ] {
            assert!(!is_hidden(Path::new(shown)), "{shown}");
        }
    }

    #[test]
    fn text_types_get_a_charset() {
        for (given, want) in [
            ("text/html", "text/html; charset=utf-8"),
            ("text/javascript", "text/javascript; charset=utf-8"),
            ("application/json", "application/json; charset=utf-8"),
            ("image/svg+xml", "image/svg+xml; charset=utf-8"),
            ("text/xml", "text/xml; charset=utf-8"),
            (
                "text/html; charset=iso-8859-1",
                "text/html; charset=iso-8859-1",
            ),
            ("image/png", "image/png"),
            ("application/octet-stream", "application/octet-stream"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(given));
            add_charset(&mut h);
            assert_eq!(h[header::CONTENT_TYPE], want, "{given}");
        }
    }

    #[test]
    fn only_regular_files_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f.txt");
        std::fs::write(&file, "x").expect("write");
        assert!(open_regular(&file).is_ok());
        for absent in [
            dir.path().to_path_buf(),
            dir.path().join("missing"),
            "/dev/null".into(),
        ] {
            let err = open_regular(&absent).expect_err("not a regular file");
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{}", absent.display());
        }
    }
}
