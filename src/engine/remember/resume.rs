//! Resume tokens: how a page proves, when it reconnects, that it is the
//! page that held an index.
//!
//! A token is `INDEX.MAC`, the MAC an HMAC-SHA256 of the index under a key
//! kept in the state directory (made once, at random), cut to 128 bits and
//! written in base64url. It needs no memory per page: the daemon checks a
//! token by computing its MAC again, and what the page may come back to is
//! the hub's to say (a parked index, or one of the previous daemon's, and
//! never a live one).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use subtle::ConstantTimeEq as _;

/// Bytes of the MAC a token carries.
const MAC_LEN: usize = 16;
/// Bytes of the key.
pub(crate) const KEY_LEN: usize = 32;
/// The longest token accepted (an index of 20 digits, a dot, the MAC).
pub(crate) const MAX_TOKEN_LEN: usize = 20 + 1 + 22;

/// Signs and checks resume tokens.
pub(crate) struct Tokens {
    key: hmac::Key,
}

impl Tokens {
    /// Tokens under `key` when it has [`KEY_LEN`] bytes; else under a new
    /// random key, returned too so that the caller can keep it.
    pub(crate) fn new(key: Option<&[u8]>) -> (Tokens, Option<Vec<u8>>) {
        if let Some(key) = key.filter(|k| k.len() == KEY_LEN) {
            let key = hmac::Key::new(hmac::HMAC_SHA256, key);
            return (Tokens { key }, None);
        }
        let mut fresh = vec![0; KEY_LEN];
        if SystemRandom::new().fill(&mut fresh).is_err() {
            // No randomness from the system: tokens of this run are then
            // as unguessable as the clock; the page still gets one.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            fresh[..16].copy_from_slice(&nanos.to_le_bytes());
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &fresh);
        (Tokens { key }, Some(fresh))
    }

    fn mac(&self, index: u64) -> [u8; MAC_LEN] {
        let tag = hmac::sign(&self.key, format!("pagewire resume {index}").as_bytes());
        let mut mac = [0; MAC_LEN];
        mac.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        mac
    }

    /// The token of `index`.
    pub(crate) fn issue(&self, index: u64) -> String {
        format!("{index}.{}", URL_SAFE_NO_PAD.encode(self.mac(index)))
    }

    /// The index `token` was issued for, if it was issued by this key.
    pub(crate) fn check(&self, token: &str) -> Option<u64> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let (index, mac) = token.split_once('.')?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let index: u64 = index.parse().ok().filter(|&i| i > 0)?;
        let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
        bool::from(given.ct_eq(&self.mac(index))).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_under_their_key_only() {
        let (tokens, key) = Tokens::new(None);
        let key = key.expect("a new key");
        let token = tokens.issue(7);
        assert!(
            token.starts_with("7.") && token.len() <= MAX_TOKEN_LEN,
            "{token}"
        );
        assert_eq!(tokens.check(&token), Some(7));
        let (again, none) = Tokens::new(Some(&key));
        assert!(none.is_none());
        assert_eq!(again.check(&token), Some(7));
        let (other, _) = Tokens::new(None);
        assert_eq!(other.check(&token), None);
        let forged = token.replacen("7.", "8.", 1);
        assert_eq!(tokens.check(&forged), None);
        for bad in [
            "",
            ".",
            "7",
            "7.",
            "x.abc",
            "-7.abc",
            "0.AAAA",
            &"9".repeat(60),
        ] {
            assert_eq!(tokens.check(bad), None, "{bad:?}");
        }
        assert_eq!(tokens.check(&tokens.issue(u64::MAX)), Some(u64::MAX));
    }
}
