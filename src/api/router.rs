//! Every route of the server, on one screen.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{delete, get, head, patch, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use super::{
    AppState, analytics, assets, audience, branding, carts, catalogue, chat, chat_moderation,
    cmcd_reports, cors, dash, dashboard, delivery, embed, health, idempotency, invoices, licenses,
    limits, live, objects, openapi, orders, player, provider_webhooks, revenue, security, stills,
    subscriptions, telemetry, tenants, uploads, webhook_endpoints, whep, whip,
};
use crate::error::ApiError;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/v1/tenants",
            post(tenants::create_tenant).get(tenants::list_tenants),
        )
        .route(
            "/v1/tenants/{id}",
            get(tenants::get_tenant).delete(tenants::delete_tenant),
        )
        .route(
            "/v1/tenants/{id}/api-keys",
            post(tenants::create_tenant_api_key),
        )
        .route(
            "/v1/tenants/{id}/tier",
            axum::routing::put(tenants::put_tier),
        )
        .route("/v1/tenant", get(tenants::current_tenant))
        .route(
            "/v1/api-keys",
            post(tenants::create_api_key).get(tenants::list_api_keys),
        )
        .route(
            "/v1/api-keys/{id}",
            get(tenants::get_api_key)
                .patch(tenants::update_api_key)
                .delete(tenants::revoke_api_key),
        )
        .route(
            "/v1/live-streams",
            post(live::create_live_stream).get(live::list_live_streams),
        )
        .route(
            "/v1/live-streams/{id}",
            get(live::get_live_stream).delete(live::delete_live_stream),
        )
        .route(
            "/v1/live-streams/{id}/reset-stream-key",
            post(live::reset_stream_key),
        )
        .route("/v1/playback-tokens", post(live::create_playback_token))
        .route(
            "/v1/signing-keys",
            post(security::create_signing_key).get(security::list_signing_keys),
        )
        .route(
            "/v1/signing-keys/{id}",
            axum::routing::delete(security::revoke_signing_key),
        )
        .route(
            "/v1/playback-ids/{playback_id}",
            patch(security::update_playback_rules),
        )
        .route(
            "/v1/entitlements",
            post(security::create_entitlement).get(security::list_entitlements),
        )
        .route(
            "/v1/entitlements/{id}",
            axum::routing::delete(security::revoke_entitlement),
        )
        .route("/v1/audit", get(security::list_audit))
        .route(
            "/v1/products",
            post(catalogue::create_product).get(catalogue::list_products),
        )
        .route("/v1/products/{id}", get(catalogue::get_product))
        .route(
            "/v1/prices",
            post(catalogue::create_price).get(catalogue::list_prices),
        )
        .route(
            "/v1/prices/{id}",
            get(catalogue::get_price).post(catalogue::update_price),
        )
        .route(
            "/v1/tax-rates",
            post(catalogue::create_tax_rate).get(catalogue::list_tax_rates),
        )
        .route(
            "/v1/discount-codes",
            post(catalogue::create_discount_code).get(catalogue::list_discount_codes),
        )
        .route(
            "/v1/customers",
            post(catalogue::create_customer).get(catalogue::list_customers),
        )
        .route("/v1/customers/{id}", get(catalogue::get_customer))
        .route("/v1/carts", post(carts::create_cart))
        .route("/v1/carts/{id}", get(carts::get_cart))
        .route("/v1/carts/{id}/items", post(carts::set_item))
        .route(
            "/v1/carts/{id}/discount",
            post(carts::apply_code).delete(carts::remove_code),
        )
        .route("/v1/carts/{id}/checkout", post(orders::checkout))
        .route("/v1/orders", get(orders::list_orders))
        .route("/v1/orders/{id}", get(orders::get_order))
        .route("/v1/orders/{id}/refunds", post(orders::refund))
        .route(
            "/v1/publishable-keys",
            post(orders::create_publishable_key).get(orders::list_publishable_keys),
        )
        .route(
            "/v1/publishable-keys/{id}",
            axum::routing::delete(orders::revoke_publishable_key),
        )
        .route("/v1/invoices", get(invoices::list))
        .route("/v1/invoices/{id}", get(invoices::get))
        .route(
            "/v1/webhook-endpoints",
            post(webhook_endpoints::create).get(webhook_endpoints::list),
        )
        .route(
            "/v1/webhook-endpoints/{id}",
            get(webhook_endpoints::get)
                .patch(webhook_endpoints::update)
                .delete(webhook_endpoints::delete),
        )
        .route(
            "/v1/webhook-endpoints/{id}/rotate-secret",
            post(webhook_endpoints::rotate_secret),
        )
        .route(
            "/v1/webhook-endpoints/{id}/deliveries",
            get(webhook_endpoints::deliveries),
        )
        .route(
            "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}",
            get(webhook_endpoints::delivery),
        )
        .route(
            "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
            post(webhook_endpoints::retry),
        )
        .route("/chat/{playback_id}", get(chat::connect))
        .route("/chat/{playback_id}/replay", get(chat_moderation::replay))
        .route(
            "/v1/live-streams/{id}/chat/messages",
            get(chat_moderation::list),
        )
        .route(
            "/v1/live-streams/{id}/chat/messages/{message_id}/hide",
            post(chat_moderation::hide),
        )
        .route(
            "/v1/live-streams/{id}/chat/bans",
            get(chat_moderation::list_bans).post(chat_moderation::create_ban),
        )
        .route(
            "/v1/live-streams/{id}/chat/bans/{ban_id}",
            delete(chat_moderation::lift_ban),
        )
        .route(
            "/v1/live-streams/{id}/chat/rules",
            get(chat_moderation::get_rules).put(chat_moderation::put_rules),
        )
        .route("/v1/subscriptions", get(subscriptions::list))
        .route("/v1/subscriptions/{id}/cancel", post(subscriptions::cancel))
        .route("/v1/payment-providers", get(orders::list_providers))
        .route(
            "/v1/payment-providers/{provider}",
            axum::routing::put(orders::put_provider),
        )
        .route(
            "/v1/webhooks/{provider}/{tenant_id}",
            post(provider_webhooks::receive)
                .layer(DefaultBodyLimit::max(provider_webhooks::MAX_BYTES)),
        )
        .route("/v1/webhook-events", get(provider_webhooks::list_events))
        .route(
            "/v1/webhook-events/{id}/replay",
            post(provider_webhooks::replay),
        )
        .route(
            "/v1/beacons",
            post(analytics::beacons)
                .options(analytics::beacons_preflight)
                .layer(DefaultBodyLimit::max(
                    crate::analytics::beacon::MAX_BYTES + 1,
                )),
        )
        .route(
            "/v1/cmcd",
            post(cmcd_reports::report)
                .options(analytics::beacons_preflight)
                .layer(DefaultBodyLimit::max(
                    crate::analytics::beacon::MAX_BYTES + 1,
                )),
        )
        .route("/v1/analytics/views", get(analytics::list_views))
        .route("/v1/analytics/views/{id}", get(analytics::get_view))
        .route("/v1/analytics/realtime", get(analytics::realtime))
        .route(
            "/v1/analytics/realtime/{playback_id}",
            get(audience::realtime_one),
        )
        .route("/v1/analytics/concurrency", get(audience::concurrency))
        .route("/v1/analytics/revenue", get(revenue::revenue))
        .route(
            "/v1/analytics/retention/{playback_id}",
            get(audience::retention),
        )
        .route(
            "/v1/analytics/metrics/{metric}/overall",
            get(analytics::overall),
        )
        .route(
            "/v1/analytics/metrics/{metric}/breakdown",
            get(analytics::breakdown),
        )
        .route(
            "/v1/analytics/metrics/{metric}/timeseries",
            get(analytics::timeseries),
        )
        .route(
            "/v1/assets",
            get(assets::list_assets)
                .post(uploads::multipart_upload)
                .layer(DefaultBodyLimit::max(
                    usize::try_from(state.jobs.config.uploads.max_size_bytes)
                        .unwrap_or(usize::MAX)
                        .saturating_add(64 * 1024),
                )),
        )
        .route("/v1/assets/{id}/events", get(assets::asset_events))
        .route("/v1/assets/{id}/subtitles", post(assets::add_subtitles))
        .route(
            "/v1/assets/{id}",
            get(assets::get_asset).delete(assets::delete_asset),
        )
        .route("/v1/direct-uploads", post(uploads::create_direct))
        .route(
            "/v1/direct-uploads/{id}/complete",
            post(uploads::complete_direct),
        )
        .route(
            "/v1/uploads",
            post(uploads::create).options(uploads::options),
        )
        .route(
            "/v1/uploads/{id}",
            head(uploads::head)
                .patch(uploads::patch)
                .delete(uploads::terminate)
                .options(uploads::options),
        )
        .route(
            "/hls/{playback_id}/master.m3u8",
            get(delivery::master_playlist),
        )
        .route(
            "/hls/{playback_id}/{rendition}/{file}",
            get(delivery::rendition_file),
        )
        .route(
            "/hls/{playback_id}/cmaf/master.m3u8",
            get(delivery::cmaf_master_playlist),
        )
        .route(
            "/hls/{playback_id}/cmaf/{rendition}/{file}",
            get(delivery::cmaf_rendition_file),
        )
        .route("/dash/{playback_id}/manifest.mpd", get(dash::manifest))
        .route(
            "/dash/{playback_id}/{rendition}/{file}",
            get(dash::fragment),
        )
        .route(
            "/dash/{playback_id}/cmaf/{rendition}/{file}",
            get(dash::cmaf_fragment),
        )
        .route("/time", get(dash::time))
        .route("/keys/{key_id}", get(delivery::content_key))
        .route("/licenses/clearkey/{playback_id}", post(licenses::clearkey))
        .route("/licenses/{system}/{playback_id}", post(licenses::proxy))
        .route(
            "/whip",
            post(whip::publish_with_bearer).options(whip::options),
        )
        .route(
            "/whip/{stream_key}",
            post(whip::publish_with_key).options(whip::options),
        )
        .route(
            "/whep/{playback_id}",
            post(whep::play).options(whip::options),
        )
        .route(
            "/whep/sessions/{id}",
            axum::routing::delete(whep::end_session)
                .patch(whep::patch_session)
                .options(whip::options),
        )
        .route(
            "/whip/sessions/{id}",
            axum::routing::delete(whip::end_session)
                .patch(whip::patch_session)
                .options(whip::options),
        )
        .route("/thumbnails/{file}", get(stills::thumbnail))
        .route("/storyboards/{file}", get(stills::storyboard))
        .route("/play/hls.min.js", get(player::hls_js))
        .route("/player/ferrocast-data.js", get(player::data_js))
        .route("/player/ferrocast-chat.js", get(player::chat_js))
        .route("/player/ferrocast-player.js", get(player::player_js))
        .route("/player/ferrocast-player.css", get(player::player_css))
        .route("/play/{playback_id}", get(player::player_page))
        .route("/embed/{playback_id}", get(player::embed_page))
        .route("/oembed", get(embed::oembed))
        .route("/v1/playback-ids/{playback_id}/embed", get(embed::snippet))
        .route(
            "/v1/branding",
            get(branding::get_branding).put(branding::set_branding),
        )
        .route("/objects/{*key}", get(objects::get_object))
        .route("/", get(dashboard::root))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/session", post(dashboard::sign_in_post))
        .route("/dashboard/logout", post(dashboard::sign_out))
        .route("/dashboard/{file}", get(dashboard::asset))
        .route("/dashboard/lib/{file}", get(dashboard::lib))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .route("/docs/{file}", get(openapi::docs_file));

    let request_id = HeaderName::from_static("x-request-id");
    api.fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this route".into())
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotent,
        ))
        .layer(middleware::from_fn(limits::headers))
        // Every route answers preflights and cross-origin requests (api/cors.rs), also for
        // methods it does not take; preflights are counted in the metrics like any request.
        .layer(middleware::from_fn(cors::cors))
        .layer(middleware::from_fn_with_state(state.clone(), telemetry::track))
        .layer(DefaultBodyLimit::max(state.jobs.config.http.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), RandomRequestId))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(),
                        request_id = %id, tenant = tracing::field::Empty)
                }))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
                })),
        )
        // Outermost: the answers made around `cors` (the deadline's 503, a panic's 500)
        // carry the cross-origin headers too.
        .layer(middleware::from_fn(cors::answers))
        .with_state(state)
}

/// Request ids are random UUIDs (v4) from the thread's CSPRNG: unlike `MakeRequestUuid`, no
/// `getrandom` system call per request, which showed in the delivery benchmark's profile.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        axum::http::HeaderValue::from_str(&id.to_string())
            .ok()
            .map(RequestId::new)
    }
}
