use std::collections::HashMap;
use std::path::Path;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn shipped_daemon_config_parses() {
    let config = load(Some(Path::new("config/consul-dns.toml")), Layer::default(), &no_env).unwrap();
    assert_eq!(config.listen, ["127.0.0.1:8600".parse().unwrap()]);
    assert_eq!(config.service_ttl.lookup("order"), 10);
    assert_eq!(config.service_ttl.lookup("payments"), 2);
    assert_eq!(config.service_ttl.lookup("user"), 5);
    assert_eq!(config.catalog, CatalogSource::File("config/services.toml".into()));
}

#[test]
fn defaults_without_any_source() {
    let config = resolve(Layer::default(), &|_| false).unwrap();
    assert_eq!(config.listen, ["127.0.0.1:8600".parse().unwrap()]);
    assert_eq!(config.catalog, CatalogSource::Embedded);
    assert_eq!(config.domain.text(), "consul");
    assert_eq!((config.node_ttl, config.negative_ttl, config.service_ttl.lookup("x")), (5, 5, 5));
    assert_eq!((config.udp_answer_limit, config.a_record_limit, config.max_udp_size), (3, 0, 1232));
    assert!(config.udp_workers >= 1);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let file = write("domain = \"consul.\"\n\nnode_tll = \"5s\"\n");
    let err = load(Some(file.path()), Layer::default(), &no_env).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{text}");
    assert!(text.contains("node_tll"), "{text}");
    assert!(text.contains(&file.path().display().to_string()), "{text}");
}

#[test]
fn bad_values_name_their_line() {
    let cases = [
        ("node_ttl = \"5x\"\n", 1, "invalid duration"),
        ("\nmax_udp_size = 100\n", 2, "out of range"),
        ("\n\nlisten = [\"localhost\"]\n", 3, "invalid address"),
        ("datacenter = \"dc 1\"\n", 1, "invalid name"),
        ("domain = \"a..b\"\n", 1, "invalid domain"),
        ("only_passing = \"yes\"\n", 1, ""),
        ("[service_ttl]\n\"db*\" = \"x\"\n", 1, "expected a duration"),
    ];
    for (text, want_line, want_message) in cases {
        let file = write(text);
        let err = load(Some(file.path()), Layer::default(), &no_env).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, ConfigError::Parse { line, .. } if line == want_line), "{text:?}: {shown}");
        assert!(shown.contains(want_message), "{text:?}: {shown}");
    }
}

#[test]
fn precedence_file_then_env_then_flags() {
    let file = write("node_ttl = 10\nnegative_ttl = 10\nservice_ttl = 10\ndatacenter = \"file\"\n");
    let env: HashMap<&str, &str> = [
        ("CONSUL_DNS_NODE_TTL", "20"),
        ("CONSUL_DNS_NEGATIVE_TTL", "1m"),
        ("CONSUL_DNS_LISTEN", "127.0.0.1:1,[::1]:2"),
    ]
    .into();
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    let flags = Layer { node_ttl: Some(value::Secs(30)), ..Layer::default() };
    let config = load(Some(file.path()), flags, &lookup).unwrap();
    assert_eq!(config.node_ttl, 30, "flag beats env and file");
    assert_eq!(config.negative_ttl, 60, "env beats file");
    assert_eq!(config.service_ttl.lookup("x"), 10, "file beats default");
    assert_eq!(config.datacenter, "file");
    assert_eq!(config.listen, ["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()]);
}

#[test]
fn config_file_from_env() {
    let file = write("datacenter = \"east\"\n");
    let path = file.path().display().to_string();
    let lookup = |k: &str| (k == ENV_CONFIG).then(|| path.clone());
    assert_eq!(load(None, Layer::default(), &lookup).unwrap().datacenter, "east");
}

#[test]
fn bad_env_value_names_the_variable() {
    let lookup = |k: &str| (k == "CONSUL_DNS_MAX_UDP_SIZE").then(|| "70000".to_string());
    let err = load(None, Layer::default(), &lookup).unwrap_err();
    assert!(err.to_string().contains("CONSUL_DNS_MAX_UDP_SIZE"), "{err}");
}

#[test]
fn every_key_is_settable_from_env_and_file() {
    let samples: HashMap<&str, (&str, &str)> = [
        ("listen", ("127.0.0.1:53", "[\"127.0.0.1:53\"]")),
        ("static", ("x.toml", "\"x.toml\"")),
        ("domain", ("example.", "\"example.\"")),
        ("alt_domain", ("alt.", "\"alt.\"")),
        ("datacenter", ("dc9", "\"dc9\"")),
        ("node_ttl", ("9s", "\"9s\"")),
        ("service_ttl", ("9", "9")),
        ("negative_ttl", ("9", "9")),
        ("only_passing", ("true", "true")),
        ("udp_answer_limit", ("9", "9")),
        ("a_record_limit", ("9", "9")),
        ("max_udp_size", ("4096", "4096")),
        ("udp_workers", ("2", "2")),
        ("log_level", ("debug", "\"debug\"")),
    ]
    .into();
    assert_eq!(samples.len(), KEYS.len());
    for key in KEYS {
        let (env_value, toml_value) = samples[key];
        let var = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
        let from_env = Layer::from_env(&|k: &str| (k == var).then(|| env_value.to_string())).unwrap();
        let from_file: Layer = toml::from_str(&format!("{key} = {toml_value}\n")).unwrap();
        assert_ne!(from_env, Layer::default(), "{key} from env");
        assert_eq!(from_env, from_file, "{key}: env and file agree");
    }
}

#[test]
fn service_ttl_flag_becomes_the_star_entry_of_a_file_table() {
    let file = write("[service_ttl]\n\"db\" = 60\n\"*\" = 1\n");
    let flags = Layer { service_ttl: Some(value::ServiceTtl::All(value::Secs(9))), ..Layer::default() };
    let config = load(Some(file.path()), flags, &no_env).unwrap();
    assert_eq!((config.service_ttl.lookup("db"), config.service_ttl.lookup("web")), (60, 9));
}
