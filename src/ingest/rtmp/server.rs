//! The RTMP listener: sockets in, [`ServerConnection`] in the middle, broadcasts out.
//! Every connection has a handshake deadline and an idle timeout, and [`Admission`] caps
//! connections (per address until they publish, and in all), so no client can hold the
//! server or lock broadcasters out.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Amf0Value, Event, Limits, ServerConnection};
use crate::admission::{Admission, Admitted};
use crate::config::RtmpConfig;
use crate::live::{IngestMessage, LiveHub, PublishRefusal, Publisher};

/// The RTMP application publishers push to: `rtmp://host/live/<stream key>`.
pub const APP: &str = "live";

/// Accepts RTMP connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    hub: LiveHub,
    config: RtmpConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let admission = Admission::new("rtmp", config.max_connections, config.max_pending_per_ip);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match admission.admit(peer.ip()) {
            Ok(a) => a,
            Err(refused) => {
                tracing::warn!(%peer, %refused, "RTMP connection refused");
                metrics::counter!("ferrocast_rtmp_connections_refused_total").increment(1);
                continue;
            }
        };
        let hub = hub.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("rtmp", %peer);
            let result = tracing::Instrument::instrument(
                connection(socket, peer, hub, config, shutdown, admitted),
                span.clone(),
            )
            .await;
            if let Err(reason) = result {
                tracing::info!(parent: &span, %reason, "RTMP connection closed");
            }
        });
    }
}

/// Characters of a client's string (an application name) shown back or logged.
const SHOWN_MAX: usize = 64;

/// A client's string as it is shown back or logged: at most [`SHOWN_MAX`] characters, and
/// escaped (`{:?}`), so it cannot fill a log or break its line.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(SHOWN_MAX).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Why a publish to an application other than [`APP`] is refused.
fn unknown_app(app: &str) -> String {
    format!(
        "unknown application {}: publish to rtmp://HOST/{APP}/STREAM_KEY",
        shown(app)
    )
}

/// Serves one connection; returns why it ended when that was not a clean close.
async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    hub: LiveHub,
    config: RtmpConfig,
    mut shutdown: watch::Receiver<bool>,
    mut admitted: Admitted,
) -> Result<(), String> {
    let _ = socket.set_nodelay(true);
    let mut conn = ServerConnection::new(Limits::default());
    let mut buf = vec![0u8; 64 * 1024];
    let mut publisher: Option<Publisher> = None;
    let mut published = false;
    // The NetStream the current publish is on, to tell the client why it ends.
    let mut publish_stream = None;
    let handshake_deadline =
        tokio::time::Instant::now() + Duration::from_secs(config.handshake_timeout_s);
    let idle = Duration::from_secs(config.idle_timeout_s);
    // When the last read was handled: the idle time counts from there, so that time spent
    // waiting on a slow broadcast (a full media channel) is never taken for a silent client.
    let mut last_read = tokio::time::Instant::now();
    // One timer for the connection, moved only when it fires: re-arming a timeout around
    // every read would cost a timer-wheel insert and removal per TCP segment.
    let timer = tokio::time::sleep_until(handshake_deadline);
    tokio::pin!(timer);
    // Kept across reads, like the timer: made anew for each read, each would register with
    // its watch channel and leave it again, per TCP segment.
    let shutting_down = shutdown.wait_for(|stop| *stop);
    tokio::pin!(shutting_down);
    let mut stopped: Option<Pin<Box<dyn Future<Output = String> + Send>>> = None;
    loop {
        let read = tokio::select! {
            r = socket.read(&mut buf) => Ok(r.map_err(|e| format!("read: {e}"))?),
            () = &mut timer => {
                // Before the first publish the handshake deadline applies; after it, the idle
                // timeout (a client that unpublished may still send deleteStream first).
                if !published {
                    return Err("did not start publishing in time".into());
                }
                let deadline = last_read + idle;
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("no data for {}s", idle.as_secs()));
                }
                timer.as_mut().reset(deadline);
                continue;
            }
            // Handled after the select: awaiting in here would keep its output (holding a
            // watch guard, not Send) alive across the await.
            reason = async { stopped.as_mut().expect("guarded").await }, if stopped.is_some() => {
                Err(reason)
            }
            _ = &mut shutting_down => return Err("server shutting down".into()),
            () = admitted.dropped() => {
                return Err("dropped to make room: the server was full and this connection had not started publishing".into());
            }
        };
        let read = match read {
            Ok(n) => n,
            Err(reason) => {
                return Err(end_publish(&mut socket, &mut conn, publish_stream, reason).await);
            }
        };
        if read == 0 {
            return Ok(());
        }
        let events = conn
            .feed(&buf[..read])
            .map_err(|e| format!("protocol error: {}", shown(&e.to_string())))?;
        let mut close_after_write = None;
        for event in events {
            let mut media = None;
            match event {
                Event::Connected { app, .. } => {
                    tracing::debug!(app = %shown(&app), "connected")
                }
                Event::PublishRequested {
                    stream_id,
                    app,
                    stream_name,
                    ..
                } => {
                    // OBS and others may append "?query" to the stream name.
                    let key = stream_name
                        .split('?')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let refusal = if app.trim_end_matches('/') != APP {
                        Some(("NetStream.Publish.BadName", unknown_app(&app)))
                    } else if publisher.is_some() {
                        Some((
                            "NetStream.Publish.BadName",
                            "this connection is already publishing".to_string(),
                        ))
                    } else {
                        // A client that got this far proved itself: it is not dropped for
                        // room while its publish is decided (refused, it closes anyway).
                        admitted.established();
                        match hub.publish(&key, &[], Some(peer.ip())).await {
                            Ok(p) => {
                                tracing::info!(live_stream = %p.live_stream_id, tenant = %p.tenant_id, %peer, "publishing");
                                stopped = Some(Box::pin(p.stopped()));
                                publisher = Some(p);
                                published = true;
                                publish_stream = Some(stream_id);
                                timer.as_mut().reset(tokio::time::Instant::now() + idle);
                                conn.accept_publish(stream_id);
                                None
                            }
                            Err(r) => Some((netstream_code(r), r.to_string())),
                        }
                    };
                    if let Some((code, description)) = refusal {
                        tracing::info!(%code, %description, "publish refused");
                        conn.reject_publish(stream_id, code, &description);
                        close_after_write = Some(description);
                    }
                }
                Event::Metadata { data, .. } => {
                    let fields = data.into_iter().map(|(k, v)| (k, amf_to_json(v))).collect();
                    media = Some(IngestMessage::Metadata(fields));
                }
                Event::Video {
                    timestamp_ms,
                    payload,
                    ..
                } => {
                    media = Some(IngestMessage::Video {
                        timestamp_ms,
                        body: payload,
                    });
                }
                Event::Audio {
                    timestamp_ms,
                    payload,
                    ..
                } => {
                    media = Some(IngestMessage::Audio {
                        timestamp_ms,
                        body: payload,
                    });
                }
                Event::Unpublished { .. } => {
                    stopped = None;
                    publish_stream = None;
                    if publisher.take().is_some() {
                        tracing::info!("publisher stopped");
                    }
                }
            }
            // Media before a publish (or after it was refused) goes nowhere.
            if let (Some(message), Some(p)) = (media, publisher.as_mut())
                && let Err(r) = p.send(message).await
            {
                return Err(end_publish(&mut socket, &mut conn, publish_stream, r).await);
            }
        }
        let out = conn.take_output();
        if !out.is_empty() {
            socket
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        if let Some(reason) = close_after_write {
            let _ = socket.shutdown().await;
            return Err(format!("publish refused: {reason}"));
        }
        last_read = tokio::time::Instant::now();
    }
}

/// The broadcast ended the publish (stream deleted, key reset, a codec it cannot take, an
/// error): the client is told why with onStatus level "error" (ffmpeg prints it as "Server
/// error: …"), then the connection closes. Returns the reason to log.
async fn end_publish(
    socket: &mut TcpStream,
    conn: &mut ServerConnection,
    stream_id: Option<u32>,
    reason: String,
) -> String {
    if let Some(id) = stream_id {
        conn.reject_publish(id, "NetStream.Publish.Failed", &reason);
        let out = conn.take_output();
        // What the client still sends is read and dropped until it closes (2 s at most):
        // closing at once would reset the connection, and with it the status not yet read.
        let mut sink = vec![0u8; 16 * 1024];
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            socket.write_all(&out).await?;
            while socket.read(&mut sink).await? > 0 {}
            socket.shutdown().await
        })
        .await;
    }
    format!("broadcast ended: {reason}")
}

fn amf_to_json(v: Amf0Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        // AMF has only doubles; whole numbers (width, height) read better as integers.
        Amf0Value::Number(n) if n.fract() == 0.0 && n.abs() < 9e15 => Value::from(n as i64),
        Amf0Value::Number(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        Amf0Value::Boolean(b) => Value::Bool(b),
        Amf0Value::String(s) => Value::String(s),
        Amf0Value::Object(pairs) | Amf0Value::EcmaArray(pairs) => Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, amf_to_json(v)))
                .collect(),
        ),
        Amf0Value::StrictArray(items) => Value::Array(items.into_iter().map(amf_to_json).collect()),
        Amf0Value::Date { millis, .. } => {
            serde_json::Number::from_f64(millis).map_or(Value::Null, Value::Number)
        }
        Amf0Value::Null | Amf0Value::Undefined => Value::Null,
    }
}

/// The NetStream status code a refused publish is answered with: `BadName` when the name (the
/// stream key) cannot be published now, `Failed` when the server cannot take it.
fn netstream_code(refusal: PublishRefusal) -> &'static str {
    match refusal {
        PublishRefusal::UnknownKey | PublishRefusal::AlreadyLive => "NetStream.Publish.BadName",
        PublishRefusal::PreviousClosing
        | PublishRefusal::Unavailable
        | PublishRefusal::TooManyWrongKeys => "NetStream.Publish.Failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_string_is_shown_bounded_and_escaped() {
        assert_eq!(
            unknown_app("app"),
            "unknown application \"app\": publish to rtmp://HOST/live/STREAM_KEY"
        );
        let huge = unknown_app(&"a\n".repeat(35_000));
        assert!(huge.len() < 300, "{} bytes", huge.len());
        assert!(!huge.contains('\n'));
    }
}
