//! The TCP limits (`tcp_*` keys): connection caps, client prefixes, idle and write timeouts.
//! The DNS server enforces them (`dns::tcp`); they change on restart only.

use std::time::Duration;

use super::{ConfigError, Layer};

/// How many TCP connections the server keeps and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once; beyond it the oldest idle one is closed for the newcomer.
    pub max_connections: usize,
    /// Connections from one client prefix; beyond it that prefix's oldest idle one is closed.
    pub max_per_client: usize,
    /// Prefix length that makes IPv4 addresses one client (32: each address).
    pub client_prefix_v4: u8,
    /// Prefix length that makes IPv6 addresses one client (64: each /64).
    pub client_prefix_v6: u8,
    /// A connection without a complete query for this long after its last reply is closed.
    pub idle_timeout: Duration,
    /// A connection whose client does not take a reply for this long is closed.
    pub write_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            max_per_client: 128,
            client_prefix_v4: 32,
            client_prefix_v6: 64,
            idle_timeout: Duration::from_secs(8),
            write_timeout: Duration::from_secs(2),
        }
    }
}

/// The TCP limits a layer sets, the defaults for the rest.
pub(crate) fn limits(layer: &Layer) -> Result<TcpLimits, ConfigError> {
    let d = TcpLimits::default();
    let limits = TcpLimits {
        max_connections: layer.tcp_max_connections.map_or(d.max_connections, |n| n.0 as usize),
        max_per_client: layer.tcp_max_per_client.map_or(d.max_per_client, |n| n.0 as usize),
        client_prefix_v4: layer.tcp_client_prefix_v4.map_or(d.client_prefix_v4, |n| n.0 as u8),
        client_prefix_v6: layer.tcp_client_prefix_v6.map_or(d.client_prefix_v6, |n| n.0 as u8),
        idle_timeout: layer.tcp_idle_timeout.map_or(d.idle_timeout, |t| t.0),
        write_timeout: layer.tcp_write_timeout.map_or(d.write_timeout, |t| t.0),
    };
    for (key, value) in [("tcp_idle_timeout", limits.idle_timeout), ("tcp_write_timeout", limits.write_timeout)] {
        if value.is_zero() {
            return Err(ConfigError::Invalid { key, message: "must be above 0".into() });
        }
    }
    Ok(limits)
}
