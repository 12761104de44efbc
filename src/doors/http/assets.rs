//! The built-in site: the demo page and ws.js, compiled into the binary so
//! `pagewire serve` needs nothing outside it.

/// One embedded file.
pub(crate) struct Asset {
    /// The URL path it is served at.
    pub(crate) path: &'static str,
    /// Its Content-Type.
    pub(crate) content_type: &'static str,
    /// Its bytes.
    pub(crate) body: &'static [u8],
    /// Its `Content-Security-Policy` header, for a document.
    pub(crate) csp: Option<&'static str>,
}

/// The demo page's policy: its script and style are files of its own
/// (`demo.js`, `demo.css`), so it needs no inline script or style, no eval,
/// and no other origin; `data:` is its icon. `connect-src 'self'` covers
/// its `ws://` or `wss://` socket and the broadcast button's POST.
pub(crate) const DEMO_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'self'";

/// The client library, served at `/ws.js` whatever the web root.
pub(crate) const WS_JS: Asset = Asset {
    path: "/ws.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../../../assets/ws.js"),
    csp: None,
};

/// The demo site, served when no `--root` is given.
pub(crate) const DEMO: &[Asset] = &[
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../assets/index.html"),
        csp: Some(DEMO_CSP),
    },
    Asset {
        path: "/demo.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../assets/demo.js"),
        csp: None,
    },
    Asset {
        path: "/demo.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../assets/demo.css"),
        csp: None,
    },
];

impl Asset {
    /// A strong validator for the embedded bytes (FNV-1a; the bytes never
    /// change while the binary runs, so any stable digest will do).
    pub(crate) fn etag(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.body {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("\"{h:016x}\"")
    }
}

/// The admin console (`/admin`): its page, under the demo page's policy,
/// its script and its style.
pub(crate) const ADMIN: &[Asset] = &[
    Asset {
        path: "/admin",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../assets/admin.html"),
        csp: Some(DEMO_CSP),
    },
    Asset {
        path: "/admin/admin.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../assets/admin.js"),
        csp: None,
    },
    Asset {
        path: "/admin/admin.css",
        content_type: "text/css; charset=utf-8",
        // The demo page's look, then the console's own rules.
        body: concat!(
            include_str!("../../../assets/demo.css"),
            include_str!("../../../assets/admin.css")
        )
        .as_bytes(),
        csp: None,
    },
];

/// The demo asset at `path` (`/` is `/index.html`).
pub(crate) fn demo(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    DEMO.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_page() -> &'static str {
        std::str::from_utf8(DEMO[0].body).expect("the demo page is UTF-8")
    }

    /// The values of `attr="..."` in `html`.
    fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let key = format!("{attr}=\"");
        html.match_indices(&key)
            .filter_map(|(at, _)| {
                let rest = &html[at + key.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect()
    }

    #[test]
    fn every_script_and_stylesheet_of_the_demo_page_is_embedded() {
        let page = demo_page();
        // Relative links, so that the page works under a base path too.
        let mut linked: Vec<String> = attribute_values(page, "src")
            .into_iter()
            .map(|src| format!("/{src}"))
            .collect();
        linked.extend(
            attribute_values(page, "href")
                .into_iter()
                .filter(|h| !h.contains(':') && !h.starts_with('#'))
                .map(|h| format!("/{h}")),
        );
        assert!(linked.contains(&"/demo.js".into()) && linked.contains(&"/demo.css".into()));
        for path in linked {
            let path = path.as_str();
            assert!(!path.starts_with("//"), "{path}: links are relative");
            assert!(
                demo(path).is_some() || path == WS_JS.path,
                "{path} is linked from the demo page but not embedded"
            );
        }
    }

    #[test]
    fn the_demo_page_has_no_inline_script_or_style_for_its_policy_to_forbid() {
        let page = demo_page();
        assert!(!page.contains("<style"), "inline <style>");
        assert!(!page.contains(" style=\""), "a style attribute");
        let handler = page.match_indices(" on").find(|(at, _)| {
            let rest = &page[at + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert_eq!(handler, None, "an inline event handler attribute");
        assert_eq!(
            page.matches("<script").count(),
            page.matches("<script src=\"").count() - page.matches("<script src=\"http").count(),
            "every <script> loads a file of this origin"
        );
        assert_eq!(demo("/").and_then(|a| a.csp), Some(DEMO_CSP));
        assert!(!DEMO_CSP.contains("unsafe"));
    }

    #[test]
    fn the_admin_page_links_only_its_embedded_files_and_has_no_inline_script() {
        let page = std::str::from_utf8(ADMIN[0].body).expect("the admin page is UTF-8");
        let mut linked = attribute_values(page, "src");
        linked.extend(
            attribute_values(page, "href")
                .into_iter()
                .filter(|h| !h.starts_with("data:")),
        );
        assert_eq!(linked, ["admin/admin.js", "admin/admin.css"]);
        for path in linked {
            // Relative to /admin, so that a proxy's path prefix keeps working.
            let at = format!("/{path}");
            assert!(ADMIN.iter().any(|a| a.path == at), "{path} is not embedded");
        }
        assert!(!page.contains("<style") && !page.contains(" style=\""));
        assert_eq!(page.matches("<script").count(), 1);
        assert_eq!(ADMIN[0].csp, Some(DEMO_CSP));
    }
}
