//! How long to wait before retrying: exponential backoff with jitter, and the server's `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

/// The first retry waits about this long; each further one doubles it (up to the configured cap).
const BASE_BACKOFF: Duration = Duration::from_millis(500);

/// The wait before retry number `retry` (0-based): `BASE * 2^retry`, capped at `max`, then scaled by a
/// random factor in [0.5, 1] so many sessions that failed together do not retry in lockstep.
pub(crate) fn backoff(retry: u32, max: Duration) -> Duration {
    backoff_from(BASE_BACKOFF, retry, max)
}

/// Like [`backoff`] with another first wait.
pub(crate) fn backoff_from(base: Duration, retry: u32, max: Duration) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(retry.min(20)));
    exponential.min(max).mul_f64(rand::random_range(0.5..=1.0))
}

/// The wait a server asked for, from `retry-after-ms` (sent by OpenAI and Azure) or `Retry-After`
/// (seconds or an HTTP date).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return non_negative_secs(ms / 1000.0);
    }
    let value = header("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return non_negative_secs(seconds);
    }
    let when = parse_http_date(value)?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// The wait a failed response asks for: `Retry-After` (or `retry-after-ms`) when present; for a 429
/// without it, the reset time of the exhausted rate limit from OpenAI's `x-ratelimit-*` or Anthropic's
/// `anthropic-ratelimit-*` headers.
pub(crate) fn server_wait(status: u16, headers: &HeaderMap) -> Option<Duration> {
    retry_after(headers).or_else(|| (status == 429).then(|| limit_reset(headers)).flatten())
}

/// The limits both APIs report, as (remaining header, reset header, how the reset is written).
const LIMIT_HEADERS: [(&str, &str, ResetForm); 6] = [
    (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        ResetForm::GoDuration,
    ),
    (
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        ResetForm::GoDuration,
    ),
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        ResetForm::Rfc3339,
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        ResetForm::Rfc3339,
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        ResetForm::Rfc3339,
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
        ResetForm::Rfc3339,
    ),
];

#[derive(Clone, Copy)]
enum ResetForm {
    /// OpenAI: a Go duration such as `6m0s`, `1.5s` or `20ms`.
    GoDuration,
    /// Anthropic: the moment the limit is replenished, e.g. `2025-01-01T00:00:30Z`.
    Rfc3339,
}

/// When a 429 names no wait: the latest reset among the limits reported exhausted (remaining 0), since
/// all of them must recover; if none says which is exhausted, the soonest reset, after which at
/// least something has recovered (backoff covers the rest).
fn limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let mut exhausted: Option<Duration> = None;
    let mut soonest: Option<Duration> = None;
    for (remaining, reset, form) in LIMIT_HEADERS {
        let Some(wait) = header(reset).and_then(|value| parse_reset(value, form)) else {
            continue;
        };
        if header(remaining).and_then(|v| v.parse::<u64>().ok()) == Some(0) {
            exhausted = Some(exhausted.map_or(wait, |w| w.max(wait)));
        }
        soonest = Some(soonest.map_or(wait, |w| w.min(wait)));
    }
    exhausted.or(soonest)
}

fn parse_reset(value: &str, form: ResetForm) -> Option<Duration> {
    match form {
        ResetForm::GoDuration => parse_go_duration(value),
        ResetForm::Rfc3339 => {
            let when = parse_rfc3339(value)?;
            Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
        }
    }
}

/// Parses a Go-style duration: one or more `<number><unit>` with units `h`, `m`, `s`, `ms`, `us`/`µs`
/// or `ns` (`1h2m3.5s`, `6m0s`, `20ms`). A bare number is taken as seconds.
pub(crate) fn parse_go_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return non_negative_secs(seconds);
    }
    let mut total = 0.0_f64;
    let mut rest = value;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    non_negative_secs(total)
}

/// Parses an RFC 3339 timestamp (`2025-01-01T00:00:30Z`, `2025-01-01T02:00:30.5+02:00`).
pub(crate) fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    let (date, time) = value.split_once(['T', 't', ' '])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_seconds) = split_zone(time)?;
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let fraction: f64 = if fraction.is_empty() {
        0.0
    } else {
        format!("0.{fraction}").parse().ok()?
    };
    let days = days_from_civil(year, month, day);
    let local = days * 86_400 + i64::try_from(hour * 3600 + minute * 60 + second).ok()?;
    let utc = u64::try_from(local - offset_seconds).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(utc) + Duration::try_from_secs_f64(fraction).ok()?)
}

/// Splits `HH:MM:SS[.f](Z|±HH:MM)` into the clock part and the zone's offset east of UTC in seconds.
fn split_zone(time: &str) -> Option<(&str, i64)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let sign_at = time.rfind(['+', '-'])?;
    let (clock, zone) = time.split_at(sign_at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let (hours, minutes) = zone[1..].split_once(':')?;
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((clock, sign * (hours * 3600 + minutes * 60)))
}

fn non_negative_secs(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds.max(0.0)).ok()
}

/// Parses the IMF-fixdate form of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form
/// servers are allowed to send today.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let (_weekday, rest) = value.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = month_number(parts.next()?)?;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" || day == 0 || day > 31 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's well-known algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let cap = Duration::from_secs(3);
        for retry in 0..40 {
            let wait = backoff(retry, cap);
            assert!(wait <= cap, "retry {retry} waited {wait:?}");
        }
        let first = backoff(0, cap);
        assert!(first >= BASE_BACKOFF / 2 && first <= BASE_BACKOFF);
        assert!(backoff(3, Duration::from_secs(60)) >= Duration::from_secs(2));
    }

    #[test]
    fn reads_retry_after_in_every_form() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            retry_after(&headers),
            Some(Duration::ZERO),
            "a past date means now"
        );
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn reads_openai_rate_limit_resets_on_429_only() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("5"));
        headers.insert("x-ratelimit-reset-requests", HeaderValue::from_static("6m0s"));
        headers.insert("x-ratelimit-remaining-tokens", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("1.5s"));
        assert_eq!(server_wait(429, &headers), Some(Duration::from_millis(1500)));
        assert_eq!(
            server_wait(500, &headers),
            None,
            "reset headers only explain a 429"
        );
        headers.insert("x-ratelimit-remaining-tokens", HeaderValue::from_static("7"));
        assert_eq!(
            server_wait(429, &headers),
            Some(Duration::from_millis(1500)),
            "none exhausted: the soonest reset"
        );
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(
            server_wait(429, &headers),
            Some(Duration::from_secs(3)),
            "Retry-After wins"
        );
        assert_eq!(server_wait(503, &headers), Some(Duration::from_secs(3)));
    }

    #[test]
    fn reads_anthropic_rate_limit_resets() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-ratelimit-tokens-remaining",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "anthropic-ratelimit-tokens-reset",
            HeaderValue::from_static("2999-01-01T00:00:00Z"),
        );
        headers.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("9"),
        );
        headers.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_static("2000-01-01T00:00:00Z"),
        );
        let wait = server_wait(429, &headers).expect("a wait");
        assert!(
            wait > Duration::from_secs(100 * 365 * 86_400),
            "the exhausted limit decides: {wait:?}"
        );
        headers.insert(
            "anthropic-ratelimit-tokens-remaining",
            HeaderValue::from_static("3"),
        );
        assert_eq!(
            server_wait(429, &headers),
            Some(Duration::ZERO),
            "a reset in the past is now"
        );
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("5d"), None);
        assert_eq!(parse_go_duration("s"), None);
    }

    #[test]
    fn parses_rfc3339() {
        let epoch_plus = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(parse_rfc3339("1994-11-06T08:49:37Z"), epoch_plus(784_111_777));
        assert_eq!(
            parse_rfc3339("1994-11-06T10:49:37+02:00"),
            epoch_plus(784_111_777)
        );
        assert_eq!(
            parse_rfc3339("1994-11-06T07:49:37-01:00"),
            epoch_plus(784_111_777)
        );
        assert_eq!(
            parse_rfc3339("1994-11-06T08:49:37.25Z"),
            Some(UNIX_EPOCH + Duration::from_millis(784_111_777_250))
        );
        assert_eq!(parse_rfc3339("1994-11-06 08:49:37Z"), epoch_plus(784_111_777));
        assert_eq!(parse_rfc3339("1994-13-06T08:49:37Z"), None);
        assert_eq!(parse_rfc3339("1994-11-06T08:49:37"), None, "a zone is required");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn parses_http_dates() {
        let when = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(when, Some(UNIX_EPOCH + Duration::from_secs(784_111_777)));
        let leap = parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(leap, Some(UNIX_EPOCH + Duration::from_secs(1_709_164_800)));
        assert_eq!(parse_http_date("06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }
}
