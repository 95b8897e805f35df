//! Formatting of byte counts and durations for humans (reports keep raw
//! numbers; only tables round).

/// Bytes in decimal units, as registries and `docker images` show them.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in milliseconds as `850 ms`, `12.3 s` or `4m 05s`.
pub fn format_duration_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_decimal_units() {
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(74_800_000), "74.8 MB");
        assert_eq!(format_bytes(9_000_000_000), "9.0 GB");
    }

    #[test]
    fn durations_switch_units_at_a_second_and_a_minute() {
        assert_eq!(format_duration_ms(850), "850 ms");
        assert_eq!(format_duration_ms(12_340), "12.3 s");
        assert_eq!(format_duration_ms(245_000), "4m 05s");
    }
}
