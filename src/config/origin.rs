//! Where each setting came from (flag, environment, file line, default): for `--print-config`,
//! for errors that must name the place of a key, and the warning for a `CONSUL_DNS_*` variable
//! that is no setting.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::layer::{ENV_CONFIG, ENV_PREFIX, KEYS, Layer};
use super::show;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line (`--node-ttl`).
    Flag(&'static str),
    /// An environment variable (`CONSUL_DNS_NODE_TTL`).
    Env(String),
    /// A line of the config file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key (0 when it could not be found).
        line: usize,
    },
    /// Not given anywhere.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(key) => write!(f, "flag {}", flag_name(key)),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File { path, line: 0 } => write!(f, "{}", path.display()),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// `--node-ttl` for `node_ttl`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The environment variable of `key`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// The line each top-level key of a config file is on (a table such as `[service_ttl]` is on
/// its header's line). A scan of the text, good for the files this daemon reads.
pub fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    let mut in_table = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_start_matches('[').split(']').next().unwrap_or_default();
            let top = name.split('.').next().unwrap_or_default().trim().trim_matches('"');
            lines.entry(top.to_owned()).or_insert(number + 1);
            in_table = true;
        } else if !in_table && let Some((key, _)) = line.split_once('=') {
            let key = key.split('.').next().unwrap_or_default().trim().trim_matches('"');
            if !key.is_empty() && !key.starts_with('#') {
                lines.entry(key.to_owned()).or_insert(number + 1);
            }
        }
    }
    lines
}

/// Where every key of the merged configuration came from.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    of: HashMap<&'static str, Origin>,
}

impl Origins {
    /// Flags win over the environment, which wins over the file.
    pub fn new(file: (&Layer, Option<&Path>, &HashMap<String, usize>), env: &Layer, flags: &Layer) -> Origins {
        let (file, path, lines) = file;
        let mut of = HashMap::new();
        let given = |layer: &Layer| -> Vec<&'static str> {
            layer.shown().into_iter().filter_map(|(key, value)| value.map(|_| key)).collect()
        };
        if let Some(path) = path {
            for key in given(file) {
                let line = lines.get(key).copied().unwrap_or(0);
                of.insert(key, Origin::File { path: path.to_owned(), line });
            }
        }
        for key in given(env) {
            of.insert(key, Origin::Env(env_name(key)));
        }
        for key in given(flags) {
            of.insert(key, Origin::Flag(key));
        }
        Origins { of }
    }

    /// Where `key` came from.
    pub fn of(&self, key: &str) -> Origin {
        self.of.get(key).cloned().unwrap_or(Origin::Default)
    }
}

/// The effective configuration, for `--print-config`: one line per key, its value (secrets as
/// `***`) and where it came from.
pub fn render(merged: &Layer, origins: &Origins) -> String {
    let defaults = show::defaults().shown();
    let mut out = String::new();
    for ((key, value), (_, default)) in merged.shown().into_iter().zip(defaults) {
        let line = match (value, default) {
            (Some(value), _) => format!("{key} = {value}  # {}", origins.of(key)),
            (None, Some(default)) => format!("{key} = {default}  # default"),
            (None, None) => format!("# {key} is not set  # default: {}", show::unset_meaning(key)),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Variables of this prefix that are no settings but are not typos either: the build's own
/// (set by the build script, and so present under `cargo test`), and those of the
/// repository's scripts and tools, which a daemon they start inherits.
const NOT_SETTINGS: [&str; 4] = ["CONSUL_DNS_COMMIT", "CONSUL_DNS_PROFILE", "CONSUL_DNS_BIN", "CONSUL_DNS_ARGS"];
/// Prefixes of such variables: the test suite's (`CONSUL_DNS_TEST_CONSUL`) and the fuzzing
/// run's (`CONSUL_DNS_FUZZ_SECONDS`).
const NOT_SETTINGS_PREFIXES: [&str; 2] = ["CONSUL_DNS_TEST_", "CONSUL_DNS_FUZZ_"];

/// A warning sentence for every `CONSUL_DNS_*` variable among `names` that is no setting,
/// naming the closest one.
pub fn unknown_env_vars(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let known: Vec<&str> = KEYS.iter().copied().chain([&ENV_CONFIG[ENV_PREFIX.len()..]]).collect();
    let mut warnings: Vec<String> = names
        .into_iter()
        .filter(|name| {
            !NOT_SETTINGS.contains(&name.as_str()) && !NOT_SETTINGS_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .filter_map(|name| {
            let key = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            if known.iter().any(|k| k.eq_ignore_ascii_case(&key)) {
                return None;
            }
            let sentence = format!("environment variable {name} is not a consul-dns setting and is ignored");
            Some(match closest(&key, known.iter().copied()) {
                Some(near) => format!("{sentence}; did you mean {}?", env_name(near)),
                None => format!("{sentence}."),
            })
        })
        .collect();
    warnings.sort();
    warnings
}

/// A TOML "unknown field" message made a sentence: `unknown key `node_tll`; did you mean
/// `node_ttl`?` (the expected names come from the message itself).
pub fn unknown_key_sentence(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    Some(match closest(name, candidates.iter().copied()) {
        Some(near) => format!("unknown key `{name}`; did you mean `{near}`?"),
        None => format!("unknown key `{name}`; the keys are: {}", candidates.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names_typos() {
        assert_eq!(closest("node_tll", KEYS.iter().copied()), Some("node_ttl"));
        assert_eq!(closest("completely_else", ["node_ttl"]), None);
        let warnings = unknown_env_vars(["CONSUL_DNS_NODE_TLL".into(), "CONSUL_DNS_LISTEN".into(), "PATH".into()]);
        assert_eq!(
            warnings,
            [
                "environment variable CONSUL_DNS_NODE_TLL is not a consul-dns setting and is ignored; did you mean CONSUL_DNS_NODE_TTL?"
            ]
        );
    }

    /// `scripts/test` exports CONSUL_DNS_TEST_CONSUL, which every daemon a test starts inherits.
    #[test]
    fn the_scripts_own_variables_are_no_typos() {
        let names = ["CONSUL_DNS_TEST_CONSUL", "CONSUL_DNS_FUZZ_SECONDS", "CONSUL_DNS_BIN", "CONSUL_DNS_COMMIT"];
        assert!(unknown_env_vars(names.map(String::from)).is_empty());
    }

    #[test]
    fn key_lines_of_a_file() {
        let lines = key_lines("# c\nlisten = \"x\"\n\n[service_ttl]\n\"db\" = 1\nnode_ttl = 2\n");
        assert_eq!(lines.get("listen"), Some(&2));
        assert_eq!(lines.get("service_ttl"), Some(&4));
        assert_eq!(lines.get("node_ttl"), None, "inside the table, not a top-level key");
    }
}
