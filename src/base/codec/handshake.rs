//! The server's half of the RFC 6455 opening handshake: checks the upgrade
//! request's headers and computes `Sec-WebSocket-Accept`, independent of any
//! HTTP library.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the client's key before hashing it.
pub(crate) const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version spoken, for `Sec-WebSocket-Version`.
pub const SUPPORTED_VERSION: &str = "13";

/// Why an upgrade request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The request method is not GET.
    #[error("WebSocket handshake requires GET")]
    MethodNotGet,
    /// No `Upgrade` header naming `websocket`.
    #[error("missing Upgrade: websocket header")]
    MissingUpgrade,
    /// No `Connection` header with the `upgrade` token.
    #[error("missing Connection: upgrade header")]
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Version` header.
    #[error("missing Sec-WebSocket-Version header")]
    MissingVersion,
    /// A version other than 13: answer 426 with `Sec-WebSocket-Version: 13`
    /// so the client can retry with a version spoken here.
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key` header.
    #[error("missing Sec-WebSocket-Key header")]
    MissingKey,
    /// A key that is not the base64 of 16 bytes.
    #[error("invalid Sec-WebSocket-Key header")]
    InvalidKey,
}

impl HandshakeError {
    /// The HTTP status to refuse the request with: 426 Upgrade Required for
    /// an unsupported version, else 400 Bad Request.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`:
/// base64 of the SHA-1 of the key followed by [`WEBSOCKET_GUID`].
///
/// Whitespace around the key is ignored, as it is by [`validate_request`].
pub fn accept_key(client_key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key.trim().as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// Checks that a request is a valid WebSocket upgrade (RFC 6455, section
/// 4.2.1).
///
/// Takes the request method and the values of `Sec-WebSocket-Version`,
/// `Sec-WebSocket-Key`, `Upgrade` and `Connection`, each `None` when the
/// header is absent; a header sent more than once is passed joined with
/// commas, as HTTP allows for list headers. The checks run in that order of
/// plausibility: a plain GET without `Upgrade` is told so, not told about
/// its version.
pub fn validate_request(
    method: &str,
    version: Option<&str>,
    key: Option<&str>,
    upgrade: Option<&str>,
    connection: Option<&str>,
) -> Result<(), HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if !upgrade.is_some_and(|v| has_token(v, "websocket")) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !connection.is_some_and(|v| has_token(v, "upgrade")) {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    match version.map(str::trim) {
        None => return Err(HandshakeError::MissingVersion),
        Some(SUPPORTED_VERSION) => {}
        Some(_) => return Err(HandshakeError::UnsupportedVersion),
    }
    let key = key.ok_or(HandshakeError::MissingKey)?;
    // The key is a random 16-byte nonce; anything else is not a client
    // speaking RFC 6455.
    match STANDARD.decode(key.trim()) {
        Ok(nonce) if nonce.len() == 16 => Ok(()),
        _ => Err(HandshakeError::InvalidKey),
    }
}

/// Whether the comma-separated header value contains `token`, compared
/// without regard to ASCII case.
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455, section 1.3 (and the handshake example in section 4.2.2).
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            accept_key("  dGhlIHNhbXBsZSBub25jZQ== "),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_requests_pass() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("13", KEY, "websocket", "Upgrade"),
            (" 13 ", KEY, "WebSocket", "upgrade"),
            ("13", KEY, "WEBSOCKET", "keep-alive, Upgrade"),
            ("13", KEY, "websocket", "keep-alive,upgrade , close"),
            ("13", KEY, "h2c, websocket", "UPGRADE"),
            ("13", " AAAAAAAAAAAAAAAAAAAAAA== ", "websocket", "Upgrade"),
        ];
        for &(version, key, upgrade, connection) in cases {
            assert_eq!(
                validate_request(
                    "GET",
                    Some(version),
                    Some(key),
                    Some(upgrade),
                    Some(connection)
                ),
                Ok(()),
                "{version:?} {key:?} {upgrade:?} {connection:?}"
            );
        }
    }

    #[test]
    fn invalid_requests_are_refused() {
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            HandshakeError,
        );
        let ok = (Some("13"), Some(KEY), Some("websocket"), Some("Upgrade"));
        let cases: &[Case] = &[
            ("POST", ok.0, ok.1, ok.2, ok.3, HandshakeError::MethodNotGet),
            ("get", ok.0, ok.1, ok.2, ok.3, HandshakeError::MethodNotGet),
            (
                "GET",
                ok.0,
                ok.1,
                None,
                ok.3,
                HandshakeError::MissingUpgrade,
            ),
            (
                "GET",
                ok.0,
                ok.1,
                Some("h2c"),
                ok.3,
                HandshakeError::MissingUpgrade,
            ),
            (
                "GET",
                ok.0,
                ok.1,
                Some("websockets"),
                ok.3,
                HandshakeError::MissingUpgrade,
            ),
            (
                "GET",
                ok.0,
                ok.1,
                ok.2,
                None,
                HandshakeError::MissingConnectionUpgrade,
            ),
            (
                "GET",
                ok.0,
                ok.1,
                ok.2,
                Some("keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
            ),
            (
                "GET",
                ok.0,
                ok.1,
                ok.2,
                Some("upgraded"),
                HandshakeError::MissingConnectionUpgrade,
            ),
            (
                "GET",
                None,
                ok.1,
                ok.2,
                ok.3,
                HandshakeError::MissingVersion,
            ),
            (
                "GET",
                Some("8"),
                ok.1,
                ok.2,
                ok.3,
                HandshakeError::UnsupportedVersion,
            ),
            (
                "GET",
                Some("13, 8"),
                ok.1,
                ok.2,
                ok.3,
                HandshakeError::UnsupportedVersion,
            ),
            (
                "GET",
                Some(""),
                ok.1,
                ok.2,
                ok.3,
                HandshakeError::UnsupportedVersion,
            ),
            ("GET", ok.0, None, ok.2, ok.3, HandshakeError::MissingKey),
            (
                "GET",
                ok.0,
                Some(""),
                ok.2,
                ok.3,
                HandshakeError::InvalidKey,
            ),
            (
                "GET",
                ok.0,
                Some("not base64!"),
                ok.2,
                ok.3,
                HandshakeError::InvalidKey,
            ),
            // 15 and 17 bytes.
            (
                "GET",
                ok.0,
                Some("AAAAAAAAAAAAAAAAAAAA"),
                ok.2,
                ok.3,
                HandshakeError::InvalidKey,
            ),
            (
                "GET",
                ok.0,
                Some("AAAAAAAAAAAAAAAAAAAAAAA="),
                ok.2,
                ok.3,
                HandshakeError::InvalidKey,
            ),
            // 16 bytes, but without padding.
            (
                "GET",
                ok.0,
                Some("dGhlIHNhbXBsZSBub25jZQ"),
                ok.2,
                ok.3,
                HandshakeError::InvalidKey,
            ),
        ];
        for &(method, version, key, upgrade, connection, expected) in cases {
            assert_eq!(
                validate_request(method, version, key, upgrade, connection),
                Err(expected),
                "{method:?} {version:?} {key:?} {upgrade:?} {connection:?}"
            );
        }
    }

    #[test]
    fn statuses_and_messages() {
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
        assert_eq!(HandshakeError::MissingKey.status(), 400);
        assert_eq!(
            HandshakeError::MissingKey.to_string(),
            "missing Sec-WebSocket-Key header"
        );
    }
}
