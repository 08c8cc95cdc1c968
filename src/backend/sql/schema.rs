//! The catalog tables and their versioned migrations, one dialect each (the column types,
//! the trigger syntax and the placeholder differ; the tables and their meaning do not).
//!
//! Every write to `nodes` or `services`, by `consul-dns db` or by hand, bumps
//! `catalog_version.counter` through triggers: the daemon's probe reads that one row and reloads
//! only when it moved. PostgreSQL's trigger also sends `NOTIFY consul_dns_catalog`.

use crate::config::database::Dialect;

/// The channel PostgreSQL's trigger notifies.
pub const NOTIFY_CHANNEL: &str = "consul_dns_catalog";

/// One schema version: applied in order, once, recorded in `consul_dns_migrations`.
pub struct Migration {
    /// Increasing from 1.
    pub version: i64,
    /// What it does, stored with it.
    pub description: &'static str,
    /// Statements, each run on its own (MySQL takes one statement per call).
    pub statements: fn(Dialect) -> Vec<String>,
}

/// Every migration this binary knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "nodes, services, catalog_version and the triggers that bump it",
    statements: v1,
}];

/// The table that records applied versions.
pub fn migrations_table(dialect: Dialect) -> String {
    let text = if dialect == Dialect::Mysql { "VARCHAR(255)" } else { "TEXT" };
    format!(
        "CREATE TABLE IF NOT EXISTS consul_dns_migrations (version BIGINT NOT NULL PRIMARY KEY, \
         description {text} NOT NULL, applied_at BIGINT NOT NULL)"
    )
}

fn v1(dialect: Dialect) -> Vec<String> {
    // Keys are VARCHAR: MySQL cannot index TEXT. JSON columns are TEXT holding JSON (NULL reads
    // as empty): the same in every dialect, and MySQL's TEXT takes no default.
    let (key, dc, word) = match dialect {
        Dialect::Sqlite => ("TEXT", "TEXT", "TEXT"),
        Dialect::Mysql | Dialect::Postgres => ("VARCHAR(255)", "VARCHAR(63)", "VARCHAR(16)"),
    };
    let mut statements = vec![
        format!(
            "CREATE TABLE nodes (name {key} NOT NULL PRIMARY KEY, address {key} NOT NULL, datacenter {dc} NULL, \
             meta TEXT NULL)"
        ),
        format!(
            "CREATE TABLE services (id {key} NOT NULL PRIMARY KEY, name {dc} NOT NULL, node {key} NULL, \
             address {key} NULL, port BIGINT NOT NULL, tags TEXT NULL, weight_passing BIGINT NOT NULL DEFAULT 1, \
             weight_warning BIGINT NOT NULL DEFAULT 1, health {word} NOT NULL DEFAULT 'passing', meta TEXT NULL, \
             updated_at BIGINT NOT NULL DEFAULT 0)"
        ),
        "CREATE INDEX services_name ON services (name)".to_owned(),
        "CREATE TABLE catalog_version (id BIGINT NOT NULL PRIMARY KEY, counter BIGINT NOT NULL)".to_owned(),
        "INSERT INTO catalog_version (id, counter) VALUES (1, 0)".to_owned(),
    ];
    let bump = "UPDATE catalog_version SET counter = counter + 1 WHERE id = 1";
    match dialect {
        Dialect::Sqlite | Dialect::Mysql => {
            for table in ["nodes", "services"] {
                for event in ["INSERT", "UPDATE", "DELETE"] {
                    let name = format!("{table}_{}", event.to_ascii_lowercase());
                    statements.push(if dialect == Dialect::Sqlite {
                        format!("CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN {bump}; END")
                    } else {
                        format!("CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {bump}")
                    });
                }
            }
        }
        Dialect::Postgres => {
            statements.push(format!(
                "CREATE FUNCTION consul_dns_bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {bump}; \
                 PERFORM pg_notify('{NOTIFY_CHANNEL}', ''); RETURN NULL; END $$"
            ));
            for table in ["nodes", "services"] {
                statements.push(format!(
                    "CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} \
                     FOR EACH STATEMENT EXECUTE FUNCTION consul_dns_bump()"
                ));
            }
        }
    }
    statements
}

/// `sql` with `?` placeholders in this dialect (PostgreSQL numbers them: `$1`, `$2` …). The
/// statements here have no `?` inside string literals.
pub fn placeholders(dialect: Dialect, sql: &str) -> String {
    if dialect != Dialect::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        let sql = "UPDATE services SET health = ? WHERE id = ?";
        assert_eq!(placeholders(Dialect::Postgres, sql), "UPDATE services SET health = $1 WHERE id = $2");
        assert_eq!(placeholders(Dialect::Mysql, sql), sql);
    }

    #[test]
    fn every_write_path_has_a_trigger_in_every_dialect() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version) && MIGRATIONS[0].version == 1);
        for dialect in [Dialect::Sqlite, Dialect::Mysql] {
            let triggers = v1(dialect).iter().filter(|s| s.starts_with("CREATE TRIGGER")).count();
            assert_eq!(triggers, 6, "{dialect:?}: insert, update, delete on both tables");
        }
        let pg = v1(Dialect::Postgres).join("\n");
        assert!(pg.contains("pg_notify('consul_dns_catalog'") && pg.matches("FOR EACH STATEMENT").count() == 2);
    }
}
