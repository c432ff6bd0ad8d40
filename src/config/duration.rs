//! Durations in the configuration: humantime strings (`500ms`, `1s`, `5m`),
//! bounded so that no deadline computed from one can overflow a clock.
//!
//! A bare number is refused with the form that is expected: `interval: 1`
//! could mean seconds or milliseconds, and guessing wrong is an outage.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

/// The longest duration any key accepts. Nothing remora waits for or
/// compares against is sensibly longer, and deadlines built from it stay
/// far from the end of any clock.
/// One year, as humantime counts it (365.25 days), so `1y` is accepted.
pub const MAX: Duration = Duration::from_secs(31_557_600);

pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    humantime_serde::serialize(duration, serializer)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit, like 500ms, 1s or 5m")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let duration = humantime::parse_duration(text.trim()).map_err(|err| {
            E::custom(format!(
                "invalid duration {text:?} ({err}); write it like 500ms, 1s or 5m"
            ))
        })?;
        if duration > MAX {
            return Err(E::custom(format!(
                "duration {text:?} is too long: at most {}",
                humantime::format_duration(MAX)
            )));
        }
        Ok(duration)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a bare number ({n}) is not a duration; write it with a unit, like {n}s or {n}ms"
        )))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a bare number ({n}) is not a duration; write it with a unit, like 1s or 500ms"
        )))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a bare number ({n}) is not a duration; write it with a unit, like 1s or 500ms"
        )))
    }
}

/// For `Option<Duration>` keys (pool overrides).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        humantime_serde::option::serialize(duration, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Bounded(#[serde(with = "super")] Duration);
        Ok(Option::<Bounded>::deserialize(deserializer)?.map(|Bounded(duration)| duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Key {
        #[serde(with = "super")]
        d: Duration,
    }

    fn parse(text: &str) -> Result<Duration, String> {
        serde_yaml::from_str::<Key>(text)
            .map(|key| key.d)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn durations_are_written_with_a_unit_and_bounded() {
        assert_eq!(parse("d: 500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("d: 1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("d: 1y"), Ok(MAX));
        assert_eq!(parse("d: 365d"), Ok(Duration::from_secs(365 * 86400)));
        let bare = parse("d: 1").unwrap_err();
        assert!(bare.contains("write it with a unit, like 1s"), "{bare}");
        let absurd = parse("d: 300000000000y").unwrap_err();
        assert!(absurd.contains("at most 1year"), "{absurd}");
        assert!(parse("d: 366d").unwrap_err().contains("too long"));
        assert!(
            parse("d: soon")
                .unwrap_err()
                .contains("like 500ms, 1s or 5m")
        );
        assert!(parse("d: -1s").is_err());
        assert!(parse("d: 1.5").unwrap_err().contains("bare number"));
    }
}
