//! The daemon's configuration file, `peerdrop.toml` in the data dir.
//! `configs/peerdrop.toml` documents every option with its default.

use std::net::SocketAddr;
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
    /// Answer DHT queries and keep provider records for others: `auto`
    /// once AutoNAT finds this daemon publicly reachable.
    pub dht_server: Setting,
    /// Relay circuits for peers behind NAT: `auto` once AutoNAT finds this
    /// daemon publicly reachable.
    pub relay_server: Setting,
    /// Bytes one relayed circuit may carry.
    pub relay_max_circuit_bytes: u64,
    /// Seconds one relayed circuit may stay open.
    pub relay_max_circuit_secs: u64,
    /// Circuits relayed at once.
    pub relay_max_circuits: usize,
    /// Circuits relayed at once per peer.
    pub relay_max_circuits_per_peer: usize,
    /// Relay reservations held at once.
    pub relay_max_reservations: usize,
    /// Relay reservations held at once per peer.
    pub relay_max_reservations_per_peer: usize,
    /// Relays to be reachable through (multiaddrs ending in /p2p/RELAY_ID).
    pub relays: Vec<String>,
    /// Serve the shares to browsers on the LAN over HTTP (docs/WEB.md).
    pub web: bool,
    /// Where the web server listens when `web` is on.
    pub web_listen: SocketAddr,
    /// Serve the local web UI (`peerdrop ui`) on loopback.
    pub ui: bool,
    /// Where the UI listens: a loopback address.
    pub ui_listen: SocketAddr,
    /// Largest file the UI takes by drag and drop, in bytes.
    pub ui_max_upload: u64,
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
            dht_server: Setting::Auto,
            relay_server: Setting::Auto,
            relay_max_circuit_bytes: 64 << 20,
            relay_max_circuit_secs: 600,
            relay_max_circuits: 16,
            relay_max_circuits_per_peer: 4,
            relay_max_reservations: 128,
            relay_max_reservations_per_peer: 4,
            relays: Vec::new(),
            web: false,
            web_listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            ui: true,
            ui_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ui_max_upload: 4 << 30,
        }
    }
}

/// A role the daemon may take on: `"auto"`, `true` or `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSetting", into = "RawSetting")]
pub enum Setting {
    /// When AutoNAT finds the daemon publicly reachable.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawSetting {
    Bool(bool),
    Word(String),
}

impl TryFrom<RawSetting> for Setting {
    type Error = String;

    fn try_from(r: RawSetting) -> Result<Setting, String> {
        match r {
            RawSetting::Bool(true) => Ok(Setting::On),
            RawSetting::Bool(false) => Ok(Setting::Off),
            RawSetting::Word(w) if w == "auto" => Ok(Setting::Auto),
            RawSetting::Word(w) => Err(format!("expected \"auto\", true or false, not {w:?}")),
        }
    }
}

impl From<Setting> for RawSetting {
    fn from(s: Setting) -> RawSetting {
        match s {
            Setting::Auto => RawSetting::Word("auto".into()),
            Setting::On => RawSetting::Bool(true),
            Setting::Off => RawSetting::Bool(false),
        }
    }
}

impl From<Setting> for crate::net::node::Role {
    fn from(s: Setting) -> Self {
        match s {
            Setting::Auto => crate::net::node::Role::Auto,
            Setting::On => crate::net::node::Role::On,
            Setting::Off => crate::net::node::Role::Off,
        }
    }
}

impl Config {
    /// The relay service's limits.
    pub fn relay_limits(&self) -> crate::net::node::RelayLimits {
        crate::net::node::RelayLimits {
            max_circuits: self.relay_max_circuits,
            max_circuits_per_peer: self.relay_max_circuits_per_peer,
            max_circuit_bytes: self.relay_max_circuit_bytes,
            max_circuit_duration: std::time::Duration::from_secs(self.relay_max_circuit_secs),
            max_reservations: self.relay_max_reservations,
            max_reservations_per_peer: self.relay_max_reservations_per_peer,
        }
    }

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
        for (text, want) in [
            ("\"auto\"", Setting::Auto),
            ("true", Setting::On),
            ("false", Setting::Off),
        ] {
            let c: Config = toml::from_str(&format!("relay_server = {text}")).unwrap();
            assert_eq!(c.relay_server, want);
        }
        assert!(toml::from_str::<Config>("relay_server = \"sometimes\"").is_err());
    }
}
