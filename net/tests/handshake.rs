//! The handshake's refusals, over real loopback sockets: each closes that
//! connection with a reason the peer can read, and harms nothing else.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use shoal_net::NetError;
use shoal_net::auth::{self, Secret};
use shoal_net::conn::{FrameReader, FrameWriter};
use shoal_net::frame::{self, Frame, MAGIC, MAX_FRAME};
use shoal_net::server::{self, ServerConfig, ServerHandle};
use shoal_net::wire::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FP: u128 = 0x1234_5678_9abc_def0_1122_3344_5566_7788;

fn start(secret: Option<&str>) -> ServerHandle {
    server::spawn(ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        secret: secret.map(|s| Secret::new(s.as_bytes()).unwrap()),
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(600),
        handshake_timeout: Duration::from_millis(400),
        dashboard: None,
        tls: None,
        ..ServerConfig::default()
    })
    .unwrap()
}

type Halves = (FrameReader<tokio::net::tcp::OwnedReadHalf>, FrameWriter<tokio::net::tcp::OwnedWriteHalf>);

async fn open(server: &ServerHandle) -> Halves {
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let (r, w) = stream.into_split();
    (FrameReader::new(r, "scheduler".into(), Duration::from_secs(5)), FrameWriter::new(w))
}

async fn shake(server: &ServerHandle, role: Role, fp: u128, secret: Option<&str>) -> Result<(Halves, u32), NetError> {
    let (mut reader, mut writer) = open(server).await;
    let secret = secret.map(|s| Secret::new(s.as_bytes()).unwrap());
    let me = auth::Introduce { role, fingerprint: fp, nthreads: 2, data_port: 0 };
    let welcome = auth::connect(&mut reader, &mut writer, me, secret.as_ref(), Duration::from_secs(5)).await?;
    Ok(((reader, writer), welcome.id))
}

/// The reason in the CLOSE frame the scheduler sends before closing.
async fn close_reason(stream: &mut TcpStream) -> String {
    let mut buf = BytesMut::new();
    let mut codec = frame::codec();
    loop {
        if let Some(frame) = frame::decode(&mut codec, &mut buf).unwrap() {
            match frame {
                Frame::Close(reason) => return reason,
                other => panic!("expected a close, got {other:?}"),
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the scheduler closed without saying why");
    }
}

#[tokio::test]
async fn a_good_peer_is_welcomed_with_or_without_a_secret() {
    let open_server = start(None);
    shake(&open_server, Role::Client, FP, None).await.unwrap();
    let closed_server = start(Some("s3cret"));
    let (_, id) = shake(&closed_server, Role::Worker, FP, Some("s3cret")).await.unwrap();
    let (_, id2) = shake(&closed_server, Role::Client, FP, Some("s3cret\n")).await.unwrap();
    assert_ne!(id, id2, "each peer gets its own id");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_a_reason_and_others_go_on() {
    let server = start(Some("right"));
    let kept = shake(&server, Role::Client, FP, Some("right")).await.unwrap();
    let err = shake(&server, Role::Worker, FP, Some("wrong")).await.err().unwrap();
    match &err {
        NetError::Refused { reason, .. } => assert!(reason.contains("wrong secret"), "{reason}"),
        other => panic!("expected a refusal, got {other}"),
    }
    // The first connection is untouched, and a right peer still gets in.
    drop(kept);
    shake(&server, Role::Worker, FP, Some("right")).await.unwrap();
}

#[tokio::test]
async fn secrets_are_mutual() {
    let open_server = start(None);
    let err = shake(&open_server, Role::Client, FP, Some("mine")).await.err().unwrap();
    assert!(err.to_string().contains("did not prove it knows the shared secret"), "{err}");
    let closed_server = start(Some("theirs"));
    let err = shake(&closed_server, Role::Client, FP, None).await.err().unwrap();
    assert!(err.to_string().contains("requires a shared secret"), "{err}");
}

#[tokio::test]
async fn a_different_fingerprint_is_refused_naming_both() {
    let server = start(None);
    let _first = shake(&server, Role::Client, FP, None).await.unwrap();
    let err = shake(&server, Role::Worker, FP + 1, None).await.err().unwrap();
    let text = err.to_string();
    assert!(text.contains("fingerprint mismatch"), "{text}");
    assert!(text.contains(&format!("{:032x}", FP)) && text.contains(&format!("{:032x}", FP + 1)), "{text}");
    // The same fingerprint still gets in.
    shake(&server, Role::Worker, FP, None).await.unwrap();
}

#[tokio::test]
async fn another_protocol_version_is_told_so() {
    let server = start(None);
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let mut payload = vec![1u8];
    payload.extend_from_slice(MAGIC);
    payload.extend_from_slice(&99u32.to_le_bytes());
    stream.write_all(&(payload.len() as u32).to_be_bytes()).await.unwrap();
    stream.write_all(&payload).await.unwrap();
    let reason = close_reason(&mut stream).await;
    assert!(reason.contains("protocol version 99"), "{reason}");
}

#[tokio::test]
async fn garbage_is_refused_with_a_reason() {
    let server = start(None);
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(b"\0\0\0\x10GET / HTTP/1.1\r\n").await.unwrap();
    let reason = close_reason(&mut stream).await;
    assert!(reason.contains("not a shoal connection") || reason.contains("frame"), "{reason}");
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_from_its_header() {
    let server = start(None);
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes()).await.unwrap();
    stream.write_all(b"\x01").await.unwrap();
    let reason = close_reason(&mut stream).await;
    assert!(reason.contains("limit"), "{reason}");
}

#[tokio::test]
async fn before_the_handshake_even_a_one_mebibyte_frame_is_refused() {
    let server = start(None);
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    stream.write_all(b"\x01SHOALNET").await.unwrap();
    let reason = close_reason(&mut stream).await;
    assert!(reason.contains(&format!("the limit is {} bytes", frame::HANDSHAKE_MAX_FRAME)), "{reason}");
}

#[tokio::test]
async fn a_peer_that_never_finishes_its_handshake_is_dropped() {
    let server = start(None);
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    // Connected, and silent.
    let reason = close_reason(&mut stream).await;
    assert!(reason.contains("timed out"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(3), "dropped after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_silent_peer_after_the_handshake_is_dropped_within_the_bound() {
    let server = start(None);
    let ((mut reader, _writer), _) = shake(&server, Role::Client, FP, None).await.unwrap();
    // Never send a heartbeat: the scheduler gives up after `dead_after`.
    let started = Instant::now();
    let ended = loop {
        match reader.message_or_end().await {
            Ok(Some(_)) => continue, // its heartbeats and news
            Ok(None) => break "closed".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(3), "{ended} after {waited:?}");
    assert!(ended.contains("sent nothing") || ended == "closed", "{ended}");
}

#[test]
fn listening_beyond_loopback_needs_a_secret() {
    let config = ServerConfig { host: "0.0.0.0".into(), port: 0, ..ServerConfig::default() };
    let err = config.address().unwrap_err().to_string();
    assert!(err.contains("refusing to listen on 0.0.0.0 without a shared secret"), "{err}");
    assert!(err.contains("--secret-file"), "{err}");
    let with_secret = ServerConfig { secret: Some(Secret::new(b"k").unwrap()), ..config };
    assert!(with_secret.address().is_ok());
    assert!(ServerConfig { host: "::1".into(), port: 0, ..ServerConfig::default() }.address().is_ok());
    let bad = ServerConfig { host: "example".into(), ..ServerConfig::default() }.address().unwrap_err();
    assert!(bad.to_string().contains("not an IP address"), "{bad}");
}
