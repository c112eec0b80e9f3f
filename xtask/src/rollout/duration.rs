//! Durations as the plugin and kubectl take them: Go's `time.ParseDuration`
//! grammar, in exact integer nanoseconds, within what Go's `time.Duration` holds.

use std::time::Duration;

/// The longest duration the plugin accepts: Go's `time.Duration` is an i64 of nanoseconds.
const GO_MAX_DURATION_NANOS: u128 = i64::MAX as u128;
/// [`GO_MAX_DURATION_NANOS`] as Go writes it.
const GO_MAX_DURATION_TEXT: &str = "2562047h47m16.854775807s";

/// A duration as the plugin takes it (Go's `time.ParseDuration` units): `300s`, `5m`, `1m30s`, `500ms`, `1h`.
/// Exact integer arithmetic, as Go's: anything longer than Go's `time.Duration`
/// holds is refused here rather than overflowing later.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {text:?}: use a number with a unit, h, m, s or ms, such as 300s, 5m or 1m30s"
        )
    };
    let too_long = || {
        format!(
            "invalid duration {text:?}: it is longer than the longest the plugin accepts \
             ({GO_MAX_DURATION_TEXT}, Go's time.Duration); use a shorter one, such as 300s or 1h"
        )
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (whole, fraction) = rest[..number_len]
            .split_once('.')
            .unwrap_or((&rest[..number_len], ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(invalid());
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos: u128 = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        // Leading zeros make no number longer; more than 30 digits always are too long.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 30 {
            return Err(too_long());
        }
        let whole: u128 = match whole {
            "" => 0,
            digits => digits.parse().map_err(|_| invalid())?,
        };
        // Digits beyond the 18th are below a nanosecond even for hours: dropped, as Go does.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_nanos = match fraction {
            "" => 0,
            digits => {
                let value: u128 = digits.parse().map_err(|_| invalid())?;
                value * unit_nanos / 10u128.pow(digits.len() as u32)
            }
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(total))
            .filter(|n| *n <= GO_MAX_DURATION_NANOS)
            .ok_or_else(too_long)?;
    }
    if total < 1_000_000 {
        // The plugin reads a zero --timeout as "wait forever".
        return Err(format!(
            "invalid duration {text:?}: it must be at least 1ms, such as 300s or 5m"
        ));
    }
    let total = u64::try_from(total).map_err(|_| too_long())?;
    Ok(Duration::from_nanos(total))
}

/// A duration written the way the plugin's `--timeout` parses it: `300s`,
/// `1500ms`, and in nanoseconds when nothing coarser is exact.
pub fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos % 1_000_000_000 == 0 {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else {
        format!("{nanos}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_go_units() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "300", "5x", "s", "m5", "-5s"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("300s, 5m or 1m30s"), "{bad}: {err}");
        }
        let err = parse_duration("0s").unwrap_err();
        assert!(err.contains("at least 1ms"), "{err}");
    }

    #[test]
    fn durations_go_cannot_hold_are_refused_when_parsed() {
        let max = Duration::from_nanos(i64::MAX as u64);
        assert_eq!(parse_duration("2562047h47m16.854775807s"), Ok(max));
        for bad in [
            "2562047h47m16.854775808s",
            "2562048h",
            "9223372036855s",
            "10000000000000000000s",
            "18446744073709551616s",
            "99999999999999999999999999999999999999999h",
            "2562047h2562047h",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("2562047h47m16.854775807s"), "{bad}: {err}");
            assert!(err.contains("use a shorter one"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_are_exact_not_rounded_through_a_float() {
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("1.0000001s"),
            Ok(Duration::from_nanos(1_000_000_100))
        );
        assert_eq!(
            parse_duration("0000000000000000000000000000000000000001s"),
            Ok(Duration::from_secs(1))
        );
        for bad in [".s", "1..5s", "1.5.5s", "."] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("300s, 5m or 1m30s"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_are_written_as_the_plugin_parses_them() {
        assert_eq!(go_duration(Duration::from_secs(300)), "300s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        let max = Duration::from_nanos(i64::MAX as u64);
        assert_eq!(go_duration(max), "9223372036854775807ns");
        assert_eq!(
            go_duration(Duration::from_nanos(1_000_000_100)),
            "1000000100ns"
        );
    }
}
