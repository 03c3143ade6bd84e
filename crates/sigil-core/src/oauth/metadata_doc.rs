//! OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-01, as the
//! MCP authorization specification uses them): a `client_id` that is an https URL names a JSON
//! document, fetched on use, that describes the client. Such clients have no secret: they are
//! public (`none`) or prove a key (`private_key_jwt`). All of them act as the one agent the
//! operator configures, whose ceiling bounds what any of them can get.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::client::{ClientAuthMethod, OAuthClient};
use super::error::OAuthError;
use super::service::OAuthService;
use crate::model::IdentityRef;

/// §6.6 recommends 5 KB.
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
const MIN_CACHE: Duration = Duration::from_secs(60);
const MAX_CACHE: Duration = Duration::from_secs(3600);
const DEFAULT_CACHE: Duration = Duration::from_secs(300);
const MAX_CACHED: usize = 10_000;
/// Documents fetched at once. Anyone can name any URL at `/authorize`; beyond this many
/// fetches in flight a new URL is refused at once rather than opening yet more connections.
const MAX_FETCHES_IN_FLIGHT: usize = 16;

/// Fetches a document over HTTP: no redirects, bounded size and time, and never from a
/// private or special-use address (§6.5) unless loopback is allowed (local development).
#[async_trait]
pub trait DocumentFetcher: Send + Sync + std::fmt::Debug {
    /// The body, and how long it may be cached by its `Cache-Control` (`Some(ZERO)`: not at all).
    async fn fetch_document(
        &self,
        url: &str,
        max_bytes: usize,
        allow_loopback: bool,
    ) -> Result<(Vec<u8>, Option<Duration>), String>;
}

/// Metadata documents the server accepts, and the agent their clients act as.
#[derive(Debug, Clone, Default)]
pub struct MetadataDocuments {
    /// The agent (name or id) every metadata-document client belongs to; `None`: not accepted.
    pub identity: Option<String>,
    /// Accept `http://127.0.0.1`/`localhost` documents (development and tests only).
    pub allow_loopback: bool,
}

type Fetched = Result<(Vec<u8>, Option<Duration>), String>;

/// Recently fetched clients, and the fetches under way: requests naming a URL that is being
/// fetched wait for that fetch instead of starting their own, so a burst of sign-ins by one new
/// client costs its host one request.
#[derive(Debug)]
pub(super) struct DocumentCache {
    clients: Mutex<HashMap<String, (Instant, OAuthClient)>>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Fetched>>>>,
    fetches: tokio::sync::Semaphore,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self {
            clients: Mutex::default(),
            in_flight: Mutex::default(),
            fetches: tokio::sync::Semaphore::new(MAX_FETCHES_IN_FLIGHT),
        }
    }
}

impl DocumentCache {
    fn cached(&self, id: &str) -> Option<OAuthClient> {
        let cache = self.clients.lock().ok()?;
        let (until, client) = cache.get(id)?;
        (*until > Instant::now()).then(|| client.clone())
    }

    fn remember(&self, id: &str, client: &OAuthClient, ttl: Duration) {
        let Ok(mut cache) = self.clients.lock() else { return };
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (until, _)| *until > Instant::now());
        }
        if cache.len() < MAX_CACHED {
            cache.insert(id.to_owned(), (Instant::now() + ttl, client.clone()));
        }
    }

    /// Fetches `url` once for everyone asking at the same time; refused while
    /// [`MAX_FETCHES_IN_FLIGHT`] other documents are being fetched.
    async fn fetch(&self, fetcher: &dyn DocumentFetcher, url: &str, allow_loopback: bool) -> Fetched {
        let shared = match self.in_flight.lock() {
            Ok(mut m) => Arc::clone(m.entry(url.to_owned()).or_default()),
            Err(_) => Arc::default(),
        };
        let fetched = shared
            .get_or_init(|| async {
                let Ok(_permit) = self.fetches.try_acquire() else {
                    return Err(format!(
                        "{MAX_FETCHES_IN_FLIGHT} other documents are being fetched; try again shortly"
                    ));
                };
                fetcher.fetch_document(url, MAX_DOCUMENT_BYTES, allow_loopback).await
            })
            .await
            .clone();
        if let Ok(mut m) = self.in_flight.lock()
            && m.get(url).is_some_and(|f| Arc::ptr_eq(f, &shared))
        {
            m.remove(url);
        }
        fetched
    }
}

/// Whether a client_id names a metadata document (rather than a registered client).
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// §3: https, a path, no fragment, no userinfo, no dot segments; http only on loopback when
/// allowed.
fn check_url(id: &str, allow_loopback: bool) -> Result<(), String> {
    if id.len() > 2048 {
        return Err("the client_id URL is too long".into());
    }
    let u = url::Url::parse(id).map_err(|e| format!("the client_id is not a URL: {e}"))?;
    let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match u.scheme() {
        "https" => {}
        "http" if allow_loopback && loopback => {}
        _ => return Err("a client_id URL must be https".into()),
    }
    if u.fragment().is_some() || !u.username().is_empty() || u.password().is_some() {
        return Err("a client_id URL has no fragment or user info".into());
    }
    if u.path().len() <= 1 || sigil_types::has_dot_segment(id) {
        return Err("a client_id URL needs a path without dot segments".into());
    }
    refuse_internal_literal(&u, allow_loopback)
}

/// An address written in a URL someone else gave (a metadata document's, a registrant's
/// `jwks_uri`) can be refused openly, since the caller wrote it; what a name resolves to is
/// checked at fetch time and reported only in the log.
pub(super) fn refuse_internal_literal(u: &url::Url, allow_loopback: bool) -> Result<(), String> {
    let literal = match u.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) if !allow_loopback && is_loopback_name(d) => {
            return Err(format!("{d} is a loopback name"));
        }
        _ => None,
    };
    if let Some(ip) = literal
        && sigil_types::special_use_address(ip)
        && !(allow_loopback && ip.is_loopback())
    {
        return Err(format!("{ip} is a private or special-use address"));
    }
    Ok(())
}

/// `localhost` and the names under it (RFC 6761 §6.3), also written fully qualified
/// (`localhost.`): all loopback.
fn is_loopback_name(domain: &str) -> bool {
    let name = domain.strip_suffix('.').unwrap_or(domain).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn strings(doc: &Map<String, Value>, field: &str) -> Result<Vec<String>, String> {
    match doc.get(field) {
        None => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{field} must hold strings"))
            })
            .collect(),
        Some(_) => Err(format!("{field} must be an array")),
    }
}

/// Checks a fetched document (§4.1 and the MCP profile) and turns it into a client of `identity`.
fn client_from_document(
    id: &str,
    body: &[u8],
    identity: &crate::model::Identity,
    id_token_algs: &[sigil_crypto::Algorithm],
    now: sigil_types::Timestamp,
) -> Result<OAuthClient, String> {
    let doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("the document is not a JSON object: {e}"))?;
    if doc.get("client_id").and_then(Value::as_str) != Some(id) {
        return Err("the document's client_id is not its URL".into());
    }
    if doc
        .get("client_name")
        .and_then(Value::as_str)
        .is_none_or(|n| n.is_empty() || n.chars().count() > 256)
    {
        return Err("the document needs a client_name of 1 to 256 characters".into());
    }
    if doc.contains_key("client_secret") || doc.contains_key("client_secret_expires_at") {
        return Err("a metadata document carries no client_secret".into());
    }
    super::client::check_id_token_alg(&doc, id_token_algs)?;
    let method = match doc.get("token_endpoint_auth_method").and_then(Value::as_str) {
        None | Some("none") => ClientAuthMethod::None,
        Some("private_key_jwt") => ClientAuthMethod::PrivateKeyJwt,
        Some(other) => {
            return Err(format!(
                "token_endpoint_auth_method {other} is not allowed for a metadata document"
            ));
        }
    };
    let redirect_uris = strings(&doc, "redirect_uris")?;
    if redirect_uris.is_empty() || redirect_uris.len() > 20 {
        return Err("the document needs 1 to 20 redirect_uris".into());
    }
    for u in &redirect_uris {
        super::client::check_redirect_uri(u)?;
    }
    let jwks = doc
        .get("jwks")
        .map(|j| serde_json::from_value::<sigil_crypto::PublicJwks>(j.clone()).map_err(|e| format!("jwks: {e}")))
        .transpose()?;
    // Keys must be in the document: a `jwks_uri` would make Sigil fetch a second URL of the
    // client's choosing on every assertion (draft §6.5 asks not to fetch such URLs).
    if doc.contains_key("jwks_uri") {
        return Err("give the keys as jwks in the document; jwks_uri is not fetched".into());
    }
    let jwks_uri: Option<String> = None;
    if method == ClientAuthMethod::PrivateKeyJwt {
        super::client::check_key_source(jwks.as_ref(), jwks_uri.as_deref(), false)?;
    } else if jwks.is_some() || jwks_uri.is_some() {
        return Err("only a private_key_jwt client has jwks or jwks_uri".into());
    }
    Ok(OAuthClient {
        client_id: id.to_owned(),
        identity_id: identity.id.clone(),
        auth_method: method,
        jwks,
        jwks_uri,
        secret_hash: None,
        dpop_required: doc
            .get("dpop_bound_access_tokens")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        registration_token_hash: None,
        metadata: Some(Value::Object(doc)),
        redirect_uris,
        id_jag_audiences: Vec::new(),
        created_at: now,
        created_by: "client metadata document".into(),
        version: 0,
    })
}

impl OAuthService {
    /// A client named by a metadata document URL: from the cache, or fetched and checked.
    /// Failures are `invalid_client` naming the reason; they are not cached (§4.4).
    pub(super) async fn document_client(&self, id: &str) -> Result<OAuthClient, OAuthError> {
        let fail = |why: String| {
            tracing::info!(client_id = id, reason = why, "client metadata document refused");
            OAuthError::invalid_client(format!("client metadata document: {why}"))
        };
        let identity_name = self
            .cfg
            .metadata_documents
            .identity
            .as_deref()
            .ok_or_else(|| fail("this server does not accept client metadata documents".into()))?;
        check_url(id, self.cfg.metadata_documents.allow_loopback).map_err(fail)?;
        if let Some(client) = self.documents_cache.cached(id) {
            return Ok(client);
        }
        let identity_ref = IdentityRef::parse(identity_name).map_err(|e| fail(e.to_string()))?;
        let identity = self
            .reads
            .identity(&identity_ref)
            .await?
            .ok_or_else(|| fail(format!("the configured agent {identity_name} does not exist")))?;
        let (body, max_age) = self
            .documents_cache
            .fetch(self.documents.as_ref(), id, self.cfg.metadata_documents.allow_loopback)
            .await
            .map_err(|why| {
                // The details (name resolution, address class, connection errors, status) go to
                // the log only: told to whoever names a URL, they would make /authorize a probe of
                // which hosts resolve and answer.
                tracing::info!(
                    client_id = id,
                    reason = why,
                    "client metadata document could not be fetched"
                );
                OAuthError::invalid_client(
                    "client metadata document: it could not be fetched (the server log says why)",
                )
            })?;
        let client = client_from_document(id, &body, &identity, &self.keys.id_token_algorithms(), self.clock.now())
            .map_err(fail)?;
        let ttl = max_age.map_or(DEFAULT_CACHE, |a| a.clamp(Duration::ZERO, MAX_CACHE));
        if ttl >= MIN_CACHE {
            self.documents_cache.remember(id, &client, ttl);
        }
        Ok(client)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn document_urls_follow_section_3() {
        assert!(check_url("https://app.example.com/client.json", false).is_ok());
        for bad in [
            "https://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/a/../b",
            "https://app.example.com/a/%2E%2E/b",
            "https://app.example.com/a/.%2e/b",
            "https://app.example.com/%2e/b",
            "https://user@app.example.com/c",
            "https://app.example.com/c#x",
            "http://app.example.com/c",
            "http://127.0.0.1:9/c",
            "https://h.example?x=/a",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9/c", true).is_ok());
    }

    #[test]
    fn loopback_names_are_refused_however_written() {
        for bad in [
            "https://localhost/c",
            "https://LocalHost./c",
            "https://app.localhost/c",
            "https://app.localhost./c",
        ] {
            let u = url::Url::parse(bad).unwrap();
            assert!(refuse_internal_literal(&u, false).is_err(), "{bad}");
        }
        for good in ["https://localhost.example.com/c", "https://notlocalhost/c"] {
            let u = url::Url::parse(good).unwrap();
            assert!(refuse_internal_literal(&u, false).is_ok(), "{good}");
        }
    }

    /// Answers after `release` is notified, counting the fetches it was asked for.
    #[derive(Debug, Default)]
    struct HeldFetcher {
        calls: std::sync::atomic::AtomicUsize,
        release: tokio::sync::Notify,
    }

    #[async_trait]
    impl DocumentFetcher for HeldFetcher {
        async fn fetch_document(&self, url: &str, _: usize, _: bool) -> Fetched {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.release.notified().await;
            Ok((url.as_bytes().to_vec(), None))
        }
    }

    #[tokio::test]
    async fn one_fetch_serves_every_request_for_the_same_document_and_fetches_are_capped() {
        use std::sync::atomic::Ordering::SeqCst;
        let cache = Arc::new(DocumentCache::default());
        let fetcher = Arc::new(HeldFetcher::default());
        let urls = std::iter::repeat_n("https://a.example/c".to_owned(), 8)
            .chain((1..MAX_FETCHES_IN_FLIGHT).map(|i| format!("https://a.example/{i}")));
        let mut tasks = tokio::task::JoinSet::new();
        for url in urls {
            let (cache, fetcher) = (Arc::clone(&cache), Arc::clone(&fetcher));
            tasks.spawn(async move { cache.fetch(fetcher.as_ref(), &url, false).await });
        }
        // One fetch per distinct URL, all held: the cap is reached.
        while fetcher.calls.load(SeqCst) < MAX_FETCHES_IN_FLIGHT {
            tokio::task::yield_now().await;
        }
        let refused = cache
            .fetch(fetcher.as_ref(), "https://a.example/one-too-many", false)
            .await;
        assert!(refused.unwrap_err().contains("being fetched"));
        fetcher.release.notify_waiters();
        let results = tasks.join_all().await;
        assert_eq!(fetcher.calls.load(SeqCst), MAX_FETCHES_IN_FLIGHT, "one fetch per URL");
        assert!(results.iter().all(Result::is_ok));
        assert!(
            cache.in_flight.lock().unwrap().is_empty(),
            "finished fetches are forgotten"
        );
    }
}
