//! `--expire DURATION` and `--max-downloads N` (send and the daemon's
//! share): parsing, and durations shown to people.

use std::time::{Duration, SystemTime};

use peerdrop::manifest::Expiry;

/// Most receivers `--max-downloads` may count: the sharer remembers each
/// one's peer id until the limit is reached.
pub const MAX_DOWNLOADS: u32 = 100_000;

/// Parses `30m`, `2h`, `7d`, `90s`, `1w`: a whole number and one unit
/// (s, m, h, d, w); at least one second.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{s:?} is not a duration: a whole number and one of s, m, h, d, w (30m, 2h, 7d)")
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let total = n.checked_mul(secs).filter(|&t| t > 0).ok_or_else(bad)?;
    Ok(Duration::from_secs(total))
}

/// The expiry `after` from now, if given.
pub fn expiry_after(after: Option<Duration>) -> anyhow::Result<Option<Expiry>> {
    after
        .map(|d| Expiry::after(SystemTime::now(), d).map_err(|e| anyhow::anyhow!("--expire: {e}")))
        .transpose()
}

/// `2d 3h`, `5h 12m`, `4m 10s`, `12s`: the two largest units.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_strictly_and_show_two_units() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        for bad in [
            "",
            "m",
            "30",
            "0s",
            "-1h",
            "1.5h",
            "2 h",
            "2hours",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human_duration(Duration::from_secs(18_720)), "5h 12m");
        assert_eq!(human_duration(Duration::from_secs(183_600)), "2d 3h");
    }
}
