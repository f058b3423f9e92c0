//! The HTTP server: its own thread, a current-thread tokio runtime, axum
//! routes (see the crate docs for the protocol).

use std::convert::Infallible;
use std::future::IntoFuture;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{broadcast, oneshot};

use crate::frame::{MAX_RUNS_PER_FRAME, Sampler};
use crate::{SAMPLE_EVERY, Source};

const PAGE: &str = include_str!("../page/index.html");
const PAGE_JS: &str = include_str!("../page/dash.js");
const UPLOT_JS: &str = include_str!("../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../vendor/uplot/uPlot.min.css");

/// Frames kept for a page that reads slowly; one that falls further
/// behind skips ahead (it misses some bars, never stalls the server).
const FRAME_BACKLOG: usize = 16;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct DashboardOptions {
    /// The address to bind; port 0 picks a free one.
    pub addr: SocketAddr,
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address could not be bound.
    #[error("the dashboard could not listen on {addr}: {source}; choose another address or port")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server thread or its runtime could not start.
    #[error("the dashboard could not start: {0}")]
    Start(std::io::Error),
    /// No random token could be made for a non-loopback address.
    #[error("the dashboard needs a random token on {addr} but /dev/urandom could not be read: {source}")]
    Token {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running dashboard; dropping it stops the server.
pub struct Dashboard {
    addr: SocketAddr,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").field("url", &self.url()).finish()
    }
}

struct App {
    source: Weak<dyn Source>,
    token: Option<String>,
    frames: broadcast::Sender<Arc<str>>,
}

impl Dashboard {
    /// Serves the dashboard of `source` (held weakly: when it is gone,
    /// pages get no more frames) on `options.addr`. On an address that is
    /// not loopback, a random token is required (see [`Dashboard::url`]).
    pub fn start(source: Weak<dyn Source>, options: DashboardOptions) -> Result<Dashboard, DashboardError> {
        let asked = options.addr;
        let token = if asked.ip().is_loopback() {
            None
        } else {
            Some(random_token().map_err(|source| DashboardError::Token { addr: asked, source })?)
        };
        let listener = TcpListener::bind(asked).map_err(|source| DashboardError::Bind { addr: asked, source })?;
        let addr = listener.local_addr().map_err(DashboardError::Start)?;
        listener.set_nonblocking(true).map_err(DashboardError::Start)?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DashboardError::Start)?;
        let (frames, _) = broadcast::channel(FRAME_BACKLOG);
        let app = Arc::new(App { source, token: token.clone(), frames });
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shoal-dashboard".into())
            .spawn(move || runtime.block_on(serve(app, listener, stopped)))
            .map_err(DashboardError::Start)?;
        let dashboard = Dashboard { addr, token, stop: Some(stop), thread: Some(thread) };
        tracing::info!(url = %dashboard.url(), "shoal dashboard");
        Ok(dashboard)
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token pages need (`None` on loopback).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The page's URL, with its token if one is needed.
    pub fn url(&self) -> String {
        match &self.token {
            Some(t) => format!("http://{}/?token={t}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The server thread only serves: it cannot be waiting on us.
            let _ = thread.join();
        }
    }
}

async fn serve(app: Arc<App>, listener: TcpListener, stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("the dashboard stopped: {e}");
            return;
        }
    };
    let sampler = tokio::spawn(sample(Arc::clone(&app)));
    let router = Router::new()
        .route("/", get(index))
        .route("/events", get(events))
        .route("/first.js", get(first))
        .route("/metrics", get(metrics))
        .route("/static/dash.js", get(|| async { asset("text/javascript", PAGE_JS) }))
        .route("/static/uPlot.iife.min.js", get(|| async { asset("text/javascript", UPLOT_JS) }))
        .route("/static/uPlot.min.css", get(|| async { asset("text/css", UPLOT_CSS) }))
        .with_state(app);
    // Not a graceful shutdown: an open page's event stream never ends by
    // itself, and a client being dropped must not wait for a browser. When
    // this returns, the runtime is dropped with every connection's task.
    let server = std::pin::pin!(axum::serve(listener, router).into_future());
    if let futures_util::future::Either::Left((Err(e), _)) = futures_util::future::select(server, stopped).await {
        tracing::warn!("the dashboard stopped: {e}");
    }
    sampler.abort();
}

/// Takes a frame every [`SAMPLE_EVERY`] while a page listens.
async fn sample(app: Arc<App>) {
    let mut sampler: Option<Sampler> = None;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if app.frames.receiver_count() == 0 {
            // Nobody watches: sample nothing, and start afresh next time.
            sampler = None;
            continue;
        }
        let Some(source) = app.source.upgrade() else { return };
        let sampler = sampler.get_or_insert_with(|| {
            let next = source.snapshot(u64::MAX, 0).next;
            Sampler::new(next)
        });
        let frame: Arc<str> = sampler.frame(&*source).into();
        drop(source);
        let _ = app.frames.send(frame);
    }
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

/// Whether the request carries the token (or none is needed).
fn allowed(app: &App, uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(token) = &app.token else { return true };
    let from_query = uri.query().into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("token="));
    let from_header =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    from_query.into_iter().chain(from_header).any(|given| same(given.as_bytes(), token.as_bytes()))
}

/// Compares in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn forbidden() -> Response {
    (StatusCode::UNAUTHORIZED, "this dashboard needs its token: open the URL printed when it started\n").into_response()
}

async fn index(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    if !allowed(&app, &uri, &headers) {
        return forbidden();
    }
    // The first frame is a script the page loads while it is parsed, with
    // the same token (checked to be hex: nothing else reaches the HTML).
    let token = app.token.as_ref().map_or(String::new(), |t| format!("?token={t}"));
    let page = PAGE.replace("<!--FIRST-FRAME-->", &format!(r#"<script src="first.js{token}"></script>"#));
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

/// The first frame, as a script: the recent runs and the state now.
async fn first(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    if !allowed(&app, &uri, &headers) {
        return forbidden();
    }
    let Some(frame) = first_frame(&app) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the client is gone\n").into_response();
    };
    ([(header::CONTENT_TYPE, "text/javascript"), (header::CACHE_CONTROL, "no-store")], format!("shoal.frame({frame});"))
        .into_response()
}

/// A frame with the runs of the last moments, so that a page just opened
/// shows bars at once.
fn first_frame(app: &App) -> Option<String> {
    let source = app.source.upgrade()?;
    let next = source.snapshot(u64::MAX, 0).next;
    Some(Sampler::new(next.saturating_sub(MAX_RUNS_PER_FRAME as u64)).frame(&*source))
}

async fn metrics(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    if !allowed(&app, &uri, &headers) {
        return forbidden();
    }
    let Some(source) = app.source.upgrade() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the client is gone\n").into_response();
    };
    match crate::metrics::render(&*source) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded\n").into_response(),
    }
}

async fn events(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap) -> Response {
    if !allowed(&app, &uri, &headers) {
        return forbidden();
    }
    // A stream opened on its own (not by the page) starts with the recent
    // runs too; the page skips what it has (`from` / `next`).
    let first: Option<Arc<str>> = first_frame(&app).map(Into::into);
    let rx = app.frames.subscribe();
    let stream = futures_util::stream::unfold((first, rx), |(first, mut rx)| async move {
        if let Some(frame) = first {
            return Some((Ok::<Event, Infallible>(Event::default().data(&*frame)), (None, rx)));
        }
        loop {
            match rx.recv().await {
                Ok(frame) => return Some((Ok(Event::default().data(&*frame)), (None, rx))),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// 128 random bits, as hex.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
