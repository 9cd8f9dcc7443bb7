//! Reading the query's parameters: the instants and date ranges of `dr_*` and the `sort`.

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};

/// The instant of the parameter `name` of a `dr_type=abs` query.
pub(super) fn instant_param(
    params: &HashMap<String, String>,
    name: &str,
    end_of_day: bool,
) -> Result<i64, String> {
    let text = params
        .get(name)
        .ok_or_else(|| format!("dr_type=abs needs {name}"))?;
    parse_instant(text, end_of_day).ok_or_else(|| {
        format!("{name} must be an ISO-8601 instant such as 2026-01-01T00:00:00.000Z, got {text:?}")
    })
}

/// An ISO-8601 instant, one without an offset (UTC, as Elasticsearch reads it), or a plain
/// date (its first or last millisecond).
pub(super) fn parse_instant(text: &str, end_of_day: bool) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(Utc.from_utc_datetime(&t).timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let start = Utc
        .from_utc_datetime(&date.and_hms_opt(0, 0, 0)?)
        .timestamp_millis();
    Some(if end_of_day {
        start + 86_400_000 - 1
    } else {
        start
    })
}

/// `last_15_m`, `last_1_h`, `last_24_h`, `last_7_d`, `today`, `yesterday`.
pub(super) fn quick_range(quick: &str, now: DateTime<Utc>) -> Result<(i64, i64), String> {
    let now_ms = now.timestamp_millis();
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| Utc.from_utc_datetime(&t).timestamp_millis());
    let bad = || {
        format!("dr_quick must be last_<N>_m, last_<N>_h, last_<N>_d, today or yesterday, got {quick:?}")
    };
    match quick {
        "today" => Ok((today.ok_or_else(bad)?, now_ms)),
        "yesterday" => {
            let t = today.ok_or_else(bad)?;
            Ok((t - 86_400_000, t - 1))
        }
        _ => {
            let rest = quick.strip_prefix("last_").ok_or_else(bad)?;
            let (n, unit) = rest.split_once('_').ok_or_else(bad)?;
            let n: i64 = n.parse().map_err(|_| bad())?;
            let span = match unit {
                "m" => ChronoDuration::try_minutes(n),
                "h" => ChronoDuration::try_hours(n),
                "d" => ChronoDuration::try_days(n),
                _ => return Err(bad()),
            }
            .ok_or_else(bad)?;
            Ok((now_ms.saturating_sub(span.num_milliseconds()), now_ms))
        }
    }
}

/// `field:asc,field:desc`: spaces around the parts, an upper-case direction and empty parts
/// (a trailing comma) are accepted, as a lenient server would.
pub(super) fn parse_sort(text: &str) -> Result<Vec<(String, bool)>, String> {
    let sort: Vec<(String, bool)> = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (field, dir) = part.split_once(':').unwrap_or((part, "asc"));
            let (field, dir) = (field.trim(), dir.trim());
            let asc = if dir.eq_ignore_ascii_case("asc") {
                true
            } else if dir.eq_ignore_ascii_case("desc") {
                false
            } else {
                return Err(format!(
                    "sort direction must be asc or desc, got {dir:?} in {text:?}"
                ));
            };
            if field.is_empty() {
                return Err(format!("sort needs a field name, got {text:?}"));
            }
            Ok((field.to_string(), asc))
        })
        .collect::<Result<_, _>>()?;
    if sort.is_empty() {
        return Err(format!("sort needs a field name, got {text:?}"));
    }
    Ok(sort)
}
