//! The OpenAPI 3 document, generated from the handlers' annotations, and the `/docs` page.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ApiError, ErrorBody};

use super::{
    AppState, Json, Path, analytics, assets, audience, branding, carts, catalogue, chat,
    chat_moderation, cmcd_reports, dash, dashboard, delivery, embed, escape_html, health, invoices,
    licenses, live, objects, orders, player, provider_webhooks, revenue, security, stills,
    subscriptions, tenants, uploads, webhook_endpoints, whep, whip,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Ferrocast API", description = "Live and on-demand video: ingest, transcoding, encrypted HLS, playback tokens."),
    paths(
        health::healthz, health::readyz, health::metrics,
        tenants::create_tenant, tenants::list_tenants, tenants::get_tenant, tenants::delete_tenant,
        tenants::create_tenant_api_key,
        tenants::current_tenant,
        tenants::create_api_key, tenants::list_api_keys, tenants::get_api_key,
        tenants::update_api_key, tenants::revoke_api_key,
        live::create_live_stream, live::list_live_streams, live::get_live_stream,
        live::delete_live_stream, live::reset_stream_key, live::create_playback_token,
        assets::get_asset, assets::list_assets, assets::delete_asset, assets::add_subtitles,
        security::create_signing_key, security::list_signing_keys, security::revoke_signing_key,
        security::update_playback_rules, security::create_entitlement,
        security::list_entitlements, security::revoke_entitlement, security::list_audit,
        analytics::beacons, cmcd_reports::report, analytics::list_views, analytics::get_view,
        analytics::overall, analytics::breakdown, analytics::timeseries, analytics::realtime,
        audience::concurrency, audience::retention, revenue::revenue,
        catalogue::create_product, catalogue::get_product, catalogue::list_products,
        catalogue::create_price, catalogue::get_price, catalogue::update_price, catalogue::list_prices,
        catalogue::create_tax_rate, catalogue::list_tax_rates,
        catalogue::create_discount_code, catalogue::list_discount_codes,
        catalogue::create_customer, catalogue::get_customer, catalogue::list_customers,
        carts::create_cart, carts::get_cart, carts::set_item, carts::apply_code, carts::remove_code,
        orders::put_provider, orders::list_providers, orders::checkout, orders::get_order,
        orders::list_orders, orders::refund, provider_webhooks::receive, tenants::put_tier,
        provider_webhooks::list_events, provider_webhooks::replay,
        subscriptions::list, subscriptions::cancel, orders::create_publishable_key,
        orders::list_publishable_keys, orders::revoke_publishable_key, invoices::list, invoices::get,
        webhook_endpoints::create, webhook_endpoints::list, webhook_endpoints::get,
        webhook_endpoints::update, webhook_endpoints::delete, webhook_endpoints::rotate_secret,
        webhook_endpoints::deliveries, webhook_endpoints::delivery, webhook_endpoints::retry,
        uploads::multipart_upload, uploads::options, uploads::create, uploads::head, uploads::patch,
        uploads::terminate, uploads::create_direct, uploads::complete_direct, assets::asset_events,
        delivery::master_playlist, delivery::rendition_file, delivery::cmaf_master_playlist, delivery::cmaf_rendition_file, delivery::content_key,
        dash::manifest, dash::fragment, dash::cmaf_fragment, dash::time,
        licenses::clearkey, licenses::proxy,
        stills::thumbnail, stills::storyboard, player::player_page, player::hls_js, player::data_js,
        player::chat_js, player::player_js, player::player_css, player::embed_page,
        embed::snippet, embed::oembed, branding::get_branding, branding::set_branding,
        audience::realtime_one,
        objects::get_object, whip::publish_with_bearer, whip::publish_with_key, whip::end_session,
        whip::patch_session, whep::play, whep::end_session, whep::patch_session,
        openapi_json, docs, docs_file, dashboard::root, dashboard::page, dashboard::sign_in_post,
        dashboard::sign_out, dashboard::asset, dashboard::lib, chat::connect, chat_moderation::list, chat_moderation::hide,
        chat_moderation::create_ban, chat_moderation::list_bans, chat_moderation::lift_ban,
        chat_moderation::get_rules, chat_moderation::put_rules, chat_moderation::replay,
    ),
    modifiers(&BearerKeys, &EveryOperation),
    tags(
        (name = "tenants", description = "Tenants, managed with the admin key"),
        (name = "api-keys", description = "A tenant's own API keys"),
        (name = "live", description = "Live streams and playback tokens"),
        (name = "assets", description = "Uploaded files and recorded broadcasts"),
        (name = "security", description = "Signing keys, playback rules, entitlements, key audit log"),
        (name = "analytics", description = "Player beacons in; views and their metrics out"),
        (name = "commerce", description = "Products, prices, tax rates, discount codes, customers and carts"),
        (name = "playback", description = "What players and viewers fetch: playlists, segments, keys, stills, WHEP, the player page"),
        (name = "webhooks", description = "Webhook endpoints: signed events out, delivery logs, retries"),
        (name = "chat", description = "Live chat: `GET /chat/{playback_id}` is a WebSocket of JSON text frames. \
The client sends `{\"type\": \"send\", \"text\"}` (1 to 500 characters; 3 in 2 s, then 10 s of silence; the stream's slow mode; \
only entitled viewers in entitled-only mode). A moderator also sends `{\"type\": \"hide\", \"id\"}`, \
`{\"type\": \"timeout\", \"id\", \"duration_s\"}` and `{\"type\": \"ban\", \"id\"}` (the id of the sender's message). \
The server sends `welcome` `{name, color, moderator, supporter, rules: {slow_mode_s, entitled_only}}`, `history` `{messages}` \
(the last 50 visible), `message` (a ChatMessageView), `hidden` `{id}`, `rules` `{slow_mode_s, entitled_only}`, \
`moderation` `{action: timeout | ban, name, until}` and `error` `{code: invalid | slow_down | slow_mode | banned | \
entitled_only | forbidden | unavailable | flooding, message, retry_after_s?, until?}`; it pings every 20 s. \
A reader that falls 256 messages behind is closed (1008) rather than slowing the room. A connection may send frames \
of any kind in a burst of 20, then 10 a second: the rest are dropped unread (told once, `flooding`), and after 200 dropped \
it is closed (1008); a frame over 8 KiB closes it."),
        (name = "dashboard", description = "The creator dashboard's pages and sign-in (it calls this API with its session)"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// What every operation shares, written once instead of on each: its path parameters (as
/// strings, required), and the error answers any of them can give: a malformed request (400),
/// a missing resource (404), a server fault (500) or a dependency down (503); with a
/// credential also 401 and 403, and with a tenant key 429 (the tier's rate limit); with a
/// body also 413 and 415; an authenticated `POST` also takes `Idempotency-Key` (and may
/// answer 409 for it). An operation's own description of a status wins.
struct EveryOperation;

impl Modify for EveryOperation {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};

        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names: Vec<String> = path
                .split('{')
                .skip(1)
                .filter_map(|p| p.split_once('}').map(|(n, _)| n.to_string()))
                .collect();
            let ops = [
                (false, &mut item.get),
                (false, &mut item.put),
                (true, &mut item.post),
                (false, &mut item.delete),
                (false, &mut item.patch),
                (false, &mut item.head),
            ];
            for (post, op) in ops {
                let Some(op) = op else { continue };
                let params = op.parameters.get_or_insert_with(Vec::new);
                for name in &names {
                    let declared = params
                        .iter()
                        .any(|p| &p.name == name && p.parameter_in == ParameterIn::Path);
                    if !declared {
                        params.push(
                            ParameterBuilder::new()
                                .name(name)
                                .parameter_in(ParameterIn::Path)
                                .required(Required::True)
                                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                                .build(),
                        );
                    }
                }
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let tenant_key = op
                    .security
                    .iter()
                    .flatten()
                    .any(|r| serde_json::to_value(r).is_ok_and(|v| v.get("api_key").is_some()));
                if post && secured {
                    let params = op.parameters.get_or_insert_with(Vec::new);
                    params.push(
                        ParameterBuilder::new()
                            .name("Idempotency-Key")
                            .parameter_in(ParameterIn::Header)
                            .required(Required::False)
                            .description(Some(
                                "Makes a retried request the same one: its first successful \
                                 answer is kept 24 h and given again (1 to 255 printable \
                                 characters)",
                            ))
                            .schema(Some(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .min_length(Some(1))
                                    .max_length(Some(255)),
                            ))
                            .build(),
                    );
                }
                let mut codes = vec![
                    ("400", "A malformed request: what is wrong"),
                    ("404", "No such resource (also another tenant's)"),
                    ("500", "A fault of the server: the log has the request id"),
                    ("503", "A dependency (database, storage) is down: try again"),
                ];
                if secured {
                    codes.extend([
                        ("401", "No credential, or one that proves nothing"),
                        ("403", "A valid credential that does not allow this"),
                    ]);
                }
                if tenant_key {
                    codes.push((
                        "429",
                        "Over the tier's rate limit: Retry-After says when to try again",
                    ));
                }
                if post && secured {
                    codes.push((
                        "409",
                        "A conflict: for one, the Idempotency-Key was used with another \
                         request, or its first request is still running",
                    ));
                }
                if op.request_body.is_some() {
                    codes.extend([
                        ("413", "The body is over the limit"),
                        ("415", "The body is not of the type this takes"),
                    ]);
                }
                for (code, description) in codes {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("admin_key", "Admin API key (fca_…)"),
            ("api_key", "Tenant API key (fck_…)"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(spec().clone())
}

/// The document as served: [`ApiDoc`], each JSON answer with an example (made once).
pub fn spec() -> &'static serde_json::Value {
    static SPEC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        let mut spec = serde_json::to_value(ApiDoc::openapi()).expect("the spec serializes");
        add_response_examples(&mut spec);
        spec
    })
}

/// Gives every JSON answer that has no example one made from its schema: each field's own
/// example or first allowed value if it has one, else a value of its type and format that
/// its name suggests (`…_at` a time, `…id` an id, `…url` a URL). Swagger UI and client
/// generators show them; each fits its schema.
fn add_response_examples(spec: &mut serde_json::Value) {
    let schemas = spec["components"]["schemas"].clone();
    let Some(paths) = spec["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            for (code, response) in responses.iter_mut() {
                if !code.starts_with('2') {
                    continue;
                }
                let Some(content) = response.get_mut("content").and_then(|c| c.as_object_mut())
                else {
                    continue;
                };
                for (media, c) in content.iter_mut() {
                    if media != "application/json"
                        || c.get("example").is_some()
                        || c.get("examples").is_some()
                    {
                        continue;
                    }
                    let Some(schema) = c.get("schema") else {
                        continue;
                    };
                    let example = example_of(schema, &schemas, "", 0);
                    c["example"] = example;
                }
            }
        }
    }
}

/// An example value of `schema` (`name`: the field it is for).
fn example_of(
    schema: &serde_json::Value,
    schemas: &serde_json::Value,
    name: &str,
    depth: usize,
) -> serde_json::Value {
    use serde_json::{Value, json};
    if depth > 8 {
        return Value::Null;
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = &schemas[r.rsplit('/').next().unwrap_or_default()];
        return example_of(target, schemas, name, depth + 1);
    }
    if let Some(e) = schema.get("example") {
        return e.clone();
    }
    if let Some(e) = schema.get("examples").and_then(|e| e.get(0)) {
        return e.clone();
    }
    if let Some(e) = schema.get("enum").and_then(|e| e.get(0)) {
        return e.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let alt = alts
                .iter()
                .find(|a| a.get("type") != Some(&json!("null")))
                .or(alts.first());
            return alt.map_or(Value::Null, |a| example_of(a, schemas, name, depth + 1));
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = serde_json::Map::new();
        for part in all {
            if let Value::Object(o) = example_of(part, schemas, name, depth + 1) {
                merged.extend(o);
            }
        }
        return Value::Object(merged);
    }
    let kind = match schema.get("type") {
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        Some(Value::String(k)) => k.as_str(),
        _ if schema.get("properties").is_some() => "object",
        _ => return Value::Null,
    };
    match kind {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (field, s) in props {
                    out.insert(field.clone(), example_of(s, schemas, field, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let item = schema.get("items").cloned().unwrap_or(Value::Null);
            Value::Array(vec![example_of(&item, schemas, name, depth + 1)])
        }
        "integer" => json!(if name.ends_with("bytes") {
            1_048_576
        } else {
            1
        }),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "string" => json!(example_string(schema, name)),
        _ => Value::Null,
    }
}

/// A string for a field called `name` of `schema`'s format.
fn example_string(schema: &serde_json::Value, name: &str) -> String {
    let format = schema.get("format").and_then(|f| f.as_str()).unwrap_or("");
    let n = name.to_ascii_lowercase();
    let s = if format == "date-time" || n.ends_with("_at") || n.ends_with("_end") {
        "2026-12-07T09:30:00.000Z"
    } else if n == "playback_id" || n.ends_with("playback_id") {
        "8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8"
    } else if n == "id" || n.ends_with("_id") || n == "kid" {
        "01a24fc2-ec60-72dd-b240-8899426865e6"
    } else if n == "url" || n.ends_with("_url") {
        "https://video.example.com/v1/example"
    } else if n == "currency" {
        "eur"
    } else if n == "country" {
        "FR"
    } else if n.contains("email") {
        "fan@example.com"
    } else if n == "secret" {
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    } else if n.contains("token") {
        "eyJhbGciOiJFUzI1NiIsImtpZCI6IjAxYTI0In0.eyJzdWIiOiI4ZjJjIn0.c2lnbmF0dXJl"
    } else if n.contains("key") {
        "fck_mZnSJ0RSK9q4w_hrnX237d6p1n-_aYu4hAunmfTn"
    } else if n == "name" {
        "Example"
    } else {
        "text"
    };
    s.to_string()
}

/// Swagger UI's files (npm `swagger-ui-dist`), served by Ferrocast itself: no CDN.
#[derive(Clone)]
pub struct DocsUi {
    pub bundle: bytes::Bytes,
    pub css: bytes::Bytes,
}

/// What /docs may load and run: its own files, and calls to this server.
const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; frame-ancestors 'none'";

/// `GET /docs`: the interactive explorer (Swagger UI over `/openapi.json`: every route with
/// its schemas and examples, and "Try it out" with an API key), or, where Swagger UI is not
/// installed, a plain list of the routes.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, content_type = "text/html", body = String)))]
pub async fn docs(State(state): State<AppState>) -> Response {
    let page = if state.docs_ui.is_some() {
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Ferrocast API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body></html>"#
            .to_string()
    } else {
        route_list()
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DOCS_CSP),
        ],
        page,
    )
        .into_response()
}

/// `GET /docs/{file}`: Swagger UI's bundle and stylesheet, and the page's start script.
#[utoipa::path(get, path = "/docs/{file}", tag = "operations",
    responses((status = 200, content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, body = ErrorBody)))]
pub async fn docs_file(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let Some(ui) = &state.docs_ui else {
        return ApiError::NotFound("Swagger UI is not installed on this server".into())
            .into_response();
    };
    let (content_type, body) = match file.as_str() {
        "swagger-ui-bundle.js" => ("text/javascript", ui.bundle.clone()),
        "swagger-ui.css" => ("text/css", ui.css.clone()),
        "init.js" => (
            "text/javascript",
            bytes::Bytes::from_static(INIT_JS.as_bytes()),
        ),
        _ => return ApiError::NotFound("no such file".into()).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

const INIT_JS: &str = r##"window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#ui",
  deepLinking: true,
  displayRequestDuration: true,
  showExtensions: true,
  tryItOutEnabled: false,
  validatorUrl: null,
});
"##;

/// The routes as a plain table, when Swagger UI is not installed.
fn route_list() -> String {
    let spec = ApiDoc::openapi();
    let mut rows = String::new();
    for (path, item) in &spec.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                let summary = op.summary.clone().unwrap_or_default();
                rows.push_str(&format!(
                    "<tr><td><code>{method}</code></td><td><code>{}</code></td><td>{}</td></tr>\n",
                    escape_html(path),
                    escape_html(&summary)
                ));
            }
        }
    }
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Ferrocast API</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}td{{padding:.2rem .8rem}}</style></head>
<body>
<h1>Ferrocast API</h1>
<p>Machine-readable spec: <a href="/openapi.json">/openapi.json</a>. Authenticate with
<code>Authorization: Bearer &lt;key&gt;</code>. The interactive explorer needs Swagger UI:
run <code>make</code> (it installs swagger-ui-dist from npm).</p>
<table>{rows}</table>
</body></html>"#
    )
}
