//! The built-in site: the demo page and ws.js, compiled into the binary so
//! `pagewire serve` needs nothing outside it.

/// One embedded file.
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its Content-Type.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The client library, served at `/ws.js` whatever the web root.
pub const WS_JS: Asset = Asset {
    path: "/ws.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../../assets/ws.js"),
};

/// The demo site, served when no `--root` is given.
pub const DEMO: &[Asset] = &[Asset {
    path: "/index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../assets/index.html"),
}];

impl Asset {
    /// A strong validator for the embedded bytes (FNV-1a; the bytes never
    /// change while the binary runs, so any stable digest will do).
    pub fn etag(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.body {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("\"{h:016x}\"")
    }
}

/// The demo asset at `path` (`/` is `/index.html`).
pub fn demo(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    DEMO.iter().find(|a| a.path == path)
}
