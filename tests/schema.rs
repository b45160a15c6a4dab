//! The API against its own OpenAPI document: Schemathesis (PyPI) runs its examples, coverage
//! and fuzzing phases on every operation of `/openapi.json` on a live server, and must find
//! no 5xx, no status code the document does not list, no response that breaks its schema,
//! no wrong `Content-Type` and no undocumented header shape.
//!
//! The seed is fixed so `make test` is repeatable; `SCHEMATHESIS_SEED` and
//! `SCHEMATHESIS_MAX_EXAMPLES` explore further. Every operation is run but the progress
//! stream of an asset (`GET /v1/assets/{id}/events`, which lasts while the asset processes).

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_the_openapi_document_does_not_allow() {
    let server = TestServer::start_with(|c| {
        // Thousands of requests from one key: the tier's limit is not what is tested here.
        c.rate_limits.default_tier = "enterprise".into();
        c.rate_limits.enterprise_per_min = 10_000_000;
        // The files it uploads are queued, not transcoded: garbage takes a worker's time.
        c.jobs.concurrency = 0;
    })
    .await;
    let (_, key) = server.create_tenant("Fuzzed").await;
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261207".into());
    let examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "20".into());
    let python = common::fakes::python();
    let schemathesis = std::path::Path::new(&python).with_file_name("schemathesis");
    let schema = server.url("/openapi.json");
    let used_seed = seed.clone();
    // Schemathesis keeps a cache where it runs: a folder of its own, not the checkout.
    let workdir = tempfile::tempdir().unwrap();
    let cwd = workdir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        common::output_within(
            Command::new(&schemathesis)
                .current_dir(&cwd)
                .env(
                    "PYTHONPATH",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fakes"),
                )
                .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
                .env("NO_COLOR", "1")
                .args(["run", &schema])
                .args(["--phases", "examples,coverage,fuzzing"])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,\
                     response_schema_conformance,response_headers_conformance",
                ])
                .args(["--header", &format!("Authorization: Bearer {key}")])
                .args(["--max-examples", &examples, "--seed", &seed])
                // An asset's progress stream lasts as long as its processing (tests/vod.rs
                // reads it to the end); a fuzzer waiting for it to end would wait forever.
                .args(["--exclude-path", "/v1/assets/{id}/events"])
                .args(["--request-timeout", "20", "--no-color"]),
            Duration::from_secs(480),
            "schemathesis (make py-deps installs it)",
        )
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems (seed {used_seed}):\n{text}"
    );
    // It ran every operation, through every phase.
    assert!(
        text.contains("Selected: ") && text.contains("✅ Fuzzing") && !text.contains("🚫"),
        "{text}"
    );
    server.stop().await;
}
