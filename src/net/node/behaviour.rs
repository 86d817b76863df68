//! The node's protocols and how the swarm carrying them is built.

use std::time::Duration;

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, identify, identity, kad, mdns, noise, ping, relay, tcp,
    yamux, Swarm, SwarmBuilder,
};

use super::relay_gate::RelayGate;
use super::retest::Retest;
use super::{NetError, NodeConfig, Role, KAD};

/// The node's protocols. Connection limits come first so they can refuse a
/// connection before the others see it.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) limits: connection_limits::Behaviour,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) stream: libp2p_stream::Behaviour,
    pub(super) inbound: crate::net::inbound::Behaviour,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) kad: kad::Behaviour<crate::net::dht_store::Store>,
    pub(super) relay_client: relay::client::Behaviour,
    pub(super) relay: Toggle<RelayGate>,
    pub(super) dcutr: dcutr::Behaviour,
    pub(super) autonat: Retest,
    pub(super) autonat_server: Toggle<autonat::v2::server::Behaviour>,
}

/// A fresh mDNS behaviour for node `me`; also used to replace one whose
/// list of announcements grew too long (see `lan.rs`).
pub(super) fn mdns_behaviour(me: libp2p::PeerId) -> std::io::Result<mdns::tokio::Behaviour> {
    // Re-query every minute (default: 5), so a machine that joins the LAN
    // later is found soon.
    let c = mdns::Config {
        query_interval: Duration::from_secs(60),
        ..Default::default()
    };
    mdns::tokio::Behaviour::new(c, me)
}

/// Builds the swarm for `config`, with `inbound` taking the data streams.
pub(super) fn build(
    config: &NodeConfig,
    inbound: crate::net::inbound::Behaviour,
) -> Result<Swarm<Behaviour>, NetError> {
    let keypair = config
        .keypair
        .clone()
        .unwrap_or_else(identity::Keypair::generate_ed25519);
    let start = |e: &dyn std::fmt::Display| NetError::Start(e.to_string());
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(64))
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(config.max_connections_per_peer));
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| start(&e))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| start(&e))?
        .with_behaviour(
            |key, relay_client| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let me = key.public().to_peer_id();
                let mdns = if config.mdns {
                    Some(mdns_behaviour(me)?)
                } else {
                    None
                };
                let mut kad_config = kad::Config::new(KAD);
                kad_config.disjoint_query_paths(true);
                kad_config.set_query_timeout(Duration::from_secs(30));
                // Provider records are re-published hourly and expire after a day
                // without one, so a node that went away drops out.
                kad_config.set_provider_publication_interval(Some(Duration::from_secs(3600)));
                kad_config.set_provider_record_ttl(Some(Duration::from_secs(24 * 3600)));
                // Bounded against a flood of provider records (audit F-02).
                let store = crate::net::dht_store::Store::new(me, Default::default());
                let mut kad = kad::Behaviour::with_config(me, store, kad_config);
                // Explicit, never kad's automatic mode (audit F-20): a
                // one-shot node must not offer to store records it drops
                // on exit.
                kad.set_mode(Some(if config.dht_server == Role::On {
                    kad::Mode::Server
                } else {
                    kad::Mode::Client
                }));
                let relay = (config.relay_server != Role::Off).then(|| {
                    let l = &config.relay_limits;
                    RelayGate(relay::Behaviour::new(
                        me,
                        relay::Config {
                            max_circuits: l.max_circuits,
                            max_circuits_per_peer: l.max_circuits_per_peer,
                            max_circuit_bytes: l.max_circuit_bytes,
                            max_circuit_duration: l.max_circuit_duration,
                            max_reservations: l.max_reservations,
                            max_reservations_per_peer: l.max_reservations_per_peer,
                            ..Default::default()
                        },
                    ))
                });
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(limits),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/peerdrop/1.0.0".into(), key.public())
                            .with_push_listen_addr_updates(true),
                    ),
                    ping: ping::Behaviour::default(),
                    stream: libp2p_stream::Behaviour::new(),
                    inbound,
                    mdns: mdns.into(),
                    kad,
                    relay_client,
                    relay: relay.into(),
                    dcutr: dcutr::Behaviour::new(me),
                    autonat: Retest::new(),
                    autonat_server: (config.dht_server != Role::Off)
                        .then(autonat::v2::server::Behaviour::default)
                        .into(),
                })
            },
        )
        .map_err(|e| start(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}
