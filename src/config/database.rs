//! The database and etcd sources' settings: the URL types read from flags, environment and
//! file, and the plain structs they resolve to. A password in a URL is kept out of every
//! `Debug` and `Display` (logs, errors, `--check-config`), like [`super::value::Secret`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// How often the change counter is probed by default.
pub const DEFAULT_DB_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The etcd key prefix by default.
pub const DEFAULT_ETCD_PREFIX: &str = "/consul-dns/";

/// Which SQL server a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// An SQLite file (`sqlite://PATH`), embedded: nothing to install.
    Sqlite,
    /// MySQL or MariaDB (`mysql://` or `mariadb://`).
    Mysql,
    /// PostgreSQL (`postgres://` or `postgresql://`).
    Postgres,
}

impl Dialect {
    /// The name a user reads.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Mysql => "MySQL/MariaDB",
            Dialect::Postgres => "PostgreSQL",
        }
    }
}

/// A database URL: `sqlite://PATH` (`sqlite:///abs/path`, `sqlite://relative/path`),
/// `mysql://USER:PASS@HOST:PORT/DB` (also `mariadb://`), `postgres://USER:PASS@HOST:PORT/DB`
/// (also `postgresql://`). Shown with the password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    dialect: Dialect,
    /// The URL as the driver takes it (`mariadb://` becomes `mysql://`).
    url: String,
    /// The same with the password replaced, for everything a person reads.
    shown: String,
}

impl DatabaseUrl {
    /// The server kind.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL with its password, for the one place that connects.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// `text` with this URL's password (if any) replaced by `***`, for messages from drivers
    /// that might quote the URL.
    pub fn redact(&self, text: &str) -> String {
        match url::Url::parse(&self.url).ok().and_then(|u| u.password().map(str::to_owned)) {
            Some(password) if !password.is_empty() => {
                let decoded = url::form_urlencoded::parse(format!("p={password}").as_bytes())
                    .next()
                    .map_or_else(|| password.clone(), |(_, v)| v.into_owned());
                text.replace(&password, "***").replace(&decoded, "***")
            }
            _ => text.to_owned(),
        }
    }

    /// The same URL with a relative SQLite path taken below `base` (a config file's
    /// directory); server URLs, absolute paths and `:memory:` are kept as they are.
    pub fn rebased(&self, base: &std::path::Path) -> DatabaseUrl {
        let Some(path) = self.sqlite_path().filter(|p| !p.is_empty() && !p.starts_with('/') && !p.starts_with(':'))
        else {
            return self.clone();
        };
        let query = self.url.split_once('?').map_or(String::new(), |(_, q)| format!("?{q}"));
        let url = format!("sqlite://{}{query}", base.join(path).display());
        DatabaseUrl { dialect: self.dialect, url: url.clone(), shown: url }
    }

    /// The SQLite file's path (`None` for a server URL).
    pub fn sqlite_path(&self) -> Option<&str> {
        match self.dialect {
            Dialect::Sqlite => {
                let rest = self.url.strip_prefix("sqlite://").or_else(|| self.url.strip_prefix("sqlite:"))?;
                Some(rest.split('?').next().unwrap_or(rest))
            }
            _ => None,
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err("invalid database URL: expected sqlite://PATH, mysql://USER:PASS@HOST:PORT/DB or \
                 postgres://USER:PASS@HOST:PORT/DB"
                .into());
        };
        let dialect = match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Dialect::Sqlite,
            "mysql" | "mariadb" => Dialect::Mysql,
            "postgres" | "postgresql" => Dialect::Postgres,
            other => {
                return Err(format!(
                    "invalid database URL: unknown scheme {other:?}; expected sqlite, mysql, mariadb, postgres or postgresql"
                ));
            }
        };
        if dialect == Dialect::Sqlite {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.split('?').next().unwrap_or_default().is_empty() {
                return Err(
                    "invalid database URL: sqlite:// needs a file path, e.g. sqlite:///var/lib/consul-dns/catalog.db"
                        .into(),
                );
            }
            return Ok(DatabaseUrl { dialect, url: text.to_owned(), shown: text.to_owned() });
        }
        let driver_scheme = if dialect == Dialect::Mysql { "mysql" } else { "postgres" };
        let url = format!("{driver_scheme}:{rest}");
        let mut parsed = url::Url::parse(&url).map_err(|e| format!("invalid database URL: {e}"))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "invalid database URL: {} needs a host, e.g. {driver_scheme}://user@127.0.0.1/db",
                dialect.name()
            ));
        }
        if parsed.path().trim_matches('/').is_empty() {
            return Err(format!(
                "invalid database URL: {} needs a database name after the host, e.g. .../consul_dns",
                dialect.name()
            ));
        }
        if parsed.password().is_some() {
            parsed
                .set_password(Some("***"))
                .map_err(|()| "invalid database URL: cannot hide its password".to_owned())?;
        }
        Ok(DatabaseUrl { dialect, url, shown: parsed.to_string() })
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// One etcd endpoint: `http://host:port` or `https://host:port` (`host:port` means http).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoint(pub String);

impl FromStr for EtcdEndpoint {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || format!("invalid etcd endpoint {text:?}: expected http://host:port or https://host:port");
        let url = match text.split_once("://") {
            Some(("http" | "https", _)) => text.trim_end_matches('/').to_owned(),
            Some(_) => return Err(bad()),
            None => format!("http://{text}"),
        };
        let parsed = url::Url::parse(&url).map_err(|_| bad())?;
        if parsed.host_str().is_none_or(str::is_empty) || !parsed.path().trim_matches('/').is_empty() {
            return Err(bad());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "etcd endpoint {:?}: credentials in the URL are not supported",
                parsed.host_str().unwrap_or_default()
            ));
        }
        Ok(EtcdEndpoint(url))
    }
}

impl<'de> Deserialize<'de> for EtcdEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// The SQL source, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// Where the catalog tables live.
    pub url: DatabaseUrl,
    /// How often the change counter is probed.
    pub poll_interval: Duration,
}

/// The etcd source, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// The cluster's client URLs, tried in turn.
    pub endpoints: Vec<String>,
    /// Every key of the catalog starts with this; ends with `/`.
    pub prefix: String,
}

/// The database and etcd sources' settings, each `None` unless its key is given.
pub(super) fn resolve(
    layer: &super::Layer,
) -> Result<(Option<DatabaseSettings>, Option<EtcdSettings>), super::ConfigError> {
    use super::ConfigError;
    let poll_interval = layer.db_poll_interval.map_or(DEFAULT_DB_POLL_INTERVAL, |d| d.0);
    if poll_interval.is_zero() {
        return Err(ConfigError::Invalid { key: "db_poll_interval", message: "must be above 0".into() });
    }
    let database = layer.database_url.clone().map(|url| DatabaseSettings { url, poll_interval });
    let prefix = etcd_prefix(layer.etcd_prefix.as_deref().unwrap_or(DEFAULT_ETCD_PREFIX))
        .map_err(|message| ConfigError::Invalid { key: "etcd_prefix", message })?;
    let etcd = match &layer.etcd {
        Some(list) if list.is_empty() => {
            return Err(ConfigError::Invalid { key: "etcd", message: "needs at least one endpoint".into() });
        }
        Some(list) => Some(EtcdSettings { endpoints: list.iter().map(|e| e.0.clone()).collect(), prefix }),
        None => None,
    };
    Ok((database, etcd))
}

/// Normalizes an etcd prefix: leading and trailing `/`.
pub fn etcd_prefix(text: &str) -> Result<String, String> {
    let trimmed = text.trim().trim_matches('/');
    if trimmed.is_empty() && !text.contains('/') {
        return Err("etcd_prefix must not be empty; use \"/\" for the whole keyspace".into());
    }
    if trimmed.is_empty() { Ok("/".into()) } else { Ok(format!("/{trimmed}/")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hide_their_password() {
        let url: DatabaseUrl = "mysql://dns:s3cr3t@127.0.0.1:3306/consul_dns".parse().unwrap();
        assert_eq!(url.dialect(), Dialect::Mysql);
        assert_eq!(url.expose(), "mysql://dns:s3cr3t@127.0.0.1:3306/consul_dns");
        assert_eq!(url.to_string(), "mysql://dns:***@127.0.0.1:3306/consul_dns");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert_eq!(url.redact("failed for mysql://dns:s3cr3t@host"), "failed for mysql://dns:***@host");
        let maria: DatabaseUrl = "mariadb://dns:pw@db/consul_dns".parse().unwrap();
        assert_eq!(maria.expose(), "mysql://dns:pw@db/consul_dns");
        let pg: DatabaseUrl = "postgresql://dns:pw@127.0.0.1/consul_dns?sslmode=disable".parse().unwrap();
        assert_eq!(pg.dialect(), Dialect::Postgres);
        assert!(!pg.to_string().contains("pw@"), "{pg}");
        let nopass: DatabaseUrl = "postgres://dns@127.0.0.1/x".parse().unwrap();
        assert_eq!(nopass.to_string(), "postgres://dns@127.0.0.1/x");
    }

    #[test]
    fn sqlite_paths() {
        let abs: DatabaseUrl = "sqlite:///var/lib/catalog.db".parse().unwrap();
        assert_eq!(abs.sqlite_path(), Some("/var/lib/catalog.db"));
        let rel: DatabaseUrl = "sqlite://catalog.db?mode=rwc".parse().unwrap();
        assert_eq!(rel.sqlite_path(), Some("catalog.db"));
        let short: DatabaseUrl = "sqlite:catalog.db".parse().unwrap();
        assert_eq!(short.sqlite_path(), Some("catalog.db"));
    }

    #[test]
    fn bad_urls_say_what_is_expected() {
        for (bad, says) in [
            ("oracle://x/y", "unknown scheme"),
            ("sqlite://", "needs a file path"),
            ("mysql://user:pw@/db", "host"),
            ("postgres://user:pw@127.0.0.1", "needs a database name"),
            ("nothing", "expected sqlite://PATH"),
        ] {
            let error = bad.parse::<DatabaseUrl>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
            assert!(!error.contains("pw"), "{bad}: {error}");
        }
    }

    #[test]
    fn etcd_endpoints_and_prefix() {
        assert_eq!("127.0.0.1:2379".parse::<EtcdEndpoint>().unwrap().0, "http://127.0.0.1:2379");
        assert_eq!("https://etcd:2379/".parse::<EtcdEndpoint>().unwrap().0, "https://etcd:2379");
        for bad in ["ftp://x:1", "http://", "http://a:1/v3", "http://u:p@a:1"] {
            assert!(bad.parse::<EtcdEndpoint>().is_err(), "{bad}");
        }
        assert_eq!(etcd_prefix("/consul-dns/").unwrap(), "/consul-dns/");
        assert_eq!(etcd_prefix("consul-dns").unwrap(), "/consul-dns/");
        assert_eq!(etcd_prefix("/").unwrap(), "/");
        assert!(etcd_prefix("").is_err());
    }
}
