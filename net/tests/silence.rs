//! A client whose scheduler goes silent (connected, but sending nothing —
//! not even heartbeats) fails its pending calls within the bound, never
//! hangs.

use std::time::{Duration, Instant};

use shoal_core::scheduler::TaskId;
use shoal_net::auth::{self, Accept};
use shoal_net::client::{ClientConfig, ClientError, Remote};
use shoal_net::conn::{FrameReader, FrameWriter, Outgoing};
use shoal_net::wire::{self, ToClientMsg};

/// A fake scheduler: shakes hands, says there are no workers, then keeps
/// the connection open and silent for `silent_for`.
fn silent_scheduler(silent_for: Duration) -> String {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let (r, w) = stream.into_split();
            let mut reader = FrameReader::new(r, "client".into(), Duration::from_secs(60));
            let mut writer = FrameWriter::new(w);
            let settings =
                Accept { secret: None, timeout: Duration::from_secs(5), heartbeat: Duration::from_millis(100) };
            auth::accept(&mut reader, &mut writer, settings, |_| Ok(1)).await.unwrap();
            let workers = wire::to_bytes(&ToClientMsg::Workers { count: 0, nthreads: 0 }).unwrap();
            writer.send(&Outgoing::message(workers)).await.unwrap();
            writer.flush().await.unwrap();
            tokio::time::sleep(silent_for).await;
        });
    });
    format!("tcp://{}", addr_rx.recv().unwrap())
}

#[test]
fn a_silent_scheduler_fails_pending_calls_within_the_bound() {
    let url = silent_scheduler(Duration::from_secs(20));
    let remote = Remote::connect(ClientConfig {
        url,
        tls: None,
        secret: None,
        fingerprint: 7,
        connect_timeout: Duration::from_secs(5),
        dead_after: Duration::from_millis(500),
    })
    .unwrap();
    let started = Instant::now();
    let err = remote.results(&[TaskId { index: 0, generation: 1 }]).err().expect("a silent scheduler is an error");
    let waited = started.elapsed();
    assert!(matches!(&err, ClientError::Lost(reason) if reason.contains("sent nothing")), "{err}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // Later calls fail at once.
    assert!(matches!(remote.submit(Vec::new()), Err(ClientError::Lost(_))));
}
