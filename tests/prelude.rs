//! `use shoal::prelude::*` leaves Rust's own `Future` trait alone: async
//! code beside it compiles. This file is the test: it would not build if
//! the prelude exported a type named `Future` (a glob import shadows the
//! std prelude, so `impl Future<Output = T>` would name shoal's struct).

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use shoal::prelude::*;

#[shoal::task]
fn square(x: u64) -> u64 {
    x * x
}

/// `Future` is the std prelude's trait here.
#[expect(clippy::manual_async_fn, reason = "the test is that `impl Future` names the trait")]
fn later(x: u64) -> impl Future<Output = u64> {
    async move { x + 1 }
}

/// Polls a future that needs no waking.
fn ready<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// The trait imported by name, beside the glob, as async code often does.
mod named {
    use shoal::prelude::*;
    use std::future::Future;

    #[expect(clippy::manual_async_fn, reason = "the test is that `impl Future` names the trait")]
    pub fn answer() -> impl Future<Output = u64> {
        async { 42 }
    }

    pub fn client() -> Client {
        Client::threads(1).unwrap()
    }
}

#[test]
fn the_prelude_and_async_code_share_a_module() {
    let client = Client::threads(1).unwrap();
    assert_eq!(named::client().nthreads(), 1);
    // shoal's future, named through the crate.
    let squared: shoal::Future<u64> = client.submit(square, 6).unwrap();
    assert_eq!(ready(later(squared.result().unwrap())), Some(37));
    assert_eq!(ready(named::answer()), Some(42));
}
