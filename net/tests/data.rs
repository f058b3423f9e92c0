//! A worker's data port (`shoal_net::data`): it serves the results in its
//! store to fetchers that pass the scheduler's handshake, streams large
//! ones in chunks, and a fetch from a dead or silent peer fails within its
//! bound instead of hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use shoal_core::object::{Obj, RawArchive};
use shoal_core::scheduler::TaskId;
use shoal_net::auth::Introduce;
use shoal_net::conn::Landing;
use shoal_net::data::{self, CONNECT_TIMEOUT, Fetcher, Gate, Store};
use shoal_net::wire::Role;
use shoal_net::{NetError, Secret};
use shoal_shm::SegmentObject;
use shoal_shm::warm::WarmPool;
use tokio::net::TcpListener;

const FINGERPRINT: u128 = 0x5eed;

fn object(len: usize, seed: u8) -> Obj {
    let mut bytes = AlignedVec::with_capacity(len);
    bytes.extend_from_slice(&(0..len).map(|i| (i as u8).wrapping_mul(seed)).collect::<Vec<u8>>());
    Arc::new(RawArchive::new(bytes))
}

fn task(index: u32) -> TaskId {
    TaskId { index, generation: 1 }
}

fn secret(text: &str) -> Secret {
    Secret::new(text.as_bytes()).unwrap()
}

/// A data port serving a store with a large and a small object.
async fn port(gate: Gate) -> (String, Store) {
    let store = shoal_net::store::MachineStore::unbounded().unwrap();
    data::put(&store, task(1), object(3 << 20, 7));
    data::put(&store, task(2), object(40, 3));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(data::serve(listener, Arc::clone(&store), gate));
    (address, store)
}

fn fetcher(fingerprint: u128, secret: Option<Secret>) -> Fetcher {
    Fetcher::new(
        Introduce { role: Role::Worker, fingerprint, nthreads: 0, data_port: 0 },
        secret,
        None,
        Duration::from_secs(2),
    )
}

#[tokio::test]
async fn a_fetcher_with_the_secret_gets_large_and_small_results_and_none_for_others() {
    let (address, store) = port(Gate { secret: Some(secret("s3cret")), fingerprint: FINGERPRINT, tls: None }).await;
    let fetcher = fetcher(FINGERPRINT, Some(secret("s3cret")));
    let got = fetcher.fetch(&address, &[task(1), task(9), task(2)]).await.unwrap();
    let large = got[0].as_ref().expect("the large result");
    assert_eq!(large.archived_bytes().unwrap(), object(3 << 20, 7).archived_bytes().unwrap());
    assert!(got[1].is_none(), "a result the port does not hold");
    assert_eq!(got[2].as_ref().unwrap().nbytes(), 40);
    // The connection is kept: a second fetch after a release sees it gone.
    data::drop_all(&store, [task(1)]);
    let again = fetcher.fetch(&address, &[task(1), task(2)]).await.unwrap();
    assert!(again[0].is_none() && again[1].is_some());
}

#[tokio::test]
async fn a_wrong_secret_or_another_fingerprint_is_refused_with_a_reason() {
    let (address, _store) = port(Gate { secret: Some(secret("s3cret")), fingerprint: FINGERPRINT, tls: None }).await;
    let err =
        fetcher(FINGERPRINT, Some(secret("wrong"))).fetch(&address, &[task(2)]).await.err().expect("the fetch fails");
    assert!(err.to_string().contains("wrong secret"), "{err}");
    let err = fetcher(FINGERPRINT, None).fetch(&address, &[task(2)]).await.err().expect("the fetch fails");
    assert!(matches!(err, NetError::Config(_)), "no secret where one is required: {err}");
    let err = fetcher(FINGERPRINT + 1, Some(secret("s3cret")))
        .fetch(&address, &[task(2)])
        .await
        .err()
        .expect("the fetch fails");
    assert!(err.to_string().contains("fingerprint mismatch"), "{err}");
}

#[tokio::test]
async fn a_fetch_from_a_dead_or_silent_peer_fails_within_its_bound() {
    // Nobody listens there any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let fetcher = fetcher(FINGERPRINT, None);
    assert!(fetcher.fetch(&dead, &[task(1)]).await.is_err(), "a fetch from a closed port");
    // A peer that accepts and then says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            kept.push(stream);
        }
    });
    let started = Instant::now();
    let err = fetcher.fetch(&address, &[task(1)]).await.err().expect("the fetch fails");
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(2), "{:?}: {err}", started.elapsed());
    held.abort();
}

#[tokio::test]
async fn a_fetched_object_lands_in_warm_memory_byte_for_byte() {
    let (address, store) = port(Gate { secret: None, fingerprint: FINGERPRINT, tls: None }).await;
    let expected = object(3 << 20, 7);
    let pool = Arc::new(WarmPool::with_idle(64 << 20, Duration::from_secs(3600)));
    let fetcher = fetcher(FINGERPRINT, None).landing(Landing::Segment { pool: Some(Arc::clone(&pool)) });
    let in_segment = |obj: &Obj| obj.as_any().downcast_ref::<SegmentObject>().map(|s| s.segment().len());
    // The first large object finds no file ready (the pool starts making
    // one for it: handed over part-made, or missed), and lands in a
    // segment either way; the small one stays on the heap.
    let first = fetcher.fetch(&address, &[task(1), task(2)]).await.unwrap();
    let large = first[0].as_ref().expect("the large result");
    assert_eq!(large.archived_bytes().unwrap(), expected.archived_bytes().unwrap());
    assert_eq!(in_segment(large), Some(3 << 20));
    assert_eq!(in_segment(first[1].as_ref().unwrap()), None);
    // Its size told the pool what to make next: a file of it, ready.
    assert!(pool.wait_ready(Duration::from_secs(60)), "no warm file was made: {:?}", pool.stats());
    let before = pool.stats();
    data::put(&store, task(1), object(3 << 20, 11));
    let second = fetcher.fetch(&address, &[task(1)]).await.unwrap();
    let large = second[0].as_ref().expect("the large result");
    assert_eq!(pool.stats().taken, before.taken + 1, "the ready warm file was taken: {:?}", pool.stats());
    assert_eq!(large.archived_bytes().unwrap(), object(3 << 20, 11).archived_bytes().unwrap());
    // Cut to the object's length and sealed (the warm file was larger).
    assert_eq!(in_segment(large), Some(3 << 20));
    // Dropped, the copies give their memory back; the first copy is intact.
    assert_eq!(first[0].as_ref().unwrap().archived_bytes().unwrap(), expected.archived_bytes().unwrap());
}
