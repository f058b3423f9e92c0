//! The handshake: protocol version, shared secret, registry fingerprint.
//!
//! ```text
//! peer (client or worker)                            scheduler
//!   HELLO "SHOALNET" v, Hello { role, fingerprint, nonce_p, pid, nthreads, data_port } ─►
//!                                                    version ≠ ours: CLOSE (reason), close
//!                                   ◄─ Challenge { nonce_s, secret: bool }
//!   Proof { HMAC(secret, "shoal-net peer" ‖ nonce_s ‖ nonce_p) } ─►
//!                                                    wrong MAC: CLOSE "wrong secret", close
//!                                                    fingerprint ≠ the cluster's: CLOSE (both named), close
//!                                   ◄─ Welcome { HMAC(secret, "shoal-net scheduler" ‖ nonce_p ‖ nonce_s), id }
//!   a peer with a secret checks the scheduler's MAC (mutual: an impostor
//!   without the secret is never sent work or data)
//! ```
//!
//! The secret never travels: only MACs over fresh random nonces (32 bytes
//! from the OS each), compared in constant time, so a recorded handshake
//! cannot be replayed. The whole handshake must end within the
//! scheduler's handshake timeout: a peer that connects and stalls is
//! dropped. Without a secret the MACs are zeros and nobody checks them;
//! that is only allowed on loopback (see the server).
//!
//! A worker's data port (see [`crate::data`]) takes the scheduler's part of
//! these same steps with whoever fetches from it: the same version, secret
//! and fingerprint checks.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::{FrameReader, FrameWriter, Outgoing};
use crate::error::{NetError, Result};
use crate::frame::{Frame, PROTOCOL_VERSION};
use crate::wire::{self, Challenge, Hello, Proof, Role, Welcome};

const PEER_LABEL: &[u8] = b"shoal-net peer";
const SCHEDULER_LABEL: &[u8] = b"shoal-net scheduler";

/// A cluster's shared secret. Never printed, never sent.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes (surrounding whitespace, such as a file's
    /// final newline, is not part of it). An empty one is refused.
    pub fn new(bytes: &[u8]) -> Result<Secret> {
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(NetError::Config("the shared secret is empty; put a long random string in the file".into()));
        }
        Ok(Secret(trimmed.to_vec()))
    }

    /// The secret in a file.
    pub fn from_file(path: &std::path::Path) -> Result<Secret> {
        let bytes = std::fs::read(path)
            .map_err(|e| NetError::Config(format!("cannot read the secret file {}: {e}", path.display())))?;
        Secret::new(&bytes)
    }

    fn mac(&self, label: &[u8], first: &[u8; 32], second: &[u8; 32]) -> [u8; 32] {
        let mut mac = self.hmac();
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac.finalize().into_bytes().into()
    }

    fn verify(&self, label: &[u8], first: &[u8; 32], second: &[u8; 32], tag: &[u8]) -> bool {
        let mut mac = self.hmac();
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac.verify_slice(tag).is_ok()
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length: `new_from_slice` cannot fail.
        match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

fn nonce() -> Result<[u8; 32]> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| NetError::Io(std::io::Error::other(format!("no random bytes: {e}"))))?;
    Ok(n)
}

/// What a peer said about itself, once accepted.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Client or worker.
    pub role: Role,
    /// Its registry fingerprint.
    pub fingerprint: u128,
    /// Its process id.
    pub pid: u32,
    /// Its threads (workers).
    pub nthreads: u32,
    /// Its data port (workers; 0 for none).
    pub data_port: u16,
}

/// The scheduler's settings for a handshake.
pub struct Accept<'a> {
    /// The secret, if the cluster has one.
    pub secret: Option<&'a Secret>,
    /// How long the whole handshake may take.
    pub timeout: Duration,
    /// Heartbeat period announced to the peer.
    pub heartbeat: Duration,
}

/// The scheduler's side: reads the hello, checks version and secret, asks
/// `admit` (the fingerprint check, which gives the peer its id or a reason
/// to refuse). A refusal is sent to the peer as a CLOSE with its reason,
/// and returned as the error.
pub async fn accept<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    settings: Accept<'_>,
    admit: impl FnOnce(&PeerInfo) -> std::result::Result<u32, String>,
) -> Result<PeerInfo>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let steps = async {
        let (version, body) = match reader.expect_frame().await? {
            Frame::Hello { version, body } => (version, body),
            _ => return Err(NetError::protocol("the first frame is not a hello")),
        };
        if version != PROTOCOL_VERSION {
            return Err(NetError::protocol(format!(
                "protocol version {version} is not this scheduler's ({PROTOCOL_VERSION}): run the same shoal \
                 version on the scheduler, the workers and the clients"
            )));
        }
        let body = wire::aligned(&body);
        let hello = wire::access::<Hello>(&body)?;
        let fp = hello.fingerprint;
        let info = PeerInfo {
            role: match hello.role {
                wire::ArchivedRole::Client => Role::Client,
                wire::ArchivedRole::Worker => Role::Worker,
            },
            fingerprint: (u128::from(fp[0].to_native()) << 64) | u128::from(fp[1].to_native()),
            pid: hello.pid.to_native(),
            nthreads: hello.nthreads.to_native(),
            data_port: hello.data_port.to_native(),
        };
        let peer_nonce = hello.nonce;
        let own_nonce = nonce()?;
        let challenge = wire::to_bytes(&Challenge { nonce: own_nonce, secret: settings.secret.is_some() })?;
        writer.send(&Outgoing::message(challenge)).await?;
        writer.flush().await?;
        let proof = reader.message().await?;
        let proof = wire::access::<Proof>(&proof.body)?;
        if let Some(secret) = settings.secret
            && !secret.verify(PEER_LABEL, &own_nonce, &peer_nonce, &proof.mac)
        {
            return Err(NetError::protocol(
                "wrong secret: the peer's proof does not match this scheduler's secret (give both the same secret \
                 file)",
            ));
        }
        let id = admit(&info).map_err(NetError::Protocol)?;
        let mac = settings.secret.map(|s| s.mac(SCHEDULER_LABEL, &peer_nonce, &own_nonce)).unwrap_or([0; 32]);
        let heartbeat_ms = u32::try_from(settings.heartbeat.as_millis()).unwrap_or(u32::MAX);
        writer.send(&Outgoing::message(wire::to_bytes(&Welcome { mac, id, heartbeat_ms })?)).await?;
        writer.flush().await?;
        reader.established();
        Ok(info)
    };
    let answer = match tokio::time::timeout(settings.timeout, steps).await {
        Ok(answer) => answer,
        Err(_) => Err(NetError::Timeout { what: "for the peer to finish its handshake", after: settings.timeout }),
    };
    if let Err(e) = &answer {
        // Tell the peer why, where it can still hear it.
        let reason = match e {
            NetError::Protocol(reason) => reason.clone(),
            other => other.to_string(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = writer.send(&Outgoing::Close(reason)).await;
        })
        .await;
    }
    answer
}

/// What the scheduler told a peer it accepted.
#[derive(Clone, Copy, Debug)]
pub struct Welcomed {
    /// The peer's id at the scheduler.
    pub id: u32,
    /// The heartbeat period both sides keep.
    pub heartbeat: Duration,
}

/// What a connecting peer says about itself.
#[derive(Clone, Copy, Debug)]
pub struct Introduce {
    /// Client or worker.
    pub role: Role,
    /// Its registry fingerprint.
    pub fingerprint: u128,
    /// Its threads (0 for a client).
    pub nthreads: u32,
    /// Its data port (0 for none).
    pub data_port: u16,
}

/// A peer's side of the handshake (with a scheduler, or with a worker's
/// data port: the same steps).
pub async fn connect<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    me: Introduce,
    secret: Option<&Secret>,
    timeout: Duration,
) -> Result<Welcomed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let steps = async {
        let own_nonce = nonce()?;
        let hello = Hello {
            role: me.role,
            fingerprint: [(me.fingerprint >> 64) as u64, me.fingerprint as u64],
            nonce: own_nonce,
            pid: std::process::id(),
            nthreads: me.nthreads,
            data_port: me.data_port,
        };
        writer.hello(&wire::to_bytes(&hello)?).await?;
        let challenge = reader.message().await?;
        let challenge = wire::access::<Challenge>(&challenge.body)?;
        let server_nonce = challenge.nonce;
        if challenge.secret && secret.is_none() {
            return Err(NetError::Config(format!(
                "the scheduler at {} requires a shared secret, and this process has none: set SHOAL_SECRET_FILE \
                 (or pass the secret) to the scheduler's --secret-file",
                reader.peer
            )));
        }
        let mac = secret.map(|s| s.mac(PEER_LABEL, &server_nonce, &own_nonce)).unwrap_or([0; 32]);
        writer.send(&Outgoing::message(wire::to_bytes(&Proof { mac })?)).await?;
        writer.flush().await?;
        let welcome = reader.message().await?;
        let welcome = wire::access::<Welcome>(&welcome.body)?;
        if let Some(secret) = secret
            && !secret.verify(SCHEDULER_LABEL, &own_nonce, &server_nonce, &welcome.mac)
        {
            return Err(NetError::Config(format!(
                "the scheduler at {} did not prove it knows the shared secret (it has none, or another one): \
                 refusing to send it work",
                reader.peer
            )));
        }
        let welcomed = Welcomed {
            id: welcome.id.to_native(),
            heartbeat: Duration::from_millis(u64::from(welcome.heartbeat_ms.to_native()).max(1)),
        };
        reader.established();
        Ok(welcomed)
    };
    match tokio::time::timeout(timeout, steps).await {
        Ok(answer) => answer,
        Err(_) => Err(NetError::Timeout { what: "for the scheduler's handshake", after: timeout }),
    }
}
