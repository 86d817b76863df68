//! The data dir: created owner-only, locked while a daemon runs, holding the
//! node identity, the control socket and the ports kept across restarts.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::net::UnixListener;

use crate::daemon::{state, DaemonError};

pub(super) fn dir_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |error| DaemonError::DataDir {
        path: path.to_owned(),
        error,
    }
}

/// Loads the node identity, creating it (mode 0600) on the first start.
pub(super) fn identity(data_dir: &Path) -> Result<Keypair, DaemonError> {
    let path = data_dir.join("identity.key");
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| DaemonError::State(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = Keypair::generate_ed25519();
            let bytes = k.to_protobuf_encoding().expect("ed25519 keys encode");
            state::write_private(&path, &bytes).map_err(dir_err(&path))?;
            Ok(k)
        }
        Err(e) => Err(dir_err(&path)(e)),
    }
}

/// Replaces port 0 with the port kept from an earlier start.
pub(super) fn with_kept_port(addr: &Multiaddr, ports: &state::Ports) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Tcp(0) => Protocol::Tcp(ports.tcp.unwrap_or(0)),
            Protocol::Udp(0) => Protocol::Udp(ports.udp.unwrap_or(0)),
            p => p,
        })
        .collect()
}

pub(super) fn ports_of(addrs: &[Multiaddr]) -> state::Ports {
    let mut ports = state::Ports::default();
    for a in addrs {
        for p in a.iter() {
            match p {
                Protocol::Tcp(n) => ports.tcp = ports.tcp.or(Some(n)),
                Protocol::Udp(n) => ports.udp = ports.udp.or(Some(n)),
                _ => {}
            }
        }
    }
    ports
}

/// Creates the data dir (mode 0700) and takes its lock; the lock is held as
/// long as the returned file is open.
pub(super) fn lock(data_dir: &Path) -> Result<File, DaemonError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(dir_err(data_dir))?;
    // The data dir holds keys and the control socket: owner only.
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).map_err(dir_err(data_dir))?;
    let lock_path = data_dir.join("daemon.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(dir_err(&lock_path))?;
    // Held as long as the file is open (until the daemon ends).
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Err(DaemonError::Locked(data_dir.to_owned())),
        Err(e) => return Err(dir_err(&lock_path)(e.into())),
    }
    Ok(lock)
}

/// Binds `control.sock` (mode 0600); call with the lock held.
pub(super) fn bind_control(data_dir: &Path) -> Result<(UnixListener, PathBuf), DaemonError> {
    let socket = data_dir.join("control.sock");
    // The lock is held, so a socket file left here is a dead daemon's.
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(dir_err(&socket))?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).map_err(dir_err(&socket))?;
    Ok((listener, socket))
}
