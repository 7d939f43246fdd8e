//! Key patterns: `*` matches any run of characters. Tokens' grants, retention policies,
//! `keys` and the MQTT bridge all match keys through [`glob`].

/// Whether `key` matches `pattern`: `*` matches any run of characters (dots included, or
/// none); everything else matches itself.
pub fn glob(pattern: &str, key: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = key.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: an exact name
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_prefixes_suffixes_and_exact_names() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything.at.all"));
        assert!(glob("sensor.*", "sensor.temp"));
        assert!(glob("sensor.*", "sensor."));
        assert!(!glob("sensor.*", "sensors.temp"));
        assert!(!glob("sensor.*", "sensor"));
        assert!(glob("*.temp", "kitchen.temp"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(glob("a*a", "aa"));
        assert!(!glob("a*a", "a"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }
}
