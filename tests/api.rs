//! The HTTP API driven over real HTTP against a real server on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::{PgDatabase, S3Server, TestServer};
use serde_json::{Value, json};

#[tokio::test]
async fn an_operator_bootstraps_with_the_printed_admin_key_and_creates_a_tenant() {
    let server = TestServer::start().await;
    let admin = server.admin_key();
    assert!(admin.starts_with("fca_"));
    assert!(server.startup.master_key_created);

    let (status, tenant) = server
        .call(
            "POST",
            "/v1/tenants",
            Some(&admin),
            Some(json!({"name": "  Acme TV "})),
        )
        .await;
    assert_eq!(status, 201, "{tenant}");
    assert_eq!(tenant["name"], "Acme TV");
    let tenant_key = tenant["api_key"].as_str().unwrap();
    assert!(tenant_key.starts_with("fck_"));

    // The tenant's key works for the tenant's own endpoints.
    let (status, me) = server
        .call("GET", "/v1/tenant", Some(tenant_key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], tenant["id"]);
    assert_eq!(me["name"], "Acme TV");

    // The admin can see it; the key is never shown again.
    let (status, got) = server
        .call(
            "GET",
            &format!("/v1/tenants/{}", tenant["id"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(got.get("api_key").is_none());

    // The admin key is stored hashed: its secret is nowhere in the database file.
    let db_bytes = std::fs::read(server.data_dir.join("ferrocast.db")).unwrap();
    let wal = std::fs::read(server.data_dir.join("ferrocast.db-wal")).unwrap_or_default();
    for bytes in [&db_bytes, &wal] {
        assert!(
            !bytes.windows(admin.len()).any(|w| w == admin.as_bytes()),
            "admin key stored in clear"
        );
        assert!(
            !bytes
                .windows(tenant_key.len())
                .any(|w| w == tenant_key.as_bytes()),
            "tenant key stored in clear"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_bootstrap_key_is_generated_once_and_a_configured_admin_key_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(dir.path());
    let first = TestServer::start_config(config.clone()).await;
    let bootstrap = first.admin_key();
    first.stop().await;

    // Restart on the same data: no new key is printed, the first one still works.
    let second = TestServer::start_config(config.clone()).await;
    assert!(second.startup.bootstrap_admin_key.is_none());
    assert!(!second.startup.master_key_created);
    let (status, _) = second
        .call("GET", "/v1/tenants", Some(&bootstrap), None)
        .await;
    assert_eq!(status, 200);
    second.stop().await;

    // FERROCAST_ADMIN_KEY (admin.key) is the admin key, and no key is generated.
    let other = tempfile::tempdir().unwrap();
    let mut config = common::test_config(other.path());
    config.admin.key = ferrocast::config::Secret::new("automation-admin-key-0123456789");
    let third = TestServer::start_config(config).await;
    assert!(third.startup.bootstrap_admin_key.is_none());
    let (status, _) = third
        .call(
            "POST",
            "/v1/tenants",
            Some("automation-admin-key-0123456789"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = third
        .call(
            "GET",
            "/v1/tenants",
            Some("automation-admin-key-wrong"),
            None,
        )
        .await;
    assert_eq!(status, 401);
    third.stop().await;
}

#[tokio::test]
async fn callers_without_a_valid_key_get_401_and_the_wrong_kind_of_key_gets_403() {
    let server = TestServer::start().await;
    let (_, tenant_key) = server.create_tenant("Acme").await;

    let resp = server
        .client
        .get(server.url("/v1/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let (status, body) = server
        .call("GET", "/v1/tenants", Some("fca_not-a-real-key"), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "invalid or revoked API key");
    let resp = server
        .client
        .get(server.url("/v1/api-keys"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let (status, body) = server
        .call(
            "POST",
            "/v1/tenants",
            Some(&tenant_key),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = server
        .call("GET", "/v1/api-keys", Some(&server.admin_key()), None)
        .await;
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_manages_its_keys_and_a_revoked_key_stops_working_at_once() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Acme").await;

    let (status, created) = server
        .call(
            "POST",
            "/v1/api-keys",
            Some(&key),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let ci_key = created["api_key"].as_str().unwrap().to_string();
    let ci_id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["prefix"], &ci_key[..12]);
    assert!(created["revoked_at"].is_null());

    let (status, list) = server
        .call("GET", "/v1/api-keys", Some(&ci_key), None)
        .await;
    assert_eq!(status, 200);
    let names: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "ci"]);
    assert!(
        !list.to_string().contains(&ci_key),
        "a listed key shows its secret"
    );
    assert!(
        list["data"][0]["last_used_at"].is_string(),
        "use of the default key is recorded"
    );

    let (status, renamed) = server
        .call(
            "PATCH",
            &format!("/v1/api-keys/{ci_id}"),
            Some(&key),
            Some(json!({"name": "deploy"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["name"], "deploy");
    let (status, got) = server
        .call("GET", &format!("/v1/api-keys/{ci_id}"), Some(&key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "deploy");

    let (status, revoked) = server
        .call("DELETE", &format!("/v1/api-keys/{ci_id}"), Some(&key), None)
        .await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    let (status, _) = server.call("GET", "/v1/tenant", Some(&ci_key), None).await;
    assert_eq!(status, 401, "a revoked key still works");
    let (status, _) = server.call("GET", "/v1/tenant", Some(&key), None).await;
    assert_eq!(status, 200, "revoking one key affected another");

    // The admin can give a tenant a new key (e.g. when it lost them all).
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/api-keys/{}", list["data"][0]["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.call("GET", "/v1/tenant", Some(&key), None).await;
    assert_eq!(status, 401);
    let tenant_id = {
        let (_, tenants) = server
            .call("GET", "/v1/tenants", Some(&server.admin_key()), None)
            .await;
        tenants["data"][0]["id"].as_str().unwrap().to_string()
    };
    let (status, rescue) = server
        .call(
            "POST",
            &format!("/v1/tenants/{tenant_id}/api-keys"),
            Some(&server.admin_key()),
            Some(json!({"name": "rescue"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .call("GET", "/v1/tenant", rescue["api_key"].as_str(), None)
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Tenant A's key cannot read, list, change or delete tenant B's resources, and cannot
/// learn that they exist: the answer is 404, exactly as for an id that never existed.
async fn tenants_are_isolated(server: &TestServer) {
    let (_, key_a) = server.create_tenant("A").await;
    let (b_id, key_b) = server.create_tenant("B").await;
    let (_, b_extra) = server
        .call(
            "POST",
            "/v1/api-keys",
            Some(&key_b),
            Some(json!({"name": "b-extra"})),
        )
        .await;
    let b_key_id = b_extra["id"].as_str().unwrap();
    let never_existed = "01a20640-0000-7000-8000-000000000000";

    for id in [b_key_id, never_existed] {
        let path = format!("/v1/api-keys/{id}");
        let (status, body) = server.call("GET", &path, Some(&key_a), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "read {id}"
        );
        let (status, _) = server
            .call("PATCH", &path, Some(&key_a), Some(json!({"name": "pwned"})))
            .await;
        assert_eq!(status, 404, "change {id}");
        let (status, _) = server.call("DELETE", &path, Some(&key_a), None).await;
        assert_eq!(status, 404, "delete {id}");
    }
    let (_, a_list) = server.call("GET", "/v1/api-keys", Some(&key_a), None).await;
    assert_eq!(
        a_list["data"].as_array().unwrap().len(),
        1,
        "A lists B's keys: {a_list}"
    );
    assert!(!a_list.to_string().contains(b_key_id));

    // B's key is unchanged and still works.
    let (status, b_key) = server
        .call(
            "GET",
            &format!("/v1/api-keys/{b_key_id}"),
            Some(&key_b),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(b_key["name"], "b-extra");
    assert!(b_key["revoked_at"].is_null());
    let (status, me) = server.call("GET", "/v1/tenant", Some(&key_b), None).await;
    assert_eq!((status, me["id"].as_str()), (200, Some(b_id.as_str())));

    // The same holds for live streams and their playback ids.
    let (status, b_stream) = server
        .call("POST", "/v1/live-streams", Some(&key_b), Some(json!({})))
        .await;
    assert_eq!(status, 201);
    let b_stream_id = b_stream["id"].as_str().unwrap();
    let path = format!("/v1/live-streams/{b_stream_id}");
    assert_eq!(server.call("GET", &path, Some(&key_a), None).await.0, 404);
    assert_eq!(
        server.call("DELETE", &path, Some(&key_a), None).await.0,
        404
    );
    assert_eq!(
        server
            .call(
                "POST",
                &format!("{path}/reset-stream-key"),
                Some(&key_a),
                None
            )
            .await
            .0,
        404
    );
    let (_, a_streams) = server
        .call("GET", "/v1/live-streams", Some(&key_a), None)
        .await;
    assert!(
        a_streams["data"].as_array().unwrap().is_empty(),
        "{a_streams}"
    );
    let (status, _) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key_a),
            Some(json!({"playback_id": b_stream["playback_id"]})),
        )
        .await;
    assert_eq!(status, 404, "A minted a token for B's stream");
    let (_, still) = server.call("GET", &path, Some(&key_b), None).await;
    assert_eq!(still["stream_key"], b_stream["stream_key"]);

    // Tenant keys cannot reach tenant administration at all.
    let (status, _) = server
        .call("GET", &format!("/v1/tenants/{b_id}"), Some(&key_a), None)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn tenants_are_isolated_on_sqlite() {
    let server = TestServer::start().await;
    tenants_are_isolated(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated_on_postgres() {
    let pg = PgDatabase::create().await;
    let url = pg.url.clone();
    let server =
        TestServer::start_with(|c| c.database.url = ferrocast::config::DatabaseUrl::new(url)).await;
    assert_eq!(
        server.state.jobs.db.backend(),
        ferrocast::db::Backend::Postgres
    );
    tenants_are_isolated(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_tenant_removes_its_keys_and_stored_objects() {
    let server = TestServer::start().await;
    let (a_id, key_a) = server.create_tenant("A").await;
    let (b_id, _) = server.create_tenant("B").await;
    let store = &server.state.jobs.store;
    for (tenant, name) in [(&a_id, "x.ts"), (&a_id, "live/1/y.ts"), (&b_id, "z.ts")] {
        let key =
            ferrocast::storage::ObjectKey::parse(&format!("tenants/{tenant}/{name}")).unwrap();
        store
            .put(&key, bytes::Bytes::from_static(b"x"), "video/mp2t")
            .await
            .unwrap();
    }
    let admin = server.admin_key();
    let (status, _) = server
        .call("DELETE", &format!("/v1/tenants/{a_id}"), Some(&admin), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server.call("GET", "/v1/tenant", Some(&key_a), None).await;
    assert_eq!(status, 401);
    let left = store
        .list(&ferrocast::storage::Prefix::parse("tenants/").unwrap())
        .await
        .unwrap();
    let left: Vec<_> = left.iter().map(|m| m.key.to_string()).collect();
    assert_eq!(left, [format!("tenants/{b_id}/z.ts")]);
    let (status, _) = server
        .call("DELETE", &format!("/v1/tenants/{a_id}"), Some(&admin), None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn lists_are_paginated_with_a_cursor() {
    let server = TestServer::start().await;
    let admin = server.admin_key();
    for name in ["t1", "t2", "t3"] {
        server.create_tenant(name).await;
    }
    let (status, page1) = server
        .call("GET", "/v1/tenants?limit=2", Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page1["data"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = server
        .call(
            "GET",
            &format!("/v1/tenants?limit=2&cursor={cursor}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert_eq!(page2["data"][0]["name"], "t3");
    assert!(page2["next_cursor"].is_null());
    let (status, body) = server
        .call("GET", "/v1/tenants?limit=0", Some(&admin), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    server.stop().await;
}

#[tokio::test]
async fn every_error_has_the_same_json_shape_and_status() {
    let server = TestServer::start_with(|c| c.http.max_body_bytes = 1024).await;
    let admin = server.admin_key();
    let post = |body: &'static str, ct: &'static str| {
        server
            .client
            .post(server.url("/v1/tenants"))
            .bearer_auth(&admin)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let shape = |v: &Value| v["error"]["code"].is_string() && v["error"]["message"].is_string();

    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            post("{not json", "application/json").await.unwrap(),
            400,
            "invalid_request",
        ),
        (
            post(r#"{"name": 5}"#, "application/json").await.unwrap(),
            400,
            "invalid_request",
        ),
        (
            post(r#"{"name": "x", "extra": 1}"#, "application/json")
                .await
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post(r#"{"name": "   "}"#, "application/json")
                .await
                .unwrap(),
            400,
            "invalid_request",
        ),
        (
            post(r#"{"name": "x"}"#, "text/plain").await.unwrap(),
            400,
            "invalid_request",
        ),
    ];
    for (resp, status, code) in cases {
        assert_eq!(resp.status().as_u16(), status);
        assert!(resp.headers().contains_key("x-request-id"));
        let body: Value = resp.json().await.unwrap();
        assert!(shape(&body), "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }

    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(4096));
    let resp = server
        .client
        .post(server.url("/v1/tenants"))
        .bearer_auth(&admin)
        .json(&serde_json::from_str::<Value>(&big).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    let (status, body) = server.call("GET", "/v2/nothing", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = server.call("PUT", "/v1/tenants", Some(&admin), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, body) = server
        .call("GET", "/v1/tenants/does-not-exist", Some(&admin), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "tenant not found");
    server.stop().await;
}

#[tokio::test]
async fn requests_carry_an_id_and_are_counted_in_metrics() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID request id: {generated}");
    let resp = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-123");
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");

    server
        .call("GET", "/v1/tenants/abc", Some("fca_bad"), None)
        .await;
    let resp = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(
            r#"ferrocast_http_requests_total{method="GET",route="/healthz",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ferrocast_http_requests_total{method="GET",route="/v1/tenants/{id}",status="401"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ferrocast_http_request_duration_seconds_bucket{method="GET",route="/healthz",le="0.005"}"#
        ),
        "{text}"
    );

    // Made-up methods are one label, `other`: they cannot grow the metrics without bound.
    for n in 0..20 {
        let method =
            reqwest::Method::from_bytes(format!("MADEUP{n}{}", "X".repeat(500)).as_bytes())
                .unwrap();
        server
            .client
            .request(method, server.url("/healthz"))
            .send()
            .await
            .unwrap();
    }
    let (_, text) = server.get_text("/metrics").await;
    assert!(!text.contains("MADEUP"), "a made-up method became a label");
    assert!(
        text.contains(r#"ferrocast_http_requests_total{method="other",route="/healthz""#),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn openapi_spec_and_docs_page_describe_every_v1_route() {
    let server = TestServer::start().await;
    let (status, spec) = server.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/tenants", "post"),
        ("/v1/tenants", "get"),
        ("/v1/tenants/{id}", "get"),
        ("/v1/tenants/{id}", "delete"),
        ("/v1/tenants/{id}/api-keys", "post"),
        ("/v1/tenant", "get"),
        ("/v1/api-keys", "post"),
        ("/v1/api-keys", "get"),
        ("/v1/api-keys/{id}", "get"),
        ("/v1/api-keys/{id}", "patch"),
        ("/v1/api-keys/{id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/live-streams", "post"),
        ("/v1/live-streams", "get"),
        ("/v1/live-streams/{id}", "get"),
        ("/v1/live-streams/{id}", "delete"),
        ("/v1/live-streams/{id}/reset-stream-key", "post"),
        ("/v1/playback-tokens", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from spec"
        );
        // ... and the route really exists on the router (not a 404 from the fallback).
        let path = path.replace("{id}", "x");
        let resp = server
            .client
            .request(method.to_uppercase().parse().unwrap(), server.url(&path))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status != 404 && status != 405,
            "{method} {path} is in the spec but not served: {status} {body}"
        );
        assert_ne!(
            body["error"]["message"], "no such route",
            "{method} {path} is in the spec but not served"
        );
    }
    // Every route of the router is in the spec, and every path of the spec is a route.
    let router =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/router.rs")).unwrap();
    let routes: std::collections::BTreeSet<String> = router
        .split(".route(")
        .skip(1)
        .filter_map(|r| r.split('"').nth(1))
        .map(|r| r.replace("{*", "{"))
        .collect();
    assert!(routes.len() > 80, "{routes:?}");
    let documented: std::collections::BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        routes.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "routes missing from the spec"
    );
    assert_eq!(
        documented.difference(&routes).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "spec paths that are no route"
    );
    // Every JSON answer and every body has an example.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for (code, response) in op["responses"].as_object().unwrap() {
                if let Some(json) = response["content"].get("application/json")
                    && code.starts_with('2')
                {
                    assert!(
                        json.get("example").is_some_and(|e| !e.is_null()),
                        "{method} {path} {code}: no example"
                    );
                }
            }
            if let Some(body) = op.get("requestBody") {
                for (media, c) in body["content"].as_object().unwrap() {
                    let schema_example = c["schema"]["$ref"].as_str().and_then(|r| {
                        spec["components"]["schemas"][r.rsplit('/').next().unwrap()].get("example")
                    });
                    assert!(
                        c.get("example").is_some()
                            || c.get("examples").is_some()
                            || schema_example.is_some(),
                        "{method} {path} {media}: the body has no example"
                    );
                }
            }
        }
    }
    assert!(spec["components"]["securitySchemes"]["api_key"].is_object());
    let docs = server.client.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    // Swagger UI (installed by make) over the spec; its own files come from this server.
    assert!(html.contains("/docs/swagger-ui-bundle.js"), "{html}");
    for (file, kind) in [
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/init.js", "text/javascript"),
    ] {
        let resp = server.client.get(server.url(file)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{file}");
        assert_eq!(resp.headers()["content-type"], kind, "{file}");
    }
    let init = server.get_text("/docs/init.js").await.1;
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert_eq!(server.get_text("/docs/other.js").await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn readyz_fails_when_local_storage_is_gone() {
    let server = TestServer::start().await;
    let (status, body) = server.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    std::fs::remove_dir_all(server.data_dir.join("objects")).unwrap();
    let (status, body) = server.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"]["storage"]
            .as_str()
            .unwrap()
            .contains("storage unavailable"),
        "{body}"
    );
    let (status, _) = server.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "liveness does not depend on storage");
    server.stop().await;
}

#[tokio::test]
async fn readyz_fails_when_the_s3_server_is_unreachable() {
    let mut s3 = S3Server::start();
    let server = TestServer::start_with(|c| s3.configure(c, "ferrocast-ready")).await;
    let (status, body) = server.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    s3.kill();
    let started = std::time::Instant::now();
    let (status, body) = server.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["checks"]["storage"], "ok");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readyz hung on a dead store"
    );
    server.stop().await;
}

#[tokio::test]
async fn local_presigned_urls_are_served_by_the_server_with_ranges() {
    let server = TestServer::start().await;
    let key = ferrocast::storage::ObjectKey::parse("tenants/t/seg 1.ts").unwrap();
    server
        .state
        .jobs
        .store
        .put(&key, bytes::Bytes::from_static(b"abcdefghij"), "video/mp2t")
        .await
        .unwrap();
    let url = server
        .state
        .jobs
        .store
        .presign_get(&key, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(url.starts_with(&server.base), "{url}");
    let resp = server.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp2t");
    assert_eq!(resp.bytes().await.unwrap(), &b"abcdefghij"[..]);
    let resp = server
        .client
        .get(&url)
        .header("range", "bytes=-3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 7-9/10");
    let resp = server
        .client
        .get(&url)
        .header("range", "bytes=50-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], "bytes */10");
    let unsigned = url.split('?').next().unwrap();
    assert_eq!(
        server.client.get(unsigned).send().await.unwrap().status(),
        400
    );
    let escape = format!(
        "{}/objects/../keys/master.key?expires=9999999999&signature=00",
        server.base
    );
    let status = server.client.get(&escape).send().await.unwrap().status();
    assert!(status == 404 || status == 400 || status == 403, "{status}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let mut server = TestServer::start().await;
    let admin = server.admin_key();
    // A request whose body is still arriving when shutdown starts.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let request = server
        .client
        .post(server.url("/v1/tenants"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(body)
        .send();
    let in_flight = tokio::spawn(request);
    tx.send(Ok(br#"{"name": "#.to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopped.is_finished(),
        "server stopped before the in-flight request finished"
    );
    tx.send(Ok(br#""late"}"#.to_vec())).await.unwrap();
    drop(tx);
    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request answered");
    assert_eq!(resp.status(), 201);
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
    // New connections are refused once it has stopped.
    assert!(
        server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err()
    );
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn live_streams_are_created_listed_reset_and_deleted() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Acme").await;
    let (status, s) = server
        .call("POST", "/v1/live-streams", Some(&key), Some(json!({})))
        .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["status"], "idle");
    assert_eq!(s["ladder"], "default");
    assert_eq!(s["playback_policy"], "signed");
    assert_eq!(s["reconnect_window_s"], 60);
    assert_eq!(s["record"], true);
    assert_eq!(s["rtmp_url"], server.rtmp_url.as_str());
    assert!(s["stream_key"].as_str().unwrap().len() >= 32);
    let id = s["id"].as_str().unwrap();

    let (status, p) = server
        .call("POST", "/v1/live-streams", Some(&key), Some(json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 5, "record": false})))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        (
            p["ladder"].as_str(),
            p["playback_policy"].as_str(),
            p["record"].as_bool()
        ),
        (Some("passthrough"), Some("public"), Some(false))
    );

    for (body, needle) in [
        (json!({"ladder": "8k-hdr"}), "unknown ladder"),
        (json!({"reconnect_window_s": -1}), "reconnect_window_s"),
        (json!({"playback_policy": "secret"}), "playback_policy"),
        (json!({"recrod": true}), "unknown field"),
    ] {
        let (status, e) = server
            .call("POST", "/v1/live-streams", Some(&key), Some(body))
            .await;
        assert_eq!(status, 400, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{e}"
        );
    }

    let (_, list) = server
        .call("GET", "/v1/live-streams", Some(&key), None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    let (status, reset) = server
        .call(
            "POST",
            &format!("/v1/live-streams/{id}/reset-stream-key"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(reset["stream_key"], s["stream_key"]);
    assert_eq!(reset["playback_id"], s["playback_id"]);

    let (status, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": s["playback_id"], "expires_in": 0})),
        )
        .await;
    assert_eq!(status, 400, "{t}");
    let (status, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": s["playback_id"], "expires_in": 60, "viewer": "v1"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(t["token"].as_str().unwrap().split('.').count(), 3, "a JWT");

    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/v1/live-streams/{id}"),
                Some(&key),
                None
            )
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .call("GET", &format!("/v1/live-streams/{id}"), Some(&key), None)
            .await
            .0,
        404
    );
    // A deleted stream's playback id plays nothing.
    let (status, _) = server
        .call(
            "GET",
            &format!("/hls/{}/master.m3u8", s["playback_id"].as_str().unwrap()),
            None,
            None,
        )
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}
