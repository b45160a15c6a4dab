//! The creator dashboard: `/` leads to its sign-in, a tenant API key makes an HttpOnly,
//! SameSite=Strict session, and the pages call the public API with it (changes need the
//! session's CSRF token); another site's forms, revoked keys and signed-out sessions get
//! nothing. A creator does it all in headless Chromium; screenshots are kept.

mod common;

use std::time::Duration;

use common::TestServer;
use common::media::browser_script;
use serde_json::{Value, json};

/// A client that does not follow redirects and keeps no cookies: the test sends them.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Signs in with `key`; returns (status, the session cookie's `name=value`, Set-Cookie).
async fn sign_in(server: &TestServer, key: &str, origin: Option<&str>) -> (u16, String, String) {
    let mut req = raw_client()
        .post(server.url("/dashboard/session"))
        .form(&[("api_key", key)]);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let r = req.send().await.unwrap();
    let set = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let pair = set.split(';').next().unwrap_or_default().to_string();
    (r.status().as_u16(), pair, set)
}

/// The CSRF token the dashboard page carries.
async fn csrf_of(server: &TestServer, cookie: &str) -> String {
    let page = raw_client()
        .get(server.url("/dashboard"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in {page}"))
        .to_string()
}

async fn api(
    server: &TestServer,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> (u16, Value) {
    let mut req = raw_client()
        .request(method.parse().unwrap(), server.url(path))
        .header("cookie", cookie);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    if method == "POST" {
        req = req.json(&json!({}));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_calls_the_api_and_nothing_else_can_use_it() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("<script>alert(1)</script> TV").await;

    // `/` leads to the sign-in page, which links the API reference.
    let r = raw_client().get(server.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/dashboard");
    let r = raw_client()
        .get(server.url("/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"action="/dashboard/session""#) && page.contains(r#"href="/docs""#));

    // Wrong keys, admin keys and other sites' forms are refused.
    assert_eq!(sign_in(&server, "fck_wrong", None).await.0, 401);
    assert_eq!(sign_in(&server, &server.admin_key(), None).await.0, 403);
    assert_eq!(
        sign_in(&server, &key, Some("https://evil.example")).await.0,
        403
    );
    let r = raw_client()
        .post(server.url("/dashboard/session"))
        .json(&json!({"api_key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "a form, not JSON");

    // A tenant key signs in: an HttpOnly, SameSite=Strict cookie.
    let origin = server.url("").trim_end_matches('/').to_string();
    let (status, cookie, set) = sign_in(&server, &key, Some(&origin)).await;
    assert_eq!(status, 303, "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    let csrf = csrf_of(&server, &cookie).await;
    let page = raw_client()
        .get(server.url("/dashboard"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt; TV")
            && !page.contains("<script>alert"),
        "the tenant's name is escaped"
    );

    // The session calls the public API: reads freely, changes only with its CSRF token.
    assert_eq!(
        api(&server, "GET", "/v1/live-streams", &cookie, None)
            .await
            .0,
        200
    );
    let (status, e) = api(&server, "POST", "/v1/live-streams", &cookie, None).await;
    assert_eq!(status, 403, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("CSRF"));
    assert_eq!(
        api(&server, "POST", "/v1/live-streams", &cookie, Some("wrong"))
            .await
            .0,
        403
    );
    let (status, s) = api(&server, "POST", "/v1/live-streams", &cookie, Some(&csrf)).await;
    assert_eq!(status, 201, "{s}");
    // A second session cookie (planted by a sibling site) makes neither count.
    let planted = format!("{cookie}; ferrocast_session=planted");
    assert_eq!(
        api(&server, "GET", "/v1/live-streams", &planted, None)
            .await
            .0,
        401
    );
    // A browser saying the form comes from another site is refused.
    let r = raw_client()
        .post(server.url("/dashboard/session"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("api_key", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Admin routes stay closed to a tenant's session.
    assert_eq!(
        api(&server, "GET", "/v1/tenants", &cookie, None).await.0,
        403
    );

    // Signing out needs the token too; then the cookie is worth nothing.
    let out = |token: String| {
        raw_client()
            .post(server.url("/dashboard/logout"))
            .header("cookie", &cookie)
            .form(&[("csrf", token)])
            .send()
    };
    assert_eq!(out("wrong".into()).await.unwrap().status(), 403);
    let r = out(csrf.clone()).await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        api(&server, "GET", "/v1/live-streams", &cookie, None)
            .await
            .0,
        401
    );

    // A session lasts no longer than its key.
    let (_, cookie, _) = sign_in(&server, &key, None).await;
    assert_eq!(
        api(&server, "GET", "/v1/live-streams", &cookie, None)
            .await
            .0,
        200
    );
    let (_, keys) = server.call("GET", "/v1/api-keys", Some(&key), None).await;
    let key_id = keys["data"][0]["id"].as_str().unwrap();
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/api-keys/{key_id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api(&server, "GET", "/v1/live-streams", &cookie, None)
            .await
            .0,
        401
    );

    // A player link to nothing says so.
    let r = raw_client()
        .get(server.url("/play/0123456789abcdef0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("does not exist"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_signs_in_and_makes_a_live_stream_in_chromium() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Acme TV").await;
    let shots = concat!(env!("CARGO_TARGET_TMPDIR"), "/screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let base = server.url("").trim_end_matches('/').to_string();
    let media = tempfile::tempdir().unwrap();
    let file = common::media::make_media(
        media.path(),
        "clip.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ],
    );
    let control = tempfile::tempdir().unwrap();
    let script = tokio::spawn(browser_script(
        "dashboard.cjs",
        vec![
            base,
            key.clone(),
            shots.into(),
            file.to_str().unwrap().into(),
            control.path().to_str().unwrap().into(),
        ],
        300,
    ));
    // Once a viewer watched the upload, its view is written out (as the aggregator does
    // every few seconds) before the page opens Analytics.
    common::media::eventually(
        "the page to play the upload",
        Duration::from_secs(240),
        || async { control.path().join("played").exists().then_some(()) },
    )
    .await;
    server.state.analytics.flush().await;
    std::fs::write(control.path().join("flushed"), "").unwrap();
    let seen = script.await.unwrap();
    assert_eq!(seen["error"], Value::Null, "{seen}");
    assert_eq!(seen["landing"], "/dashboard", "{seen}");
    assert!(seen["docsLinks"].as_u64().unwrap() >= 1);
    assert!(
        seen["refused"]
            .as_str()
            .unwrap()
            .contains("not a valid API key"),
        "{seen}"
    );
    assert_eq!(seen["tenant"], "Acme TV");
    assert_eq!(
        seen["cookie"],
        json!({"httpOnly": true, "sameSite": "Strict"}),
        "{seen}"
    );
    assert_eq!(
        seen["scriptCookies"], "",
        "the page's scripts cannot read the session"
    );
    assert_eq!(seen["rows"], 1);
    // The upload's progress rose to 100 % and the asset became ready.
    let progress: Vec<f64> = seen["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&100.0), "{progress:?}");
    let (_, assets) = server.call("GET", "/v1/assets", Some(&key), None).await;
    assert_eq!(assets["data"][0]["playback_id"], seen["ready"]);
    assert_eq!(assets["data"][0]["filename"], "clip.mp4");
    assert_eq!(seen["played"], "playing", "{seen}");
    // Analytics charted the view.
    assert!(seen["chartPoints"].as_u64().unwrap() >= 1, "{seen}");
    assert!(
        seen["cards"].as_str().unwrap().contains("1\nviews"),
        "{seen}"
    );
    // The product is the API's, for the asset, at 4.99 EUR.
    assert!(
        seen["product"].as_str().unwrap().contains("Director's cut"),
        "{seen}"
    );
    let (_, prices) = server.call("GET", "/v1/prices", Some(&key), None).await;
    assert_eq!(
        (
            &prices["data"][0]["unit_amount"],
            &prices["data"][0]["currency"]
        ),
        (&json!(499), &json!("eur")),
        "{prices}"
    );
    assert!(seen["settings"].as_u64().unwrap() >= 1, "{seen}");
    assert!(
        seen["code"].as_str().unwrap().contains("LAUNCH20"),
        "{seen}"
    );
    assert_eq!(seen["signingKeyShown"], true, "{seen}");
    assert_eq!(seen["signingKeys"], 1, "{seen}");
    // The chat's slow mode as the page set it.
    let stream_id = list_streams_first_id(&server, &key).await;
    let (_, rules) = server
        .call(
            "GET",
            &format!("/v1/live-streams/{stream_id}/chat/rules"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(rules["slow_mode_s"], 5, "{rules}");
    assert_eq!(seen["problems"], json!([]), "{seen}");
    assert!(seen["signedOut"].as_bool().unwrap());
    assert_eq!(seen["notFound"], "This video does not exist");
    // What the page showed is the stream the API has.
    let (_, list) = server
        .call("GET", "/v1/live-streams", Some(&key), None)
        .await;
    assert_eq!(list["data"][0]["stream_key"], seen["streamKey"]);
    assert_eq!(list["data"][0]["rtmp_url"], seen["rtmp"]);
    for shot in [
        "sign-in.png",
        "dashboard.png",
        "dashboard-uploads.png",
        "dashboard-analytics.png",
        "dashboard-commerce.png",
        "dashboard-settings.png",
        "play-not-found.png",
    ] {
        let len = std::fs::metadata(format!("{shots}/{shot}")).unwrap().len();
        assert!(len > 5_000, "{shot} is {len} bytes");
    }
    server.stop().await;
}

async fn list_streams_first_id(server: &TestServer, key: &str) -> String {
    let (_, list) = server
        .call("GET", "/v1/live-streams", Some(key), None)
        .await;
    list["data"][0]["id"].as_str().unwrap().to_string()
}
