//! The OpenAPI 3 document, generated from the handlers' annotations, and the `/docs` page.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;

use super::{
    AppState, Json, Path, analytics, assets, audience, carts, catalogue, cmcd_reports, health,
    invoices, live, orders, provider_webhooks, revenue, security, subscriptions, tenants,
    webhook_endpoints,
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
        catalogue::create_price, catalogue::get_price, catalogue::list_prices,
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
        (name = "webhooks", description = "Webhook endpoints: signed events out, delivery logs, retries"),
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

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A readable page of every operation, rendered here so it works offline; the interactive
/// Redoc viewer replaces it when the browser can load it.
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
                    escape(path),
                    escape(&summary)
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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
