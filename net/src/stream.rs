//! One stream type for every connection of a cluster, plain TCP or TLS
//! ([`crate::tls`]), so the protocol code above it is written once.
//!
//! A [`Stream`] is split into a [`ReadHalf`] and a [`WriteHalf`] for the
//! connection's reader and writer tasks. Plain TCP keeps tokio's owned
//! halves (no lock between them); a TLS session is one state machine for
//! both directions, so its halves share it through `tokio::io::split`.
//!
//! Setting a connection up: the connecting side makes the TCP connection
//! and hands it to [`secure`] (which runs the TLS handshake when TLS is
//! on); the accepting side hands each accepted socket to [`accept`], on
//! the connection's own task, within the handshake timeout, so a slow peer
//! never holds up the listener.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsStream;

use crate::conn::{FrameReader, FrameWriter};
use crate::error::{NetError, Result};
use crate::tls::{ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY, ENV_TLS_SERVER_NAME, ServerTls};

/// The first byte of a TLS record that carries a handshake message: what a
/// TLS client sends first. A plain HELLO frame starts with the high byte
/// of its length, which is 0 (the handshake's frames are small).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection: plain TCP, or TLS over TCP.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS (either side).
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half of a [`Stream`].
pub enum ReadHalf {
    /// Plain TCP.
    Tcp(OwnedReadHalf),
    /// TLS.
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of a [`Stream`].
pub enum WriteHalf {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// A connection's frame reader.
pub type Reader = FrameReader<ReadHalf>;
/// A connection's frame writer.
pub type Writer = FrameWriter<WriteHalf>;

impl Stream {
    /// The two halves.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }

    /// A frame reader and writer over it, talking to `peer`, which may stay
    /// silent for `idle`.
    pub fn framed(self, peer: String, idle: Duration) -> (Reader, Writer) {
        let (r, w) = self.split();
        (FrameReader::new(r, peer, idle), FrameWriter::new(w))
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(w) => w.is_write_vectored(),
            WriteHalf::Tls(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Connects to `address` over plain TCP (no delay: frames are small and
/// flushed on purpose).
pub async fn tcp(address: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The connecting side: `tcp` as is, or after a TLS handshake with a
/// server that must prove `name` (see [`crate::tls`] for who checks what).
pub async fn secure(
    tcp: TcpStream,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    peer: &str,
) -> Result<Stream> {
    match tls {
        None => Ok(Stream::Tcp(tcp)),
        Some((connector, name)) => match connector.connect(name, tcp).await {
            Ok(s) => Ok(Stream::Tls(Box::new(TlsStream::Client(s)))),
            Err(e) => Err(tls_error(peer, &e)),
        },
    }
}

/// The accepting side: with TLS on, a TLS handshake (a plain-TCP peer is
/// told in a plain CLOSE frame that TLS is required, and refused); with
/// TLS off, the socket as it is. At most `timeout`.
pub async fn accept(tcp: TcpStream, tls: Option<&ServerTls>, timeout: Duration) -> Result<Stream> {
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else { return Ok(Stream::Tcp(tcp)) };
    let steps = async {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Err(NetError::Lost { peer: peer_of(&tcp), reason: "it closed before its handshake".into() });
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            let peer = peer_of(&tcp);
            FrameWriter::new(tcp)
                .close(format!(
                    "this end speaks TLS only: connect with a tls:// address and {ENV_TLS_CA} (and, for a mutual \
                     cluster, {ENV_TLS_CERT} and {ENV_TLS_KEY})"
                ))
                .await;
            return Err(NetError::Tls { peer, reason: "it connected without TLS; it was told TLS is required".into() });
        }
        let peer = peer_of(&tcp);
        match tls.acceptor.accept(tcp).await {
            Ok(s) => Ok(Stream::Tls(Box::new(TlsStream::Server(s)))),
            Err(e) => Err(tls_error(&peer, &e)),
        }
    };
    tokio::time::timeout(timeout, steps)
        .await
        .map_err(|_| NetError::Timeout { what: "waiting for a TLS handshake", after: timeout })?
}

fn peer_of(tcp: &TcpStream) -> String {
    tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "a peer".into())
}

/// A TLS failure, said with what to do about it.
fn tls_error(peer: &str, e: &io::Error) -> NetError {
    NetError::Tls { peer: peer.to_string(), reason: explain(e) }
}

/// Says what a TLS error means for a cluster, if `e` is one (`None`: a
/// plain I/O error).
pub(crate) fn tls_reason(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let hint = match inner {
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "its certificate does not carry the name of the address connected to (connect by a name it carries, or \
             set {ENV_TLS_SERVER_NAME})"
        ),
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("its certificate is not signed by the CA this process trusts ({ENV_TLS_CA})")
        }
        E::InvalidCertificate(_) => "its certificate is not acceptable".to_string(),
        E::NoCertificatesPresented => format!(
            "it presented no certificate, and this end requires one signed by its CA ({ENV_TLS_CERT}, {ENV_TLS_KEY})"
        ),
        E::AlertReceived(A::CertificateRequired) => format!(
            "it requires a certificate signed by its CA from this process: set {ENV_TLS_CERT} and {ENV_TLS_KEY}"
        ),
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::DecryptError) => {
            "it refused this process's certificate (not signed by the CA it trusts)".to_string()
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "it does not speak TLS here (a scheduler speaks TLS only when started with --tls-cert)".to_string()
        }
        _ => return Some(format!("TLS: {inner}")),
    };
    Some(format!("{inner}: {hint}"))
}

fn explain(e: &io::Error) -> String {
    tls_reason(e).unwrap_or_else(|| format!("the TLS handshake failed: {e}"))
}

/// A handshake's error, with a TLS failure that surfaced on a later read
/// said as such (TLS 1.3 sends a refusal of the client's certificate after
/// the client thinks the handshake is done).
pub(crate) fn explain_io(peer: &str, e: NetError) -> NetError {
    match e {
        NetError::Io(io) => match tls_reason(&io) {
            Some(reason) => NetError::Tls { peer: peer.to_string(), reason },
            None => NetError::Io(io),
        },
        other => other,
    }
}
