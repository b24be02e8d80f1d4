//! Times as people read them: "3 s ago" and local dates, in the CLI's tables and on the
//! dashboard, where the browser shows the date in its own zone and keeps counting
//! (`ui/assets/app.js` spells spans the same way).

use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// A moment on a page.
#[derive(Debug, Clone)]
pub(crate) struct When {
    /// RFC 3339 in UTC, for `<time datetime>`; the browser shows it as a local date.
    pub(crate) iso: String,
    /// How long ago (or, ahead, "in 5 s").
    pub(crate) ago: String,
    /// How long ago, as a span alone: "5 s".
    pub(crate) span: String,
}

impl When {
    pub(crate) fn at(millis: u64) -> Self {
        let now = taskbox_core::model::unix_millis(SystemTime::now());
        let iso = DateTime::<Utc>::from_timestamp_millis(millis as i64)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let ago = if millis <= now {
            format!("{} ago", span(now - millis))
        } else {
            format!("in {}", span(millis - now))
        };
        Self {
            iso,
            ago,
            span: span(now.saturating_sub(millis)),
        }
    }
}

impl When {
    /// The moment an RFC 3339 date names, if it names one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let moment = DateTime::parse_from_rfc3339(text).ok()?;
        Some(Self::at(u64::try_from(moment.timestamp_millis()).ok()?))
    }
}

/// `millis` (since the Unix epoch) as a local date and time, to the second.
pub(crate) fn local_date(millis: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis as i64)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// How long ago `millis` (since the Unix epoch) was: "3 s ago".
pub(crate) fn ago(millis: u64) -> String {
    When::at(millis).ago
}

/// A span of `millis` in its largest whole unit: `850 ms`, `3 s`, `4 min`, `2 h`, `5 d`.
pub(crate) fn span(millis: u64) -> String {
    match millis {
        0..1_000 => format!("{millis} ms"),
        1_000..60_000 => format!("{} s", millis / 1_000),
        60_000..3_600_000 => format!("{} min", millis / 60_000),
        3_600_000..86_400_000 => format!("{} h", millis / 3_600_000),
        _ => format!("{} d", millis / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn a_span_is_shown_in_its_largest_whole_unit() {
        assert_eq!(span(850), "850 ms");
        assert_eq!(span(3_400), "3 s");
        assert_eq!(span(61_000), "1 min");
        assert_eq!(span(7_300_000), "2 h");
        assert_eq!(span(5 * 86_400_000), "5 d");
    }
}
