//! When a delivery reached us: a UTC instant, written as RFC 3339 with nine fraction digits.
//!
//! One width for every instant makes the text sort as the time does, so SQLite's
//! `ORDER BY received_at` and the merchant index's sort key (`received_at#event_id`) order
//! events by time. RFC 3339's own shortest form does not: `…:00.5Z` sorts before `…:00Z`.
//! Any RFC 3339 text reads, in any offset, including the shorter forms stored earlier.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(OffsetDateTime::now_utc())
    }

    /// `by` earlier (the earliest instant RFC 3339 writes, at most).
    pub fn minus(self, by: std::time::Duration) -> Self {
        let earliest = time::macros::datetime!(0000-01-01 00:00 UTC);
        Self(
            self.0
                .checked_sub(time::Duration::try_from(by).unwrap_or(time::Duration::MAX))
                .unwrap_or(earliest)
                .max(earliest),
        )
    }

    /// RFC 3339 in whole seconds, the fraction cut off (`down`) or carried up: what an API that
    /// filters by inclusive bounds is asked, so a bound never leaves out its own second.
    pub fn whole_seconds(self, down: bool) -> String {
        let t = self.0.replace_nanosecond(0).unwrap_or(self.0);
        let t = if down || t == self.0 { t } else { t + time::Duration::SECOND };
        t.format(&Rfc3339).unwrap_or_else(|_| self.to_string())
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(at: OffsetDateTime) -> Self {
        Self(at.to_offset(UtcOffset::UTC))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 3339 admits only years 0000–9999, so every instant we read or make has four digits.
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond()
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Timestamp {
    type Err = time::error::Parse;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OffsetDateTime::parse(text, &Rfc3339).map(Self::from)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Rfc3339Text;
        impl de::Visitor<'_> for Rfc3339Text {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Timestamp, E> {
                text.parse().map_err(|e| E::custom(format_args!("{text:?} is not an RFC 3339 time: {e}")))
            }
        }
        deserializer.deserialize_str(Rfc3339Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn every_instant_is_written_at_one_width_in_utc() {
        assert_eq!(at("2026-12-01T00:00:00Z").to_string(), "2026-12-01T00:00:00.000000000Z");
        assert_eq!(at("2026-12-01T00:00:00.5Z").to_string(), "2026-12-01T00:00:00.500000000Z");
        assert_eq!(at("2026-12-01T05:30:00.123456789+05:30").to_string(), "2026-12-01T00:00:00.123456789Z");
    }

    #[test]
    fn the_text_sorts_as_the_time_does() {
        // Shortest-form RFC 3339 sorts these the wrong way round; one width does not.
        let (whole, half) = (at("2026-12-01T00:00:00Z"), at("2026-12-01T00:00:00.5Z"));
        assert!("2026-12-01T00:00:00.5Z" < "2026-12-01T00:00:00Z");
        assert!(whole < half);
        assert!(whole.to_string() < half.to_string());
    }

    #[test]
    fn it_reads_back_exactly_what_it_wrote() {
        let now = Timestamp::now();
        assert_eq!(now.to_string().parse::<Timestamp>().unwrap(), now);
        let json = serde_json::to_string(&now).unwrap();
        assert_eq!(json, format!("\"{now}\""));
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), now);
    }

    #[test]
    fn text_that_is_not_rfc_3339_is_refused() {
        for text in ["", "2026-12-01", "2026-12-01T00:00:00", "1764547200", "yesterday"] {
            assert!(text.parse::<Timestamp>().is_err(), "{text:?}");
        }
        let err = serde_json::from_str::<Timestamp>("\"2026-13-01T00:00:00Z\"").unwrap_err();
        assert!(err.to_string().contains("is not an RFC 3339 time"), "{err}");
    }
}
