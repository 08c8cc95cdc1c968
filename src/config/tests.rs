use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::dns::forward::{self, host::Host};

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
    assert_eq!(config.service_ttl.lookup("order"), 5, "the table is an example, commented out");
    assert_eq!(config.service_ttl.lookup("user"), 5);
    let catalog = std::path::absolute("config/services.toml").unwrap();
    assert_eq!(config.sources.static_catalog, Some(CatalogSource::File(catalog)), "next to the file");
}

/// `layer` with the example catalog unless it names a catalog.
fn with_static(layer: Layer) -> Layer {
    builtin().overlay(layer)
}

/// A layer with the example catalog, as `--static builtin` gives.
fn builtin() -> Layer {
    Layer { static_catalog: Some(source::BUILTIN.into()), ..Layer::default() }
}

#[test]
fn defaults_with_the_builtin_catalog() {
    let config = resolve(builtin()).unwrap();
    assert_eq!(config.listen, ["127.0.0.1:8600".parse().unwrap()]);
    assert_eq!(config.sources.static_catalog, Some(CatalogSource::Embedded));
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
        ("[service_ttl]\n\"db*\" = \"x\"\n", 2, "invalid duration \"x\""),
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
    let flags = Layer { node_ttl: Some(value::Secs(30)), ..builtin() };
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
    assert_eq!(load(None, builtin(), &lookup).unwrap().datacenter, "east");
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
        ("tcp_max_connections", ("64", "64")),
        ("tcp_max_per_client", ("8", "8")),
        ("tcp_client_prefix_v4", ("24", "24")),
        ("tcp_client_prefix_v6", ("56", "56")),
        ("tcp_idle_timeout", ("500ms", "\"500ms\"")),
        ("tcp_write_timeout", ("1s", "\"1s\"")),
        ("log_level", ("debug", "\"debug\"")),
        ("log_format", ("json", "\"json\"")),
        ("query_log_sample", ("0.5", "0.5")),
        ("http", ("127.0.0.1:9999", "\"127.0.0.1:9999\"")),
        ("recursor", ("127.0.0.11,10.0.0.2:5353", "[\"127.0.0.11\", \"10.0.0.2:5353\"]")),
        ("recursor_timeout", ("500ms", "\"500ms\"")),
        ("recursor_strategy", ("random", "\"random\"")),
        ("resolv_conf", ("/tmp/resolv.conf", "\"/tmp/resolv.conf\"")),
        ("allow_recursion", ("10.0.0.0/8,::1", "[\"10.0.0.0/8\", \"::1\"]")),
        ("allow_query", ("0.0.0.0/0", "[\"0.0.0.0/0\"]")),
        ("source", ("consul", "\"consul\"")),
        ("consul", ("http://127.0.0.1:8500", "\"http://127.0.0.1:8500\"")),
        ("consul_token", ("s3cr3t", "\"s3cr3t\"")),
        ("consul_token_file", ("/run/token", "\"/run/token\"")),
        ("consul_ca_cert", ("/etc/ca.pem", "\"/etc/ca.pem\"")),
        ("consul_stale", ("false", "false")),
        ("consul_max_conns", ("64", "64")),
        ("consul_wait", ("30s", "\"30s\"")),
        ("datacenters", ("dc1,dc2", "[\"dc1\", \"dc2\"]")),
        ("translate_wan_addrs", ("true", "true")),
        ("state_dir", ("/var/lib/consul-dns", "\"/var/lib/consul-dns\"")),
        ("max_stale", ("1h", "\"1h\"")),
        ("database_url", ("sqlite:///tmp/c.db", "\"sqlite:///tmp/c.db\"")),
        ("db_poll_interval", ("200ms", "\"200ms\"")),
        ("etcd", ("127.0.0.1:2379,127.0.0.2:2379", "[\"127.0.0.1:2379\", \"127.0.0.2:2379\"]")),
        ("etcd_prefix", ("/dns/", "\"/dns/\"")),
        ("ns_name", ("ns.consul.", "\"ns.consul.\"")),
        ("ns_address", ("127.0.0.1", "\"127.0.0.1\"")),
        ("chaos_version", ("consul-dns", "\"consul-dns\"")),
        ("rrl_responses_per_sec", ("50", "50")),
        ("rrl_slip", ("3", "3")),
        ("rrl_ipv4_prefix", ("32", "32")),
        ("rrl_ipv6_prefix", ("64", "64")),
        ("rrl_exempt", ("10.0.0.0/8,::1", "[\"10.0.0.0/8\", \"::1\"]")),
        ("rrl_exempt_recursion", ("true", "true")),
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
    let flags = Layer { service_ttl: Some(value::ServiceTtl::All(value::Secs(9))), ..builtin() };
    let config = load(Some(file.path()), flags, &no_env).unwrap();
    assert_eq!((config.service_ttl.lookup("db"), config.service_ttl.lookup("web")), (60, 9));
}

#[test]
fn recursion_defaults_read_resolv_conf_and_allow_local_networks() {
    let config = resolve(builtin()).unwrap();
    assert_eq!(config.recursors, Recursors::ResolvConf(DEFAULT_RESOLV_CONF.into()));
    assert_eq!(config.resolv_conf(), Some(Path::new("/etc/resolv.conf")));
    assert_eq!((config.recursor_timeout, config.recursor_strategy), (forward::DEFAULT_TIMEOUT, Strategy::Sequential));
    assert_eq!(config.allow_recursion, None);
    let host = Host {
        nameservers: vec!["127.0.0.11".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        addresses: vec!["172.18.0.5".parse().unwrap()],
        networks: vec!["127.0.0.0/8".parse().unwrap(), "172.18.0.0/16".parse().unwrap()],
    };
    let settings = crate::dns::Settings::from_config(&config, &host);
    let upstreams: Vec<String> = settings.recursion.upstreams.iter().map(|a| a.to_string()).collect();
    assert_eq!(upstreams, ["127.0.0.11:53", "127.0.0.1:53"], "port 53; we listen on 8600, so no loop");
    use crate::dns::acl::Access;
    let access = |ip: &str| settings.acl.access(ip.parse().unwrap());
    assert_eq!(access("127.0.0.1"), Access::Recurse, "localhost");
    assert_eq!(access("172.18.0.3"), Access::Recurse, "localnets: a Kong container beside us");
    assert_eq!(access("203.0.113.7"), Access::Query, "strangers are answered, never recursed for");
    assert_eq!(settings.acl.allow_recursion.len(), 3, "loopback once: {:?}", settings.acl.allow_recursion);
}

#[test]
fn resolv_conf_nameserver_that_is_us_is_skipped() {
    let flags = Layer { listen: Some(vec!["127.0.0.1:53".parse().unwrap()]), ..Layer::default() };
    let config = resolve(with_static(flags)).unwrap();
    let host = Host { nameservers: vec!["127.0.0.1".parse().unwrap()], ..Host::default() };
    assert!(!crate::dns::Settings::from_config(&config, &host).recursion.is_enabled(), "would ask ourselves");
}

#[test]
fn recursion_flags_none_and_bad_values() {
    use crate::cli::Cli;
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "consul-dns",
        "--recursor",
        "127.0.0.1:5353",
        "--recursor",
        "192.0.2.1",
        "--recursor-timeout",
        "250ms",
        "--recursor-strategy",
        "random",
        "--allow-recursion",
        "10.0.0.0/8",
        "--allow-query",
        "10.0.0.0/8",
        "--allow-query",
        "127.0.0.1",
    ])
    .unwrap();
    let config = resolve(with_static(cli.settings)).unwrap();
    let listed = vec!["127.0.0.1:5353".parse().unwrap(), "192.0.2.1:53".parse().unwrap()];
    assert_eq!(config.recursors, Recursors::Listed(listed.clone()));
    assert_eq!(config.resolv_conf(), None);
    let settings = crate::dns::Settings::from_config(&config, &Host::default());
    assert_eq!(settings.recursion.upstreams, listed);
    assert_eq!(settings.recursion.timeout, Duration::from_millis(250));
    assert_eq!(settings.recursion.strategy, Strategy::Random);
    assert_eq!(settings.acl.allow_recursion, ["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(settings.acl.allow_query.len(), 2);

    let off = Cli::try_parse_from(["consul-dns", "--recursor", "none"]).unwrap();
    assert_eq!(resolve(with_static(off.settings)).unwrap().recursors, Recursors::Off);
    let file = write("recursor = []\n");
    assert_eq!(load(Some(file.path()), builtin(), &no_env).unwrap().recursors, Recursors::Off);
    let mixed = Cli::try_parse_from(["consul-dns", "--recursor", "none", "--recursor", "192.0.2.1"]).unwrap();
    let err = resolve(with_static(mixed.settings)).unwrap_err();
    assert!(err.to_string().contains("recursor"), "{err}");
    let zero = Layer { recursor_timeout: Some(value::Millis(Duration::ZERO)), ..Layer::default() };
    assert!(resolve(with_static(zero)).unwrap_err().to_string().contains("recursor_timeout"));
    for (text, line) in [("recursor = [\"0.0.0.0\"]\n", 1), ("\nallow_query = [\"10.0.0.0/33\"]\n", 2)] {
        let file = write(text);
        let err = load(Some(file.path()), Layer::default(), &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: l, .. } if l == line), "{text}: {err}");
    }
    let env = |k: &str| (k == "CONSUL_DNS_ALLOW_RECURSION").then(String::new);
    assert_eq!(load(None, builtin(), &env).unwrap().allow_recursion, Some(vec![]), "empty = nobody");
}

#[test]
fn every_key_is_documented_in_the_shipped_config_and_the_readme() {
    let shipped = std::fs::read_to_string("config/consul-dns.toml").unwrap();
    let readme = std::fs::read_to_string("README.md").unwrap();
    for key in KEYS {
        let flag = key.replace('_', "-");
        let row = format!("| `--{flag}` / `{key}` |");
        assert!(readme.contains(&row), "README configuration table has a row {row}");
        let mentioned = shipped.lines().any(|l| l.trim_start_matches(['#', ' ']).starts_with(&format!("{key} =")));
        assert!(mentioned, "config/consul-dns.toml shows {key} (set or commented)");
    }
}

#[test]
fn shipped_config_examples_parse_when_uncommented() {
    let shipped = std::fs::read_to_string("config/consul-dns.toml").unwrap();
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                // database_url and etcd are live sources like consul: one of the three at most.
                if KEYS.iter().any(|k| rest.starts_with(&format!("{k} =")))
                    && !["service_ttl", "database_url", "etcd ="].iter().any(|k| rest.starts_with(k)) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let file = write(&uncommented);
    let config = load(Some(file.path()), Layer::default(), &no_env).unwrap();
    assert_eq!(
        config.recursors,
        Recursors::Listed(vec!["10.0.0.2:53".parse().unwrap(), "10.0.0.3:5353".parse().unwrap()])
    );
    assert_eq!(config.allow_recursion.map(|l| l.len()), Some(3));
    assert_eq!((config.udp_workers, config.recursor_strategy), (2, Strategy::Sequential));
}

#[test]
fn consul_backend_from_flags_our_env_and_consuls_env() {
    let err = resolve(Layer::default()).unwrap().sources.require_catalog().unwrap_err().to_string();
    assert!(err.contains("--static FILE") && err.contains("--static builtin"), "no silent demo catalog: {err}");
    let token_file = write("from-file\n");
    let path = token_file.path().display().to_string();
    let env: HashMap<&str, String> = [
        ("CONSUL_HTTP_ADDR", "consul.internal:8501".to_owned()),
        ("CONSUL_HTTP_SSL", "true".to_owned()),
        ("CONSUL_HTTP_TOKEN_FILE", path.clone()),
        ("CONSUL_CACERT", "/etc/consul/ca.pem".to_owned()),
    ]
    .into();
    let lookup = |k: &str| env.get(k).cloned();
    let config = load(None, builtin(), &lookup).unwrap();
    assert_eq!(config.sources.live, None, "CONSUL_HTTP_ADDR alone never selects Consul");
    let explicit = Layer { source: Some(source::SourceKind::Consul), ..Layer::default() };
    let config = load(None, explicit, &lookup).unwrap();
    let Some(LiveSource::Consul(consul)) = config.sources.live else { panic!("source = consul selects Consul") };
    assert_eq!(consul.address, "https://consul.internal:8501", "CONSUL_HTTP_SSL without a scheme");
    assert_eq!(consul.token.as_ref().map(|t| t.expose()), Some("from-file"));
    assert_eq!(consul.ca_cert, Some("/etc/consul/ca.pem".into()));
    assert_eq!((consul.stale, consul.max_conns, consul.wait), (true, 32, Duration::from_secs(300)));
    assert!(!format!("{consul:?}").contains("from-file"), "the token never shows in Debug");

    let flags = Layer {
        consul: Some("http://127.0.0.1:8500".parse().unwrap()),
        consul_token: Some(value::Secret::new("from-flag")),
        datacenter: Some("east".parse().unwrap()),
        ..Layer::default()
    };
    let Some(LiveSource::Consul(consul)) = load(None, flags, &lookup).unwrap().sources.live else { panic!() };
    assert_eq!(consul.address, "http://127.0.0.1:8500");
    assert_eq!(consul.token.as_ref().map(|t| t.expose()), Some("from-flag"), "ours beat Consul's");
    assert_eq!(consul.datacenter.as_deref(), Some("east"));

    let with_static = Layer { static_catalog: Some("x.toml".into()), ..Layer::default() };
    let config = load(None, with_static, &lookup).unwrap();
    assert_eq!(config.sources.live, None, "CONSUL_HTTP_ADDR alone does not override an explicit static catalog");
    let both = Layer {
        static_catalog: Some("x.toml".into()),
        consul: Some("127.0.0.1:8500".parse().unwrap()),
        ..Layer::default()
    };
    let config = load(None, both.clone(), &no_env).unwrap();
    assert!(
        config.sources.live.is_some() && config.sources.static_catalog.is_some(),
        "--consul wins; the static file only seeds"
    );
    let contradiction = Layer { source: Some(source::SourceKind::Static), ..both };
    assert!(load(None, contradiction, &no_env).unwrap_err().to_string().contains("source is static"));

    let missing = |k: &str| (k == "CONSUL_HTTP_TOKEN_FILE").then(|| "/nonexistent/token".to_owned());
    let flags = Layer { consul: Some("127.0.0.1:8500".parse().unwrap()), ..Layer::default() };
    let err = load(None, flags.clone(), &missing).unwrap_err();
    assert!(err.to_string().contains("CONSUL_HTTP_TOKEN_FILE"), "{err}");
    assert!("1h".parse::<value::ConsulWait>().unwrap_err().contains("consul_wait"));
    let unix = |k: &str| (k == "CONSUL_HTTP_ADDR").then(|| "unix:///run/consul.sock".to_owned());
    let explicit = Layer { source: Some(source::SourceKind::Consul), ..Layer::default() };
    assert!(load(None, explicit, &unix).unwrap_err().to_string().contains("unix"));
}

#[test]
fn database_and_etcd_sources_resolve_and_exclude_each_other() {
    let url: database::DatabaseUrl = "mysql://dns:s3cr3t@127.0.0.1:3306/consul_dns".parse().unwrap();
    let layer = Layer { database_url: Some(url.clone()), ..Layer::default() };
    let config = resolve(layer.clone()).unwrap();
    let Some(LiveSource::Sql(settings)) = config.sources.live.clone() else { panic!("{:?}", config.sources) };
    assert_eq!((settings.url, settings.poll_interval), (url.clone(), database::DEFAULT_DB_POLL_INTERVAL));
    assert_eq!(config.sources.live.as_ref().map(LiveSource::label), Some("mysql"));
    assert!(!format!("{config:?}").contains("s3cr3t"), "the password stays out of Debug");
    let etcd = Layer { etcd: Some(vec!["127.0.0.1:2379".parse().unwrap()]), ..Layer::default() };
    let Some(LiveSource::Etcd(settings)) = resolve(etcd.clone()).unwrap().sources.live else { panic!("etcd") };
    assert_eq!(
        (settings.endpoints, settings.prefix),
        (vec!["http://127.0.0.1:2379".to_owned()], "/consul-dns/".into())
    );
    let both = Layer { etcd: etcd.etcd.clone(), ..layer.clone() };
    let error = resolve(both).unwrap_err().to_string();
    assert!(error.contains("at most one live source"), "{error}");
    let with_consul = Layer { consul: Some("127.0.0.1:8500".parse().unwrap()), ..layer.clone() };
    assert!(resolve(with_consul).unwrap_err().to_string().contains("at most one live source"));
    let static_too = Layer { source: Some(source::SourceKind::Static), ..layer };
    assert!(resolve(static_too).unwrap_err().to_string().contains("remove one of them"));
    let asked =
        Layer { source: Some(source::SourceKind::Database), static_catalog: Some("x.toml".into()), ..Layer::default() };
    assert!(resolve(asked).unwrap_err().to_string().contains("no database_url"));
    let zero = Layer { db_poll_interval: Some(value::Millis(Duration::ZERO)), ..Layer::default() };
    assert!(resolve(zero).unwrap_err().to_string().contains("db_poll_interval"));
}

/// Finding: config errors without a place, or in Rust's words. Every bad file here must fail
/// at the line of the bad key (not the table header) with a sentence, and no message may show
/// a Rust type or variant name.
#[test]
fn bad_configs_name_file_line_and_key_in_plain_words() {
    let cases: [(&str, usize, &str); 12] = [
        (
            "source = \"static\"\nconsul_wait = \"20m\"\n",
            2,
            "consul_wait \"20m\" is out of range: it must be above 0 and at most 10m",
        ),
        ("consul_wait = 0\n", 1, "it must be above 0 and at most 10m"),
        (
            "[service_ttl]\n\"*\" = \"5s\"\n\"db\" = \"1500ms\"\n",
            3,
            "invalid duration \"1500ms\": DNS TTLs are whole seconds",
        ),
        ("node_ttl = \"1500ms\"\n", 1, "DNS TTLs are whole seconds"),
        ("node_ttl = 1.5\n", 1, "invalid duration 1.5: DNS TTLs are whole seconds"),
        ("\nnegative_ttl = 4294967296\n", 2, "4294967296 is too long: the most is 2147483647 seconds"),
        ("[service_ttl]\n\"web\" = \"600000h\"\n", 2, "is too long: the most is 2147483647 seconds"),
        ("udp_answer_limit = \"lots\"\n", 1, "invalid number \"lots\": expected a whole number from 0 to 65535"),
        ("max_udp_size = 100\n", 1, "100 is out of range: expected a whole number from 512 to 65535"),
        ("listen = 53\n", 1, "expected a string or a list of strings"),
        ("listen = [\"127.0.0.1:53\", \"nowhere\"]\n", 1, "invalid address \"nowhere\""),
        ("domain = \"consul.\"\nnode_tll = \"5s\"\n", 2, "unknown key `node_tll`; did you mean `node_ttl`?"),
    ];
    let rust_words =
        ["expected i64", "expected u32", "expected a sequence", "Some(", "File(", "Embedded", "Sequential", "untagged"];
    for (text, want_line, want) in cases {
        let file = write(text);
        let err = load(Some(file.path()), builtin(), &no_env).unwrap_err();
        let shown = err.to_string();
        let place = format!("{}:{want_line}:", file.path().display());
        assert!(shown.starts_with(&place), "{text:?} must fail at {place}\n{shown}");
        assert!(shown.contains(want), "{text:?}: wanted {want:?}\n{shown}");
        for word in rust_words {
            assert!(!shown.contains(word), "{text:?}: Rust words {word:?} in\n{shown}");
        }
    }

    // Keys that are fine alone but not together name where they were given.
    let file = write("# a comment\n\nalt_domain = \"consul.\"\n");
    let err = load(Some(file.path()), builtin(), &no_env).unwrap_err().to_string();
    assert_eq!(err, format!("{}:3: alt_domain: must differ from domain", file.path().display()));
    let env = |k: &str| (k == "CONSUL_DNS_ALT_DOMAIN").then(|| "consul".to_owned());
    let err = load(None, builtin(), &env).unwrap_err().to_string();
    assert_eq!(err, "environment variable CONSUL_DNS_ALT_DOMAIN: alt_domain: must differ from domain");
    let flags = Layer { alt_domain: DomainName::new("consul"), ..builtin() };
    assert_eq!(
        load(None, flags, &no_env).unwrap_err().to_string(),
        "flag --alt-domain: alt_domain: must differ from domain"
    );
}

#[test]
fn a_list_key_takes_one_string_too() {
    let file = write("listen = \"127.0.0.1:53\"\nrecursor = \"10.0.0.2\"\nallow_query = \"10.0.0.0/8\"\n");
    let config = load(Some(file.path()), builtin(), &no_env).unwrap();
    assert_eq!(config.listen, ["127.0.0.1:53".parse().unwrap()]);
    assert_eq!(config.recursors, Recursors::Listed(vec!["10.0.0.2:53".parse().unwrap()]));
    assert_eq!(config.allow_query, ["10.0.0.0/8".parse().unwrap()]);
}

/// Finding: relative paths in a config file resolved against the working directory. They are
/// taken from the file's directory; flags and environment stay relative to the working one.
#[test]
fn relative_paths_in_a_file_resolve_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("etc");
    std::fs::create_dir(&sub).unwrap();
    let file = sub.join("consul-dns.toml");
    std::fs::write(
        &file,
        "static = \"catalog/services.toml\"\nresolv_conf = \"resolv.conf\"\nstate_dir = \"../state\"\n\
         consul_ca_cert = \"ca.pem\"\nsource = \"static\"\n",
    )
    .unwrap();
    let config = load(Some(&file), Layer::default(), &no_env).unwrap();
    assert_eq!(config.sources.static_catalog, Some(CatalogSource::File(sub.join("catalog/services.toml"))));
    assert_eq!(config.resolv_conf(), Some(sub.join("resolv.conf").as_path()));
    assert_eq!(config.state_dir, Some(sub.join("../state")));
    let layer = read_file(&file).unwrap();
    assert_eq!(layer.consul_ca_cert, Some(sub.join("ca.pem")));

    std::fs::write(&file, "database_url = \"sqlite://db/catalog.db?mode=rwc\"\n").unwrap();
    let layer = read_file(&file).unwrap();
    let url = layer.database_url.unwrap();
    assert_eq!(url.sqlite_path(), Some(sub.join("db/catalog.db").to_str().unwrap()));
    assert!(url.expose().ends_with("?mode=rwc"), "{}", url.expose());
    std::fs::write(&file, "database_url = \"sqlite:///abs/catalog.db\"\nstatic = \"builtin\"\n").unwrap();
    let layer = read_file(&file).unwrap();
    assert_eq!(layer.database_url.unwrap().sqlite_path(), Some("/abs/catalog.db"));
    assert_eq!(layer.static_catalog, Some("builtin".into()), "builtin is no path");

    let flags = Layer { static_catalog: Some("mine.toml".into()), ..Layer::default() };
    let config = load(Some(&file), flags, &no_env).unwrap();
    assert_eq!(config.sources.static_catalog, Some(CatalogSource::File("mine.toml".into())), "a flag: as given");

    let missing = dir.path().join("nowhere.toml");
    let err = load(Some(&missing), Layer::default(), &no_env).unwrap_err().to_string();
    assert!(err.contains(&format!("cannot read config file {}", missing.display())), "{err}");
}

#[test]
fn print_config_says_where_each_value_came_from() {
    let file = write("# c\nnode_ttl = \"7s\"\nconsul_token = \"s3cr3t\"\nconsul = \"127.0.0.1:8500\"\n");
    let env = |k: &str| (k == "CONSUL_DNS_DOMAIN").then(|| "example.".to_owned());
    let flags = Layer { udp_answer_limit: Some(value::Bounded(9)), ..builtin() };
    let (_, explained) = load_explained(Some(file.path()), flags, &env).unwrap();
    let text = explained.render();
    let path = file.path().display();
    assert!(text.contains(&format!("node_ttl = \"7s\"  # {path}:2\n")), "{text}");
    assert!(text.contains(&format!("consul_token = \"***\"  # {path}:3\n")), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("domain = \"example.\"  # environment variable CONSUL_DNS_DOMAIN\n"), "{text}");
    assert!(text.contains("udp_answer_limit = 9  # flag --udp-answer-limit\n"), "{text}");
    assert!(text.contains("static = \"builtin\"  # flag --static\n"), "{text}");
    assert!(text.contains("negative_ttl = \"5s\"  # default\n"), "{text}");
    assert!(text.contains("# max_stale is not set  # default: no limit\n"), "{text}");
    assert_eq!(text.lines().count(), KEYS.len(), "one line per key:\n{text}");
}

/// Found by the `static_catalog` fuzz target: an error offset inside a multi-byte character
/// (a catalog `"ݟ`) sliced the text off a character boundary and panicked.
#[test]
fn locate_takes_an_offset_inside_a_character_as_its_start() {
    assert_eq!(locate("\"\u{75f}", 2), (1, 2, "\"\u{75f}".to_owned()));
    assert_eq!(locate("a = 1\nné = x", 9), (2, 3, "né = x".to_owned()));
    assert_eq!(locate("x", 99), (1, 2, "x".to_owned()));
}
