//! Inbound data streams, queued instead of dropped.
//!
//! `libp2p-stream` hands inbound streams to its accept loop through a channel
//! with room for one: a second stream that arrives before the loop has taken
//! the first is dropped (reset). Fetchers that open sessions at the same time
//! (a crowd arriving at once, or one fetcher opening several sessions) were
//! turned away by that race. This behaviour accepts only the data protocol,
//! and queues its streams in a bounded channel ([`QUEUE`] deep) together with
//! the remote address of the connection they came on, which the server needs
//! for its per-address limits. Outbound streams still go through
//! `libp2p-stream`'s `Control`.
//!
//! When the queue is full the stream is dropped, which the fetcher sees as a
//! reset: the bound is on purpose (a remote peer must not grow a local
//! queue), and at [`QUEUE`] the server is far behind anyway.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::core::Endpoint;
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent, FullyNegotiatedInbound,
    SubstreamProtocol,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::mpsc;

/// Inbound streams waiting for the server; more are refused.
pub const QUEUE: usize = 128;

/// One inbound data stream and where it came from.
pub struct InboundStream {
    /// The authenticated remote peer.
    pub peer: PeerId,
    /// The remote address of the connection it came on (a `/p2p-circuit`
    /// address for relayed connections).
    pub addr: Multiaddr,
    /// The stream.
    pub stream: Stream,
}

/// The receiving end of the queue; taken once by the server.
pub type Incoming = mpsc::Receiver<InboundStream>;

/// Remote addresses of live connections, shared with their handlers so an
/// address change (rare) is seen by the next stream.
type Addrs = Arc<Mutex<HashMap<ConnectionId, Multiaddr>>>;

/// The behaviour: accepts `protocol` on every connection.
pub struct Behaviour {
    protocol: StreamProtocol,
    queue: mpsc::Sender<InboundStream>,
    addrs: Addrs,
}

impl Behaviour {
    /// A behaviour accepting `protocol`, and the queue its streams arrive on.
    pub fn new(protocol: StreamProtocol) -> (Behaviour, Incoming) {
        let (queue, incoming) = mpsc::channel(QUEUE);
        let b = Behaviour {
            protocol,
            queue,
            addrs: Arc::default(),
        };
        (b, incoming)
    }

    fn handler(&self, connection: ConnectionId, peer: PeerId, remote: &Multiaddr) -> Handler {
        self.addrs
            .lock()
            .expect("never poisoned")
            .insert(connection, remote.clone());
        Handler {
            protocol: self.protocol.clone(),
            queue: self.queue.clone(),
            peer,
            connection,
            addrs: self.addrs.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let remote = crate::net::addr::inbound_remote(local, remote);
        Ok(self.handler(connection, peer, &remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection, peer, addr))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(c) => {
                self.addrs
                    .lock()
                    .expect("never poisoned")
                    .remove(&c.connection_id);
            }
            FromSwarm::AddressChange(c) => {
                self.addrs
                    .lock()
                    .expect("never poisoned")
                    .insert(c.connection_id, crate::net::addr::remote_addr(c.new));
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Per connection: negotiates the protocol on inbound streams and queues
/// them. It never opens a stream and never keeps a connection alive by itself
/// (open streams do).
pub struct Handler {
    protocol: StreamProtocol,
    queue: mpsc::Sender<InboundStream>,
    peer: PeerId,
    connection: ConnectionId,
    addrs: Addrs,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, Infallible, Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), Infallible>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        {
            let addr = self
                .addrs
                .lock()
                .expect("never poisoned")
                .get(&self.connection)
                .cloned()
                .unwrap_or_else(Multiaddr::empty);
            let s = InboundStream {
                peer: self.peer,
                addr,
                stream,
            };
            if self.queue.try_send(s).is_err() {
                tracing::debug!(peer = %self.peer, "inbound stream queue full or closed; refusing a stream");
            }
        }
    }
}
