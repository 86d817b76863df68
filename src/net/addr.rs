//! What a multiaddr says about reachability: relayed or direct, through
//! which relay, and whether it can be useful to a peer elsewhere.

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Whether `addr` goes through a relay (`/p2p-circuit`).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// The remote address of a connection this node accepted on `local`, where
/// the transport gave `send_back`. A circuit accepted through a relay has
/// only `/p2p/SRC` as its remote address (libp2p-relay), which reads as
/// direct: the circuit is taken from the local address instead, giving
/// `<relay>/p2p-circuit/p2p/SRC`, the way SRC is reached through that relay.
pub fn inbound_remote(local: &Multiaddr, send_back: &Multiaddr) -> Multiaddr {
    if is_relayed(local) && !is_relayed(send_back) {
        local.iter().chain(send_back.iter()).collect()
    } else {
        send_back.clone()
    }
}

/// The remote address of a connection, relayed (`/p2p-circuit`) whenever
/// the connection goes through a relay, whichever side opened it.
pub fn remote_addr(endpoint: &ConnectedPoint) -> Multiaddr {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => address.clone(),
        ConnectedPoint::Listener {
            local_addr,
            send_back_addr,
        } => inbound_remote(local_addr, send_back_addr),
    }
}

/// The relay a circuit address goes through: the `/p2p` before
/// `/p2p-circuit`.
pub fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => last = Some(peer),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

/// The IP address `addr` starts with, if it names one.
pub fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// Whether `addr` can only be useful on this machine or this LAN
/// (loopback, private, link-local, shared address space), so a peer
/// elsewhere cannot dial it.
pub fn is_local(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => {
            let o = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                // 100.64.0.0/10, carrier-grade NAT.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        Some(Protocol::Ip6(ip)) => {
            let s = ip.segments();
            ip.is_loopback()
                || ip.is_unspecified()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
        _ => false,
    }
}

/// Addresses of a relay ordered for reserving on it: ones a peer elsewhere
/// can dial first (the relay hands them out in circuit addresses), TCP
/// before QUIC; relay addresses dropped.
pub fn relay_dial_order(mut addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    addrs.retain(|a| !is_relayed(a));
    addrs.sort_by_key(|a| (is_local(a), crate::net::is_quic(a)));
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_circuit_reads_as_relayed() {
        let (relay, src) = (PeerId::random(), PeerId::random());
        let local: Multiaddr = format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        let send_back: Multiaddr = format!("/p2p/{src}").parse().unwrap();
        let accepted = ConnectedPoint::Listener {
            local_addr: local.clone(),
            send_back_addr: send_back.clone(),
        };
        let remote = remote_addr(&accepted);
        assert!(is_relayed(&remote));
        assert_eq!(relay_of(&remote), Some(relay));
        assert_eq!(remote, format!("{local}/p2p/{src}").parse().unwrap());
        // A direct connection keeps the address the transport gave.
        let tcp: Multiaddr = "/ip4/198.51.100.7/tcp/5000".parse().unwrap();
        let direct = ConnectedPoint::Listener {
            local_addr: "/ip4/203.0.113.1/tcp/4001".parse().unwrap(),
            send_back_addr: tcp.clone(),
        };
        assert_eq!(remote_addr(&direct), tcp);
    }

    #[test]
    fn classifies_addresses() {
        let relay = PeerId::random();
        let me = PeerId::random();
        let circuit: Multiaddr = format!("/ip4/203.0.113.1/tcp/1/p2p/{relay}/p2p-circuit/p2p/{me}")
            .parse()
            .unwrap();
        assert!(is_relayed(&circuit));
        assert_eq!(relay_of(&circuit), Some(relay));
        let direct: Multiaddr = format!("/ip4/203.0.113.1/tcp/1/p2p/{relay}")
            .parse()
            .unwrap();
        assert!(!is_relayed(&direct));
        assert_eq!(relay_of(&direct), None);
        for local in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/192.168.1.2/tcp/1",
            "/ip4/10.1.2.3/udp/1/quic-v1",
            "/ip4/100.64.1.1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
        ] {
            assert!(is_local(&local.parse().unwrap()), "{local}");
        }
        for global in ["/ip4/203.0.113.1/tcp/1", "/ip6/2001:db8::1/tcp/1"] {
            assert!(!is_local(&global.parse().unwrap()), "{global}");
        }
        let order = relay_dial_order(vec![
            "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            "/ip4/203.0.113.1/udp/1/quic-v1".parse().unwrap(),
            "/ip4/203.0.113.1/tcp/1".parse().unwrap(),
            circuit,
        ]);
        assert_eq!(
            order.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            [
                "/ip4/203.0.113.1/tcp/1",
                "/ip4/203.0.113.1/udp/1/quic-v1",
                "/ip4/127.0.0.1/tcp/1"
            ]
        );
    }
}
