//! Reading the configuration file into the parts' settings, with every
//! error at its line and column.
//!
//! Each part is read straight from the document (serde's `flatten` would
//! first copy the document into a buffer, and its errors would lose where
//! they were), and the keys are checked against what the parts declare:
//! serde's own list of each struct's fields, so a key is declared once,
//! on its part. A key no part reads is refused as `deny_unknown_fields`
//! refuses one: at its line, with the keys that are read.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::doors::control::ControlSettings;
use crate::doors::http::metrics::MetricsSettings;
use crate::doors::http::settings::{HttpSettings, ServerLimits};
use crate::doors::page::driver::PageLimits;
use crate::engine::actions::{ActionConfig, ActionLimits};
use crate::engine::backplane::redis::{ClusterConfig, RedisSettings};
use crate::engine::exec::PagesSettings;
use crate::engine::hub::{HeartbeatSettings, HubSettings};

/// The tables of the file that belong to one part each.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Tables {
    pub(super) heartbeat: HeartbeatSettings,
    pub(super) pages: PagesSettings,
    pub(super) actions: std::collections::BTreeMap<String, ActionConfig>,
    pub(super) cluster: ClusterConfig,
    pub(super) metrics: MetricsSettings,
}

/// One part's share of `[limits]`, read from the whole document.
#[derive(Deserialize, Default)]
#[serde(default)]
struct InLimits<T: Default> {
    limits: T,
}

/// Fails on a key of `text` that no part reads (at its line, listing those
/// that are read), as `deny_unknown_fields` would.
pub(super) fn check_keys(text: &str) -> Result<(), toml::de::Error> {
    toml::from_str::<KnownKeys>(text).map(|KnownKeys| ())
}

/// One part's share of `[limits]` in `text`.
pub(super) fn limits<T: DeserializeOwned + Default>(text: &str) -> Result<T, toml::de::Error> {
    toml::from_str::<InLimits<T>>(text).map(|l| l.limits)
}

/// The keys at the top of the file: the flagged parts' fields, then the
/// tables.
fn top_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        keys.extend(fields_of::<HttpSettings>());
        keys.extend(fields_of::<ControlSettings>());
        keys.extend(fields_of::<RedisSettings>());
        keys.extend(fields_of::<crate::base::logline::LogSettings>());
        keys.extend(fields_of::<Tables>());
        keys.push("limits");
        keys
    })
}

/// The keys of `[limits]`, every part's.
fn limits_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        keys.extend(fields_of::<HubSettings>());
        keys.extend(fields_of::<PageLimits>());
        keys.extend(fields_of::<ServerLimits>());
        keys.extend(fields_of::<ActionLimits>());
        keys
    })
}

/// Accepts a document whose keys (and those of `[limits]`) some part reads.
struct KnownKeys;

impl<'de> Deserialize<'de> for KnownKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(KeysOf(top_keys())).map(|()| KnownKeys)
    }
}

/// A table whose keys must be among these; a key `limits` holds a table
/// of its own whose keys are checked too.
#[derive(Clone, Copy)]
struct KeysOf(&'static [&'static str]);

impl<'de> Visitor<'de> for KeysOf {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(self)? {
            if key == "limits" && self.0 == top_keys() {
                map.next_value_seed(LimitsTableKeys)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for KeysOf {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let key = String::deserialize(d)?;
        if self.0.contains(&key.as_str()) {
            Ok(key)
        } else {
            Err(de::Error::unknown_field(&key, self.0))
        }
    }
}

/// The value of `limits`: a table of known keys.
struct LimitsTableKeys;

impl<'de> DeserializeSeed<'de> for LimitsTableKeys {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(KeysOf(limits_keys()))
    }
}

/// The field names serde derived for struct `T`: asked of a deserializer
/// that only listens.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let probe = FieldsProbe(Cell::new(&[]));
    let _ = T::deserialize(&probe);
    probe.0.get()
}

/// A deserializer that remembers the fields it is asked for, then fails.
struct FieldsProbe(Cell<&'static [&'static str]>);

#[derive(Debug)]
struct Probed;

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fields listed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probed
    }
}

impl<'de> Deserializer<'de> for &FieldsProbe {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        self.0.set(fields);
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_declares_its_keys() {
        let top = top_keys();
        for key in [
            "listen",
            "allowed_hosts",
            "control",
            "redis",
            "limits",
            "actions",
        ] {
            assert!(top.contains(&key), "{key}: {top:?}");
        }
        for key in ["outbox_bytes", "max_partial_bytes", "body_timeout_secs"] {
            assert!(limits_keys().contains(&key), "{key}");
        }
    }

    #[test]
    fn errors_name_the_line_of_the_key_or_value() {
        for (text, line, what) in [
            (
                "access = \"private\"\nbogus = 5\n",
                2,
                "unknown field `bogus`, expected one of",
            ),
            (
                "access = \"private\"\nlisten = 5\n",
                2,
                "invalid type: integer `5`",
            ),
            (
                "[limits]\nmax_connections = \"x\"\n",
                2,
                "invalid type: string \"x\"",
            ),
            ("[limits]\n\nbogus = 1\n", 3, "unknown field `bogus`"),
            ("[heartbeat]\nbogus = 1\n", 2, "unknown field `bogus`"),
        ] {
            let e = crate::app::config::ServeConfig::parse(text)
                .map(|_| ())
                .expect_err(text)
                .to_string();
            assert!(e.contains(&format!("at line {line},")), "{text:?}: {e}");
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }
}
