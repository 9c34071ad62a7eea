//! Value types that configuration sections share: durations written as text
//! (`30s`, `5m`), and secrets that never print. Each feature owns its own
//! section type; these are the pieces they have in common, so no feature
//! needs to import `config`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{Locale, TimeZone};

/// A duration written as text: `500ms`, `30s`, `5m`, `1h 30m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn get(self) -> Duration {
        self.0
    }

    pub const fn secs(s: u64) -> Self {
        ConfigDuration(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(ConfigDuration)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration; write e.g. 500ms, 30s, 5m, 1h 30m or 7d"
                ))
            })
    }
}

/// A credential from config (an API key, a token, a password). It prints as
/// `[redacted]` in `Debug` and `Display`, so a config dumped into a log or an
/// error never carries it; code that needs the value calls `expose`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: only for signing, authenticating or comparing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

macro_rules! deserialize_via_parse {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_via_parse!(TimeZone, Locale);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("hunter2-very-long-token");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2-very-long-token");
    }
}
