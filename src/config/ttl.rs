//! TTL policy: the one place that decides which TTL a service's records carry (S6.2).

use std::collections::BTreeMap;

/// Per-service TTLs: exact names, `prefix*` patterns and `*`, falling back to a default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TtlTable {
    default_secs: u32,
    exact: BTreeMap<String, u32>,
    /// `(prefix, ttl)`, longest prefix first.
    prefixes: Vec<(String, u32)>,
}

impl TtlTable {
    /// A table with only a default.
    pub fn new(default_secs: u32) -> TtlTable {
        TtlTable { default_secs, ..TtlTable::default() }
    }

    /// Adds one entry: `"db"` (exact), `"db*"` (prefix) or `"*"` (replaces the default).
    /// Keys are lower-cased, as questions are (S2.12).
    pub fn insert(&mut self, key: &str, secs: u32) {
        let key = key.to_ascii_lowercase();
        match key.strip_suffix('*') {
            Some("") => self.default_secs = secs,
            Some(prefix) => {
                self.prefixes.retain(|(p, _)| p != prefix);
                self.prefixes.push((prefix.to_owned(), secs));
                self.prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
            }
            None => {
                self.exact.insert(key, secs);
            }
        }
    }

    /// The TTL for a service: exact key, else the longest matching prefix, else the default.
    pub fn lookup(&self, service: &str) -> u32 {
        if let Some(ttl) = self.exact.get(service) {
            return *ttl;
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| service.starts_with(prefix.as_str()))
            .map_or(self.default_secs, |(_, ttl)| *ttl)
    }

    /// The TTL for names no entry matches.
    pub fn default_secs(&self) -> u32 {
        self.default_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s6_2_consul_example_table() {
        let mut table = TtlTable::new(0);
        for (key, secs) in [("d*", 42), ("db", 10), ("db*", 66), ("*", 5)] {
            table.insert(key, secs);
        }
        assert_eq!(table.lookup("db"), 10);
        assert_eq!(table.lookup("dblb"), 66);
        assert_eq!(table.lookup("dk"), 42);
        assert_eq!(table.lookup("api"), 5);
    }

    #[test]
    fn default_applies_without_star() {
        let mut table = TtlTable::new(7);
        table.insert("Web", 30);
        assert_eq!(table.lookup("web"), 30, "keys fold case");
        assert_eq!(table.lookup("api"), 7);
    }
}
