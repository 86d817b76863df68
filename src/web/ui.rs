//! The daemon's local web UI, on a loopback listener of its own.
//!
//! The page (`web/src/ui`, embedded like the receive page) drives the
//! daemon with its control requests: `POST /api/control` takes one request
//! line exactly as the control socket does (docs/CONTROL.md) and answers its
//! final line; `fetch` and `pin` are answered detached, and the page polls
//! `list` and `status` for progress. Two more endpoints serve the page:
//! `POST /api/upload` stores a dropped file in the daemon's data dir and
//! shares it, `POST /api/qr` draws a link as SVG.
//!
//! Only the daemon's user should drive it, but a loopback port is open to
//! every local user and to every page in the browser, so each request must
//! carry the token (32 random bytes kept 0600 in the data dir, compared in
//! constant time), name this listener in `Host` (a DNS-rebinding page names
//! its own host) and, if it says where it comes from, come from this origin
//! (`Origin`, `Sec-Fetch-Site`: a cross-site page cannot send the token, and
//! is refused before the token is looked at). docs/WEB.md, "The local UI".

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::{assets, respond, Answer, WebConfig};

/// The header the page sends the token in (a custom header also makes any
/// cross-origin request a preflighted one, which this server never allows).
pub const TOKEN_HEADER: &str = "x-peerdrop-token";
/// The token's file in the data dir.
pub const TOKEN_FILE: &str = "ui.token";
/// Where dropped files are stored, under the data dir.
pub const UPLOAD_DIR: &str = "uploads";
/// Most text `/api/qr` draws.
const MAX_QR_TEXT: usize = 4096;
/// Uploads at once; more are answered 503.
const UPLOADS_AT_ONCE: usize = 2;
/// Connections at once; more are closed at once (a browser opens about 6).
const MAX_CONNECTIONS: usize = 32;

/// Why a token cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The system's random source failed.
    #[error("no randomness for the UI token")]
    Rng,
    /// The token file does not hold a token.
    #[error("the UI token file does not hold 64 hex digits")]
    Malformed,
}

/// The UI's access token: 32 random bytes, 64 hex digits in the UI link.
pub struct UiToken(Zeroizing<[u8; 32]>);

impl UiToken {
    /// A fresh random token.
    pub fn generate() -> Result<UiToken, TokenError> {
        let mut t = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut t[..])
            .map_err(|_| TokenError::Rng)?;
        Ok(UiToken(t))
    }

    /// Reads the token's 64 hex digits.
    pub fn from_hex(s: &str) -> Result<UiToken, TokenError> {
        let bytes = Zeroizing::new(crate::chunk::unhex(s.trim()).ok_or(TokenError::Malformed)?);
        let t: [u8; 32] = bytes[..].try_into().map_err(|_| TokenError::Malformed)?;
        Ok(UiToken(Zeroizing::new(t)))
    }

    /// The token as 64 hex digits.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::chunk::hex(&self.0[..]))
    }

    /// Whether `given` (hex, from a request) is this token. The comparison
    /// of the bytes takes the same time wherever they differ
    /// (`blake3::Hash`'s equality is constant-time), so timing tells a
    /// guesser nothing about how close it came.
    pub fn matches(&self, given: &str) -> bool {
        let Some(bytes) = crate::chunk::unhex(given) else {
            return false;
        };
        let Ok(given) = <[u8; 32]>::try_from(&bytes[..]) else {
            return false;
        };
        blake3::Hash::from_bytes(given) == blake3::Hash::from_bytes(*self.0)
    }
}

/// The link `peerdrop ui` prints.
pub fn ui_link(addr: SocketAddr, token: &UiToken) -> String {
    format!("http://{addr}/?token={}", token.to_hex().as_str())
}

/// A future answer line.
pub type AnswerLine<'a> = Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'a>>;

/// What the UI asks of the daemon (given by the daemon, so that this layer
/// does not depend on it).
pub trait Control: Send + Sync + 'static {
    /// Answers one control request line (docs/CONTROL.md) with its final
    /// line; a `fetch` or `pin` is answered as detached.
    fn answer(&self, line: String) -> AnswerLine<'_>;
    /// Answers a `share` request for `path` (an upload), as `answer` would.
    fn share(&self, path: PathBuf) -> AnswerLine<'_>;
}

/// How the UI is served.
pub struct UiConfig {
    /// The token every request must carry.
    pub token: UiToken,
    /// Where uploads go (`DATA_DIR/uploads`).
    pub upload_dir: PathBuf,
    /// Largest upload, in bytes.
    pub max_upload: u64,
    /// Largest control request line, in bytes (the socket's limit).
    pub max_request: usize,
    /// Deadlines on connections (the web server's).
    pub limits: WebConfig,
}

struct Ui {
    control: Arc<dyn Control>,
    config: UiConfig,
    /// The origins this listener is known by: `http://HOST:PORT`.
    origins: Vec<String>,
    uploads: Semaphore,
}

/// Serves the UI on `listener` (bound to loopback) until dropped.
pub async fn serve(listener: TcpListener, control: Arc<dyn Control>, config: UiConfig) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let origins = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .map(|h| format!("http://{h}:{port}"))
        .collect();
    let ui = Arc::new(Ui {
        control,
        config,
        origins,
        uploads: Semaphore::new(UPLOADS_AT_ONCE),
    });
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::debug!("ui: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = conns.clone().try_acquire_owned() else {
            tracing::debug!("ui: refusing a connection from {remote}: too many open");
            continue;
        };
        let ui = ui.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let limits = &ui.config.limits;
            let io = super::io::Deadlines::new(stream, limits.idle_timeout, limits.write_stall);
            let service = hyper::service::service_fn(|req| {
                let ui = ui.clone();
                async move { Ok::<_, Infallible>(no_store(handle(&ui, req).await)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(16 << 10)
                .serve_connection(TokioIo::new(io), service);
            if let Err(e) = conn.await {
                tracing::debug!("ui: connection from {remote}: {e}");
            }
        });
    }
}

/// Why a request is refused before it is looked at.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// `Host` is not this listener: DNS rebinding, or a misdirected request.
    Host,
    /// Sent by a page of another origin.
    Origin,
    /// No token.
    NoToken,
    /// A token that is not this UI's.
    BadToken,
}

impl Refused {
    fn answer(&self) -> Response<Answer> {
        let (status, msg) = match self {
            Refused::Host => (
                StatusCode::MISDIRECTED_REQUEST,
                "refused: the Host header does not name this UI (open it as http://127.0.0.1:PORT/)",
            ),
            Refused::Origin => (
                StatusCode::FORBIDDEN,
                "refused: the request comes from another origin",
            ),
            Refused::NoToken => (
                StatusCode::UNAUTHORIZED,
                "this needs the UI token: open the link `peerdrop ui` prints",
            ),
            Refused::BadToken => (
                StatusCode::FORBIDDEN,
                "refused: wrong UI token (run `peerdrop ui` for the link)",
            ),
        };
        super::text(status, msg)
    }
}

/// The checks every request passes, in this order: host, origin, token.
fn admit(ui: &Ui, headers: &HeaderMap, query: Option<&str>) -> Result<(), Refused> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !host.is_some_and(|h| ui.origins.iter().any(|o| o[7..] == *h)) {
        return Err(Refused::Host);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| ui.origins.iter().any(|mine| mine == o));
        if !ok {
            return Err(Refused::Origin);
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        // `none`: typed or opened from outside the browser (xdg-open).
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(Refused::Origin);
        }
    }
    let given = headers
        .get(TOKEN_HEADER)
        .and_then(|t| t.to_str().ok())
        .map(str::to_owned)
        .or_else(|| param(query, "token"));
    match given {
        None => Err(Refused::NoToken),
        Some(t) if ui.config.token.matches(&t) => Ok(()),
        Some(_) => Err(Refused::BadToken),
    }
}

/// The value of `name` in a query string, percent-decoded.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v)).flatten()
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                (hi * 16 + lo) as u8
            }
            b'+' => b' ',
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

async fn handle(ui: &Ui, req: Request<Incoming>) -> Response<Answer> {
    if let Err(r) = admit(ui, req.headers(), req.uri().query()) {
        return r.answer();
    }
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/" | "/index.html") => page(ui),
        (Method::GET | Method::HEAD, p) if assets::find_ui(p).is_some() => {
            let a = assets::find_ui(p).expect("just found");
            respond(StatusCode::OK, a.content_type, Answer::new(a.bytes))
        }
        (Method::POST, "/api/control") => {
            if !is_json(req.headers()) {
                return super::text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "send the request as application/json",
                );
            }
            let line = match read_body(req.into_body(), ui.config.max_request).await {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(r) => return r,
            };
            let answer = ui.control.answer(line).await;
            respond(StatusCode::OK, "application/json", Answer::new(answer))
        }
        (Method::POST, "/api/qr") => match read_body(req.into_body(), MAX_QR_TEXT).await {
            Ok(text) => match qrcode::QrCode::new(&text) {
                Ok(code) => {
                    let svg = code
                        .render::<qrcode::render::svg::Color>()
                        .min_dimensions(240, 240)
                        .quiet_zone(true)
                        .build();
                    respond(StatusCode::OK, "image/svg+xml", Answer::new(svg))
                }
                Err(_) => super::text(StatusCode::BAD_REQUEST, "too long for a QR code"),
            },
            Err(r) => r,
        },
        (Method::POST, "/api/upload") => upload(ui, req).await,
        (_, "/" | "/index.html" | "/api/control" | "/api/qr" | "/api/upload") => {
            super::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => super::text(StatusCode::NOT_FOUND, "not found"),
    }
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next() == Some("application/json"))
}

/// The page, with the token in its script and style links (it is hex, so
/// nothing else can end up in the HTML).
fn page(ui: &Ui) -> Response<Answer> {
    let html =
        String::from_utf8_lossy(assets::UI_HTML).replace("__TOKEN__", &ui.config.token.to_hex());
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Answer::new(html),
    )
}

/// The token is in the UI's URLs: nothing of it is kept in a cache.
fn no_store(mut r: Response<Answer>) -> Response<Answer> {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The next frame's data of `body` (trailers are skipped), or `None` at
/// its end.
async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    return Some(Ok(d));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// The whole body, if it is at most `max` bytes.
async fn read_body(mut body: Incoming, max: usize) -> Result<Vec<u8>, Response<Answer>> {
    let mut out = Vec::new();
    while let Some(d) = next_data(&mut body).await {
        let d = d.map_err(|_| super::text(StatusCode::BAD_REQUEST, "the request broke off"))?;
        if out.len() + d.len() > max {
            return Err(super::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request is too large",
            ));
        }
        out.extend_from_slice(&d);
    }
    Ok(out)
}

/// `POST /api/upload?name=NAME`: stores the body as `NAME` in a new folder
/// under the upload dir, then shares it (a share request like any other).
/// Bounded: `Content-Length` is required and at most `max_upload`, the body
/// may not run past it, and [`UPLOADS_AT_ONCE`] run at once.
async fn upload(ui: &Ui, req: Request<Incoming>) -> Response<Answer> {
    let Some(name) = param(req.uri().query(), "name") else {
        return super::text(StatusCode::BAD_REQUEST, "give the file's name (?name=)");
    };
    // One plain name, safe by the same rules as a name in a share.
    if name.contains('/') || crate::meta::RelPath::new(&name).is_err() {
        return super::text(StatusCode::BAD_REQUEST, "that file name cannot be shared");
    }
    let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    else {
        return super::text(StatusCode::LENGTH_REQUIRED, "give the upload's length");
    };
    if len > ui.config.max_upload {
        return super::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than ui_max_upload (peerdrop.toml): share it by its path instead",
        );
    }
    let Ok(_permit) = ui.uploads.try_acquire() else {
        return super::busy();
    };
    let dir = match new_upload_dir(&ui.config.upload_dir).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("ui: cannot make an upload folder: {e}");
            return super::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the upload");
        }
    };
    let path = dir.join(&name);
    let stored = store(req.into_body(), &path, len).await;
    if let Err(msg) = stored {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return super::text(StatusCode::BAD_REQUEST, msg);
    }
    let answer = ui.control.share(path).await;
    if !answer.starts_with(br#"{"version":1,"ok":true"#) {
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }
    respond(StatusCode::OK, "application/json", Answer::new(answer))
}

/// A new folder for one upload, `UPLOAD_DIR/<16 random hex digits>`.
async fn new_upload_dir(base: &Path) -> std::io::Result<PathBuf> {
    let mut b = tokio::fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b.create(base).await?;
    let token = UiToken::generate().map_err(std::io::Error::other)?;
    let dir = base.join(&token.to_hex()[..16]);
    tokio::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .await?;
    Ok(dir)
}

/// Writes `body` to a new file at `path`; exactly `len` bytes must come.
async fn store(mut body: Incoming, path: &Path, len: u64) -> Result<(), &'static str> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|_| "cannot store the upload")?;
    let mut got = 0u64;
    while let Some(d) = next_data(&mut body).await {
        let d = d.map_err(|_| "the upload broke off")?;
        got += d.len() as u64;
        if got > len {
            return Err("the upload is longer than it said");
        }
        file.write_all(&d)
            .await
            .map_err(|_| "cannot store the upload (is the disk full?)")?;
    }
    if got != len {
        return Err("the upload broke off");
    }
    file.sync_all()
        .await
        .map_err(|_| "cannot store the upload")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui(token: UiToken) -> Ui {
        struct Nothing;
        impl Control for Nothing {
            fn answer(&self, _: String) -> AnswerLine<'_> {
                Box::pin(async { Vec::new() })
            }
            fn share(&self, _: PathBuf) -> AnswerLine<'_> {
                Box::pin(async { Vec::new() })
            }
        }
        Ui {
            control: Arc::new(Nothing),
            config: UiConfig {
                token,
                upload_dir: PathBuf::new(),
                max_upload: 0,
                max_request: 0,
                limits: WebConfig::default(),
            },
            origins: vec!["http://127.0.0.1:9".into(), "http://localhost:9".into()],
            uploads: Semaphore::new(1),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn every_request_needs_host_origin_and_token() {
        let token = UiToken::generate().unwrap();
        let hex = token.to_hex().to_string();
        let ui = ui(token);
        let q = format!("token={hex}");
        let ok = |h: &[(&'static str, &str)], q: Option<&str>| admit(&ui, &headers(h), q);
        assert_eq!(ok(&[("host", "127.0.0.1:9")], Some(&q)), Ok(()));
        assert_eq!(
            ok(&[("host", "localhost:9"), ("x-peerdrop-token", &hex)], None),
            Ok(())
        );
        assert_eq!(
            ok(
                &[
                    ("host", "127.0.0.1:9"),
                    ("origin", "http://127.0.0.1:9"),
                    ("sec-fetch-site", "same-origin")
                ],
                Some(&q)
            ),
            Ok(())
        );
        // DNS rebinding: the attacker's name in Host.
        assert_eq!(
            ok(&[("host", "evil.example:9")], Some(&q)),
            Err(Refused::Host)
        );
        assert_eq!(ok(&[], Some(&q)), Err(Refused::Host));
        assert_eq!(
            ok(&[("host", "127.0.0.1:10")], Some(&q)),
            Err(Refused::Host)
        );
        // Another origin, even with the token.
        for (k, v) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:10"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            assert_eq!(
                ok(&[("host", "127.0.0.1:9"), (k, v)], Some(&q)),
                Err(Refused::Origin),
                "{k}: {v}"
            );
        }
        assert_eq!(ok(&[("host", "127.0.0.1:9")], None), Err(Refused::NoToken));
        let mut wrong = hex.clone().into_bytes();
        wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
        let wrong = String::from_utf8(wrong).unwrap();
        for bad in [wrong.as_str(), &hex[..62], "", "zz"] {
            assert_eq!(
                ok(&[("host", "127.0.0.1:9"), ("x-peerdrop-token", bad)], None),
                Err(Refused::BadToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_round_trip_and_params_decode() {
        let t = UiToken::generate().unwrap();
        let again = UiToken::from_hex(&t.to_hex()).unwrap();
        assert!(again.matches(&t.to_hex()));
        assert!(UiToken::from_hex("abc").is_err());
        assert_eq!(
            param(Some("a=1&name=caf%C3%A9%20x.txt"), "name").as_deref(),
            Some("café x.txt")
        );
        assert_eq!(param(Some("name=%zz"), "name"), None);
        assert_eq!(param(None, "name"), None);
    }
}
