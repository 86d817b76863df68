//! Browser receive: a small HTTP server for the page in `web/` and the
//! ciphertext it decrypts.
//!
//! A browser on the LAN opens the web link `http://ADDRESS:PORT/#1/ID/KEY`.
//! The server hands out the page (embedded in the binary, see [`assets`]),
//! the manifest and the sealed chunks, **by id only**: exactly what a
//! pin-link holder may have. The key is in the URL's fragment, which browsers
//! never send, so the server never learns it; the page verifies every chunk
//! against its BLAKE3 id and decrypts it itself. docs/WEB.md describes the
//! endpoints and what the server learns.
//!
//! Serving is bounded like the libp2p side ([`WebConfig`]): connections per
//! node and per address, chunk answers in bytes of memory, a wait for a
//! slot, deadlines on idle reads and stalled writes, and the upload rate.
//! Chunks come from the same [`Provider`] the libp2p side serves, read-only.

pub mod assets;
mod io;
pub mod ui;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::chunk::ChunkId;
use crate::crypto::ShareKey;
use crate::link::base32;
use crate::manifest::ManifestId;
use crate::net::serve::{Provider, Refusal};

/// The fragment's version: `#1/<manifest id>/<key>`, both in the link's
/// base32 (docs/WEB.md).
pub const FRAGMENT_VERSION: &str = "1";

/// Limits of the HTTP server. The defaults suit a LAN with a few phones.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Most open connections, node-wide; more are closed at once.
    pub max_connections: usize,
    /// Most open connections from one IP address (a browser opens about 6).
    pub max_connections_per_addr: usize,
    /// Bytes of chunk answers in memory at once, node-wide.
    pub memory: usize,
    /// How long a chunk request waits for memory before it is answered 503.
    pub queue_wait: Duration,
    /// Most time to produce one chunk (read and re-seal it).
    pub produce_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub write_stall: Duration,
    /// Time to read one request's headers.
    pub header_timeout: Duration,
    /// Upload limit in bytes per second, for all HTTP answers together.
    pub max_rate: Option<u64>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            max_connections: 64,
            max_connections_per_addr: 16,
            memory: 32 << 20,
            queue_wait: Duration::from_secs(10),
            produce_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_stall: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_rate: None,
        }
    }
}

/// The web link for a share served at `addr`: the key is only in the
/// fragment.
pub fn web_link(addr: SocketAddr, id: &ManifestId, key: &ShareKey) -> String {
    format!(
        "http://{addr}/#{FRAGMENT_VERSION}/{}/{}",
        base32::encode(&id.0),
        base32::encode(key.expose_secret())
    )
}

/// The address to put in a web link for a server bound to `bound`: the
/// bound address, or if that is unspecified (`0.0.0.0`), the first
/// non-loopback IPv4 address among `candidates` (the node's listen
/// addresses, best first), else loopback.
pub fn link_addr(bound: SocketAddr, candidates: &[libp2p::Multiaddr]) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let ip = candidates
        .iter()
        .flat_map(|a| a.iter())
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(ip) if !ip.is_loopback() && !ip.is_unspecified() => {
                Some(IpAddr::V4(ip))
            }
            _ => None,
        })
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, bound.port())
}

/// Binds `listen` and serves on it in a task of its own (until the runtime
/// stops); returns the bound address.
pub async fn spawn(
    listen: SocketAddr,
    provider: Arc<dyn Provider>,
    config: WebConfig,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, provider, config));
    Ok(bound)
}

/// Serves the page, manifests and chunks on `listener` until the returned
/// future is dropped.
pub async fn serve(listener: TcpListener, provider: Arc<dyn Provider>, config: WebConfig) {
    let state = Arc::new(State {
        provider,
        memory: Arc::new(Semaphore::new(config.memory.min(Semaphore::MAX_PERMITS))),
        rate: config.max_rate.map(crate::net::serve::RateLimit::new),
        conns: Mutex::new(Conns::default()),
        config,
    });
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::debug!("web: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = ConnSlot::take(&state, remote.ip()) else {
            tracing::debug!("web: refusing a connection from {remote}: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let io =
                io::Deadlines::new(stream, state.config.idle_timeout, state.config.write_stall);
            let service = hyper::service::service_fn(|req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(state.config.header_timeout)
                .max_buf_size(16 << 10)
                .serve_connection(TokioIo::new(io), service);
            if let Err(e) = conn.await {
                tracing::debug!("web: connection from {remote}: {e}");
            }
        });
    }
}

struct State {
    provider: Arc<dyn Provider>,
    /// One permit per byte of chunk answers in memory.
    memory: Arc<Semaphore>,
    rate: Option<crate::net::serve::RateLimit>,
    conns: Mutex<Conns>,
    config: WebConfig,
}

#[derive(Default)]
struct Conns {
    total: usize,
    per_addr: HashMap<IpAddr, usize>,
}

/// An admitted connection; gives its place back when dropped.
struct ConnSlot {
    state: Arc<State>,
    ip: IpAddr,
}

impl ConnSlot {
    fn take(state: &Arc<State>, ip: IpAddr) -> Option<ConnSlot> {
        let mut c = state
            .conns
            .lock()
            .expect("never poisoned: no panics while held");
        let mine = c.per_addr.get(&ip).copied().unwrap_or(0);
        if c.total >= state.config.max_connections || mine >= state.config.max_connections_per_addr
        {
            return None;
        }
        c.total += 1;
        *c.per_addr.entry(ip).or_default() += 1;
        Some(ConnSlot {
            state: state.clone(),
            ip,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self
            .state
            .conns
            .lock()
            .expect("never poisoned: no panics while held");
        c.total -= 1;
        if let Some(n) = c.per_addr.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_addr.remove(&self.ip);
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Asset(&'static assets::Asset),
    Manifest(ManifestId),
    Chunk(ManifestId, ChunkId),
}

fn route(path: &str) -> Option<Route> {
    if let Some(a) = assets::find(path) {
        return Some(Route::Asset(a));
    }
    let rest = path.strip_prefix("/v1/")?;
    let mut parts = rest.split('/');
    let kind = parts.next()?;
    let id = parse_id(parts.next()?)?;
    let route = match kind {
        "manifest" => Route::Manifest(ManifestId(id)),
        "chunk" => Route::Chunk(ManifestId(id), ChunkId(parse_id(parts.next()?)?)),
        _ => return None,
    };
    parts.next().is_none().then_some(route)
}

fn parse_id(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    crate::chunk::unhex(s)?.try_into().ok()
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Answer> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served",
        );
    }
    // A GET with a body is not something a page of ours sends.
    if req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "requests carry no body");
    }
    match route(req.uri().path()) {
        None => text(StatusCode::NOT_FOUND, "not found"),
        Some(Route::Asset(a)) => {
            let mut r = respond(StatusCode::OK, a.content_type, Answer::new(a.bytes));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Some(Route::Manifest(id)) => match state.provider.manifest(&id) {
            None => text(StatusCode::NOT_FOUND, "this node does not serve that share"),
            Some(bytes) => {
                pace(state, bytes.len()).await;
                immutable(respond(
                    StatusCode::OK,
                    "application/octet-stream",
                    Answer::new(Bytes::from(bytes.to_vec())),
                ))
            }
        },
        Some(Route::Chunk(share, chunk)) => chunk_answer(state, share, chunk).await,
    }
}

async fn chunk_answer(state: &State, share: ManifestId, chunk: ChunkId) -> Response<Answer> {
    // Reserve the chunk's bytes before producing it, so memory is bounded in
    // bytes whatever the share's chunk size (as net::serve does).
    let want = state
        .provider
        .chunk_len(&share, &chunk)
        .unwrap_or(crate::net::serve::DEFAULT_RESERVE);
    let Some(mut permit) = reserve(state, want).await else {
        return busy();
    };
    let provider = state.provider.clone();
    let job = tokio::task::spawn_blocking(move || provider.chunk(&share, &chunk));
    let bytes = match tokio::time::timeout(state.config.produce_timeout, job).await {
        Ok(Ok(Ok(b))) => b,
        Ok(Ok(Err(Refusal::NotFound))) => {
            return text(StatusCode::NOT_FOUND, "this node does not serve that chunk")
        }
        Ok(Ok(Err(Refusal::Stale))) => return text(
            StatusCode::GONE,
            "the shared files changed since they were shared; ask the sender to share them again",
        ),
        Ok(Err(_)) | Err(_) => return busy(),
    };
    if bytes.len() > permit.num_permits() {
        // Larger than guessed: top up before it is held any longer.
        match reserve(state, bytes.len() - permit.num_permits()).await {
            Some(more) => permit.merge(more),
            None => return busy(),
        }
    }
    pace(state, bytes.len()).await;
    let mut body = Answer::new(Bytes::from(bytes));
    body.permit = Some(permit);
    immutable(respond(StatusCode::OK, "application/octet-stream", body))
}

/// `n` bytes of the memory budget (all of it if `n` is more), waiting at
/// most the queue wait.
async fn reserve(state: &State, n: usize) -> Option<OwnedSemaphorePermit> {
    let permits = n.clamp(1, state.config.memory.min(Semaphore::MAX_PERMITS) / 2) as u32;
    tokio::time::timeout(
        state.config.queue_wait,
        state.memory.clone().acquire_many_owned(permits),
    )
    .await
    .ok()?
    .ok()
}

async fn pace(state: &State, n: usize) {
    if let Some(r) = &state.rate {
        r.take(n).await;
    }
}

/// The headers every answer carries: nothing loads from anywhere but this
/// node, no inline script, and no referrer leaves the page.
fn respond(status: StatusCode, content_type: &'static str, body: Answer) -> Response<Answer> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// The Content-Security-Policy of every answer (docs/WEB.md).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; worker-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

fn immutable(mut r: Response<Answer>) -> Response<Answer> {
    // Content-addressed: the bytes for an id never change.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    r
}

fn text(status: StatusCode, msg: &'static str) -> Response<Answer> {
    let mut r = respond(status, "text/plain; charset=utf-8", Answer::new(msg));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn busy() -> Response<Answer> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "busy; try again shortly");
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A whole answer body, holding its share of the memory budget until hyper
/// has written it and drops the body.
pub struct Answer {
    data: Option<Bytes>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Answer {
    fn new(data: impl Into<Bytes>) -> Answer {
        Answer {
            data: Some(data.into()),
            permit: None,
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_well_formed_ids() {
        let id = "ab".repeat(32);
        assert_eq!(
            route(&format!("/v1/manifest/{id}")),
            Some(Route::Manifest(ManifestId([0xab; 32])))
        );
        assert_eq!(
            route(&format!("/v1/chunk/{id}/{id}")),
            Some(Route::Chunk(ManifestId([0xab; 32]), ChunkId([0xab; 32])))
        );
        for bad in [
            format!("/v1/manifest/{id}/"),
            format!("/v1/manifest/{}", &id[1..]),
            format!("/v1/chunk/{id}"),
            format!("/v1/chunk/{id}/{id}/x"),
            format!("/v1/key/{id}"),
            "/v1/manifest/../../etc/passwd".into(),
            "/x".into(),
        ] {
            assert_eq!(route(&bad), None, "{bad}");
        }
        assert!(matches!(route("/"), Some(Route::Asset(_))));
    }

    #[test]
    fn link_keeps_key_in_fragment() {
        let key = ShareKey::from_bytes([7; 32]).unwrap();
        let id = ManifestId([1; 32]);
        let link = web_link("10.0.0.1:8080".parse().unwrap(), &id, &key);
        let (before, frag) = link.split_once('#').unwrap();
        assert_eq!(before, "http://10.0.0.1:8080/");
        assert_eq!(
            frag,
            format!(
                "1/{}/{}",
                base32::encode(&[1; 32]),
                base32::encode(&[7; 32])
            )
        );
    }

    #[test]
    fn link_addr_prefers_a_lan_address() {
        let bound: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let addrs: Vec<libp2p::Multiaddr> = ["/ip4/127.0.0.1/tcp/1", "/ip4/10.1.2.3/tcp/1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(link_addr(bound, &addrs), "10.1.2.3:9000".parse().unwrap());
        assert_eq!(
            link_addr(bound, &addrs[..1]),
            "127.0.0.1:9000".parse().unwrap()
        );
        let fixed: SocketAddr = "192.168.1.2:80".parse().unwrap();
        assert_eq!(link_addr(fixed, &addrs), fixed);
    }
}
