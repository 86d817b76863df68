//! The daemon's configuration file, `peerdrop.toml` in the data dir.
//! `configs/peerdrop.toml` documents every option with its default.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::daemon::DaemonError;

/// Daemon options. Every field has a default, so an empty or missing file
/// is a valid configuration; unknown keys are refused (a typo should not be
/// silently ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Multiaddrs to listen on. A port of 0 is chosen at random on the first
    /// start and then kept, so links stay valid across restarts.
    pub listen: Vec<String>,
    /// Serve what this node fetched to others.
    pub reseed: bool,
    /// Upload limit in bytes per second (none if absent).
    pub max_upload_rate: Option<u64>,
    /// Seconds a source may take to answer one request.
    pub request_timeout_secs: u64,
    /// Seconds a fetch keeps trying to reach a source before it fails.
    pub fetch_wait_secs: u64,
    /// Most established connections.
    pub max_connections: u32,
    /// Most fetches and pins running at once; more wait in the queue (their
    /// deadlines start when they run).
    pub max_jobs: usize,
    /// Find peers on the LAN with mDNS.
    pub mdns: bool,
    /// DHT bootstrap peers (multiaddrs ending in /p2p/PEER_ID).
    pub bootstrap: Vec<String>,
    /// Answer DHT queries and keep provider records for others.
    pub dht_server: bool,
    /// Relay circuits for peers behind NAT.
    pub relay_server: bool,
    /// Bytes one relayed circuit may carry.
    pub relay_max_circuit_bytes: u64,
    /// Relays to be reachable through (multiaddrs ending in /p2p/RELAY_ID).
    pub relays: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".into(),
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            ],
            reseed: true,
            max_upload_rate: None,
            request_timeout_secs: 30,
            fetch_wait_secs: 300,
            max_connections: 256,
            max_jobs: 16,
            mdns: true,
            bootstrap: Vec::new(),
            dht_server: true,
            relay_server: false,
            relay_max_circuit_bytes: 1 << 30,
            relays: Vec::new(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Config, DaemonError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| DaemonError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(DaemonError::Config(format!("{}: {e}", path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_the_default() {
        let shipped = include_str!("../../configs/peerdrop.toml");
        let parsed: Config = toml::from_str(shipped).unwrap();
        assert_eq!(parsed, Config::default());
        assert!(toml::from_str::<Config>("lissen = []").is_err());
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
    }
}
