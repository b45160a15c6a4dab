//! Live chat over real WebSockets (tokio-tungstenite): viewers join and get the history,
//! see each other's messages, are throttled when they flood, see a hidden message vanish,
//! and a reader that stops reading never delays the others.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn join(server: &TestServer, playback_id: &str, token: Option<&str>) -> Socket {
    let mut url = server
        .url(&format!("/chat/{playback_id}"))
        .replace("http://", "ws://");
    if let Some(t) = token {
        url = format!("{url}?token={t}");
    }
    let (socket, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("the chat answers")
    .expect("the chat takes the connection");
    assert_eq!(response.status(), 101);
    socket
}

/// The next JSON text frame (pings are answered by the library), within `limit`.
async fn next(socket: &mut Socket, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no frame within {limit:?}: {other:?}"),
        }
    }
}

/// The next frame of `kind`, skipping others.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let v = next(socket, Duration::from_secs(5)).await;
        if v["type"] == kind {
            return v;
        }
    }
}

async fn say(socket: &mut Socket, text: &str) {
    socket
        .send(Message::Text(
            json!({"type": "send", "text": text}).to_string().into(),
        ))
        .await
        .unwrap();
}

async fn public_stream(server: &TestServer, key: &str) -> (String, String) {
    let (status, s) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(key),
            Some(json!({"playback_policy": "public"})),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    (
        s["id"].as_str().unwrap().to_string(),
        s["playback_id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_chat_in_real_time_with_history_flood_control_and_moderation() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Chatty").await;
    let (stream_id, playback_id) = public_stream(&server, &key).await;

    let mut ana = join(&server, &playback_id, None).await;
    let welcome = next_of(&mut ana, "welcome").await;
    assert!(
        welcome["name"].as_str().unwrap().starts_with("viewer-"),
        "{welcome}"
    );
    assert_eq!(next_of(&mut ana, "history").await["messages"], json!([]));
    let mut bob = join(&server, &playback_id, None).await;
    next_of(&mut bob, "history").await;

    // Each sees the other's message within a second, as text.
    let sent = Instant::now();
    say(
        &mut ana,
        "<script>alert(1)</script> hi <img src=x onerror=alert(2)>",
    )
    .await;
    let got = next_of(&mut bob, "message").await;
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(
        got["text"],
        "<script>alert(1)</script> hi <img src=x onerror=alert(2)>"
    );
    assert_eq!(got["name"], welcome["name"]);
    assert_eq!(next_of(&mut ana, "message").await["id"], got["id"]);
    say(&mut bob, "hello ana").await;
    assert_eq!(next_of(&mut ana, "message").await["text"], "hello ana");
    assert_eq!(next_of(&mut bob, "message").await["text"], "hello ana");

    // A flood: three in two seconds (the first was the one above), then the sender is told
    // to slow down.
    for i in 0..2 {
        say(&mut ana, &format!("spam {i}")).await;
    }
    say(&mut ana, "spam 2").await;
    let refused = next_of(&mut ana, "error").await;
    assert_eq!(refused["code"], "slow_down", "{refused}");
    assert_eq!(refused["retry_after_s"], 10.0);
    // Bob saw "spam 0" and "spam 1" only.
    assert_eq!(next_of(&mut bob, "message").await["text"], "spam 0");
    assert_eq!(next_of(&mut bob, "message").await["text"], "spam 1");
    // Bad frames get a reason.
    bob.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next_of(&mut bob, "error").await["code"], "invalid");
    say(&mut bob, &"x".repeat(501)).await;
    assert_eq!(next_of(&mut bob, "error").await["code"], "invalid");

    // The creator hides the script message: it disappears for both at once.
    let hide = format!(
        "/v1/live-streams/{stream_id}/chat/messages/{}/hide",
        got["id"].as_str().unwrap()
    );
    let (status, hidden) = server.call("POST", &hide, Some(&key), None).await;
    assert_eq!(status, 200, "{hidden}");
    assert_eq!(hidden["hidden"], true);
    assert_eq!(next_of(&mut ana, "hidden").await["id"], got["id"]);
    assert_eq!(next_of(&mut bob, "hidden").await["id"], got["id"]);

    // A viewer joining now gets the visible history, oldest first.
    let mut cy = join(&server, &playback_id, None).await;
    let history = next_of(&mut cy, "history").await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello ana", "spam 0", "spam 1"]);
    // The creator's list has everything, the hidden one marked.
    let (_, list) = server
        .call(
            "GET",
            &format!("/v1/live-streams/{stream_id}/chat/messages"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 4);
    assert_eq!(list["data"][0]["hidden"], true);
    // Another tenant can neither read nor moderate it.
    let (_, other) = server.create_tenant("Other").await;
    assert_eq!(server.call("POST", &hide, Some(&other), None).await.0, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_streams_chat_needs_its_token_and_names_its_viewer() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Private").await;
    let (status, s) = server
        .call("POST", "/v1/live-streams", Some(&key), Some(json!({})))
        .await;
    assert_eq!(status, 201);
    let playback_id = s["playback_id"].as_str().unwrap();
    let url = server
        .url(&format!("/chat/{playback_id}"))
        .replace("http://", "ws://");
    let refused = tokio_tungstenite::connect_async(url.clone()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let (_, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": playback_id, "viewer": "ana"})),
        )
        .await;
    let mut ana = join(&server, playback_id, Some(t["token"].as_str().unwrap())).await;
    let welcome = next_of(&mut ana, "welcome").await;
    assert_eq!(welcome["name"], "ana");
    // Unknown ids and plain HTTP get clear answers.
    assert_eq!(
        server
            .get_text("/chat/0123456789abcdef0123456789abcdef")
            .await
            .0,
        404
    );
    assert_eq!(
        server.get_text(&format!("/chat/{playback_id}")).await.0,
        401
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_never_delays_the_others_and_an_address_has_its_share() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Busy").await;
    let (_, playback_id) = public_stream(&server, &key).await;
    // A viewer that never reads again.
    let mut stalled = join(&server, &playback_id, None).await;
    next_of(&mut stalled, "history").await;
    let mut reader = join(&server, &playback_id, None).await;
    next_of(&mut reader, "history").await;
    // Talkers (each within its flood allowance) fill the stalled viewer's queues: as many
    // as one address may hold, 20 connections with the two above.
    let mut talkers = Vec::new();
    for _ in 0..18 {
        let mut t = join(&server, &playback_id, None).await;
        next_of(&mut t, "history").await;
        talkers.push(t);
    }
    let mut worst = Duration::ZERO;
    let mut received = 0;
    for round in 0..3 {
        for (i, t) in talkers.iter_mut().enumerate() {
            say(t, &format!("{round}-{i} {}", "x".repeat(400))).await;
        }
        let started = Instant::now();
        for _ in 0..talkers.len() {
            next_of(&mut reader, "message").await;
            received += 1;
        }
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
    assert_eq!(received, 54);
    println!("a reading viewer got each round of 18 messages within {worst:?}");
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    // The 21st connection from one address is refused.
    let url = server
        .url(&format!("/chat/{playback_id}"))
        .replace("http://", "ws://");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // (That the stalled viewer is dropped once its queue is full is src/chat's unit test:
    // here the kernel's socket buffers take these few hundred kilobytes first.)
    drop(stalled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_chat_beside_the_player_in_chromium_and_a_hidden_message_vanishes() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Watch party").await;
    let (stream_id, playback_id) = public_stream(&server, &key).await;
    let shots = concat!(env!("CARGO_TARGET_TMPDIR"), "/screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let control = tempfile::tempdir().unwrap();
    let script = tokio::spawn(common::media::browser_script(
        "chat.cjs",
        vec![
            server.url(&format!("/play/{playback_id}")),
            shots.into(),
            control.path().to_str().unwrap().into(),
        ],
        120,
    ));
    // When the page says it sent, the creator hides that message over the API.
    let sent = control.path().join("sent");
    let id = common::media::eventually(
        "the message to be sent",
        Duration::from_secs(60),
        || async { std::fs::read_to_string(&sent).ok() },
    )
    .await;
    let (status, hidden) = server
        .call(
            "POST",
            &format!("/v1/live-streams/{stream_id}/chat/messages/{id}/hide"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{hidden}");
    std::fs::write(control.path().join("hidden"), "").unwrap();
    let seen = script.await.unwrap();
    assert_eq!(seen["error"], Value::Null, "{seen}");
    assert_eq!(seen["problems"], json!([]), "{seen}");
    let names = seen["names"].as_array().unwrap();
    assert_ne!(names[0], names[1]);
    assert_eq!(
        seen["seenText"],
        r#"<script>window.pwned=1</script> hello <img src=x onerror="window.pwned=2">"#,
        "shown as text"
    );
    assert!(
        seen["seenHtml"]
            .as_str()
            .unwrap()
            .starts_with("&lt;script&gt;"),
        "{seen}"
    );
    assert_eq!(seen["pwned"], Value::Null, "no script ran");
    assert!(seen["latencyMs"].as_u64().unwrap() < 1000, "{seen}");
    assert_eq!(seen["hiddenFrom"], 2);
    assert!(
        seen["floodStatus"].as_str().unwrap().contains("too many"),
        "{seen}"
    );
    println!(
        "a message reached the other viewer's page in {} ms",
        seen["latencyMs"]
    );
    server.stop().await;
}
