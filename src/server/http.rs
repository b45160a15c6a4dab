//! The HTTP listener: HTTP/1.1 through hyper, as `axum::serve` gave it, with what a public
//! server needs in front of its router. A client must send its request headers within
//! `http.header_read_timeout_s` (also the keep-alive idle time between requests), a
//! connection that moves no byte for `http.idle_timeout_s` is closed, and [`Admission`] caps
//! connections per address until they send a whole request, and in all. At the cap, the
//! oldest connection that never sent one makes room, else the longest-idle kept-alive one:
//! a flood of sockets cannot keep viewers from `/healthz` or their media.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::admission::{Admission, Admitted};
use crate::config::HttpConfig;

/// Serves `app` on `listener` until `shutdown` turns true; then stops accepting, asks every
/// connection to finish its request in flight, and resolves once all have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let admission = Admission::new("http", config.max_connections, config.max_pending_per_ip);
    let limits = Limits {
        header_read: Duration::from_secs(config.header_read_timeout_s.max(1)),
        idle: Duration::from_secs(config.idle_timeout_s.max(1)),
    };
    // Every connection holds a receiver; all gone means all closed.
    let (open_tx, _) = watch::channel(());
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let admitted = match admission.admit(peer.ip()) {
            Ok(a) => a,
            Err(refused) => {
                tracing::debug!(%peer, %refused, "HTTP connection refused");
                metrics::counter!("ferrocast_http_connections_refused_total").increment(1);
                continue;
            }
        };
        let open = open_tx.subscribe();
        tokio::spawn(connection(
            socket,
            peer,
            app.clone(),
            limits,
            admitted,
            shutdown.clone(),
            open,
        ));
    }
    drop(listener);
    open_tx.closed().await;
}

/// Resolves once `shutdown` turns true (its guard, which is not `Send`, dropped inside).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    idle: Duration,
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut admitted: Admitted,
    mut shutdown: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let _ = socket.set_nodelay(true);
    // When a byte last moved, on the admission's clock: the idle timeout here, and whether
    // this connection may make room for a newcomer there.
    let clock = admitted.admission().clock();
    let activity = Arc::new(AtomicU64::new(admitted.admission().now_ms()));
    let io = TokioIo::new(Watched {
        inner: socket,
        clock,
        activity: activity.clone(),
    });
    let established = admitted.marker(activity.clone());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // Its headers came whole: this client is no longer a silent socket.
        established.mark();
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    let idle_check = tokio::time::sleep(limits.idle);
    tokio::pin!(idle_check);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(%peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            () = &mut idle_check => {
                let last = tokio::time::Instant::from_std(clock)
                    + Duration::from_millis(activity.load(Ordering::Relaxed));
                let deadline = last + limits.idle;
                if tokio::time::Instant::now() >= deadline {
                    tracing::debug!(%peer, idle_s = limits.idle.as_secs(), "HTTP connection closed: no bytes moved");
                    return;
                }
                idle_check.as_mut().reset(deadline);
            }
            () = admitted.dropped() => {
                tracing::debug!(%peer, "HTTP connection dropped to make room: it never sent a request");
                return;
            }
            () = stopped(&mut shutdown), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A socket that notes when a byte last moved (milliseconds after `clock`).
struct Watched {
    inner: TcpStream,
    clock: std::time::Instant,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn moved(&self) {
        let ms = self.clock.elapsed().as_millis() as u64;
        self.activity.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
