//! The HTTP adapter: routes, extractors, and the one table that turns errors into responses.

mod admin_audit;
mod admin_clients;
mod admin_entries;
mod admin_identities;
mod admin_issuers;
mod admin_keys;
mod admin_policies;
mod admin_resources;
mod admin_users;
mod authorize;
mod authzen;
mod cors;
mod error;
mod extract;
mod health;
mod middleware;
mod node_api;
mod oauth;
mod query;
mod register;
mod strict_json;
mod userinfo;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use error::ApiError;

use crate::app::App;

/// The shared state every handler receives.
pub type State = axum::extract::State<Arc<App>>;

/// Builds the whole HTTP API. Tests call this directly (no socket needed).
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.max_body_bytes;
    let tls = app.config.tls.is_some();
    let admin = Router::new()
        .route("/users", get(admin_users::list).post(admin_users::create))
        .route(
            "/users/{user}",
            get(admin_users::show)
                .patch(admin_users::update)
                .delete(admin_users::delete),
        )
        .route("/users/{user}/password", axum::routing::put(admin_users::set_password))
        .route(
            "/agents",
            get(admin_identities::list_agents).post(admin_identities::create_agent),
        )
        .route(
            "/agents/{name}",
            get(admin_identities::show_agent).patch(admin_identities::update_agent),
        )
        .route("/agents/{name}/{action}", post(admin_identities::change_agent_status))
        .route(
            "/workloads",
            get(admin_identities::list_workloads).post(admin_identities::create_workload),
        )
        .route(
            "/workloads/{name}",
            get(admin_identities::show_workload).patch(admin_identities::update_workload),
        )
        .route(
            "/workloads/{name}/{action}",
            post(admin_identities::change_workload_status),
        )
        .route("/resources", get(admin_resources::list).post(admin_resources::create))
        .route(
            "/resources/{resource}",
            get(admin_resources::show)
                .patch(admin_resources::update)
                .delete(admin_resources::delete),
        )
        .route("/resources/{resource}/metadata", get(admin_resources::metadata))
        .route("/keys", get(admin_keys::list))
        .route("/keys/rotate", post(admin_keys::rotate))
        .route("/clients", get(admin_clients::list).post(admin_clients::create))
        .route("/clients/{id}", get(admin_clients::show).delete(admin_clients::delete))
        .route("/tokens/revoke", post(admin_clients::revoke))
        .route(
            "/registration-tokens",
            get(admin_clients::list_registration_tokens).post(admin_clients::create_registration_token),
        )
        .route(
            "/registration-tokens/{id}",
            axum::routing::delete(admin_clients::revoke_registration_token),
        )
        .route("/trusted-issuers", get(admin_issuers::list).post(admin_issuers::create))
        .route("/trusted-issuers/{id}", axum::routing::delete(admin_issuers::delete))
        .route("/entries", get(admin_entries::list).post(admin_entries::create))
        .route(
            "/entries/{id}",
            get(admin_entries::show)
                .put(admin_entries::update)
                .delete(admin_entries::delete),
        )
        .route("/federations", get(node_api::federations).post(node_api::federate))
        .route(
            "/federations/{trust_domain}",
            axum::routing::delete(node_api::unfederate),
        )
        .route("/authorities", get(node_api::authorities))
        .route("/authorities/{step}", post(node_api::rotate))
        .route("/nodes", get(node_api::list))
        .route("/nodes/join-tokens", post(node_api::create_join_token))
        .route("/nodes/ban", post(node_api::ban))
        .route("/tokens/introspect", post(admin_clients::introspect))
        .route("/policies", get(admin_policies::list).post(admin_policies::upload))
        .route("/policies/rollback", post(admin_policies::rollback))
        .route("/policies/explain", post(admin_policies::explain))
        .route("/policies/{version}", get(admin_policies::show))
        .route("/policies/{version}/activate", post(admin_policies::activate))
        .route("/audit/records", get(admin_audit::search))
        .route("/audit/leaves", get(admin_audit::leaves))
        .route("/audit/base", get(admin_audit::base))
        .route("/audit/checkpoint", get(admin_audit::latest_checkpoint))
        .route("/audit/checkpoints", get(admin_audit::checkpoints))
        .route("/audit/proof/inclusion", get(admin_audit::inclusion))
        .route("/audit/proof/consistency", get(admin_audit::consistency))
        .route("/audit/trace/{id}", get(admin_audit::trace));

    // What a browser-based client fetches itself (see `cors`).
    let browser = Router::new()
        .route("/.well-known/jwks.json", get(health::jwks))
        .route("/.well-known/oauth-authorization-server", get(oauth::metadata))
        .route("/.well-known/openid-configuration", get(oauth::metadata))
        .route("/token", post(oauth::token))
        .route("/revoke", post(oauth::revoke))
        .route("/register", post(register::register))
        .route("/userinfo", get(userinfo::userinfo).post(userinfo::userinfo))
        .route(
            "/register/{client_id}",
            get(register::read).put(register::update).delete(register::delete),
        )
        // Set before the layer so that a preflight (OPTIONS) reaches CORS instead of the 405.
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(cors::browser_clients());

    Router::new()
        .nest("/admin/v1", admin)
        .merge(browser)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/spiffe/bundle", get(health::spiffe_bundle))
        .route("/spiffe/v1/node/attest", post(node_api::attest))
        .route("/spiffe/v1/node/renew", post(node_api::renew))
        .route("/spiffe/v1/node/entries", get(node_api::entries))
        .route("/spiffe/v1/node/x509-svids", post(node_api::x509_svids))
        .route("/spiffe/v1/node/jwt-svids", post(node_api::jwt_svid))
        .route("/spiffe/v1/node/denials", post(node_api::denial))
        .route("/.well-known/authzen-configuration", get(authzen::metadata))
        .route("/access/v1/evaluation", post(authzen::evaluation))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route("/authorize", get(authorize::start).post(authorize::start_posted))
        .route("/authorize/login", post(authorize::login))
        .route("/authorize/consent", post(authorize::consent))
        .route("/introspect", post(oauth::introspect))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(tls, middleware::hygiene))
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(app)
}
