//! Fetching client JWKS from registered `jwks_uri`s: size- and time-limited, no redirects,
//! cached for five minutes, one fetch per URI at a time, failures remembered for half a minute
//! (a client id is no secret: requests naming it must not turn into as many outbound fetches),
//! and fetched again for a key id the cached set lacks, at most every half minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sigil_core::oauth::client_auth::{FetchFrom, JwksFetcher};
use sigil_crypto::PublicJwks;
use tokio::sync::Mutex;

const TTL: Duration = Duration::from_secs(300);
/// How long a failed fetch is the answer, and the least age of a set fetched again for a kid.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const MAX_BYTES: usize = 64 * 1024;
const MAX_CACHED: usize = 10_000;

/// Reads a body chunk by chunk, refusing it as soon as it passes `max_bytes` (a large body is
/// never buffered whole).
async fn read_limited(mut resp: reqwest::Response, max_bytes: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(format!("the response is larger than {max_bytes} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .map_err(|_| "the fetch timed out".to_owned())?
        .map_err(|e| e.to_string())?
    {
        body.extend_from_slice(&chunk);
        if body.len() > max_bytes {
            return Err(format!("the response is larger than {max_bytes} bytes"));
        }
    }
    Ok(body)
}

#[derive(Debug)]
enum Fetched {
    Keys(Instant, PublicJwks),
    Failed(Instant, String),
}

#[derive(Debug)]
pub struct HttpJwksFetcher {
    http: Option<reqwest::Client>,
    /// [`RETRY_AFTER`], shorter in tests.
    retry_after: Duration,
    cache: Mutex<HashMap<String, Fetched>>,
    /// One lock per URI: concurrent requests wait for the one fetch and take its answer.
    fetching: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl HttpJwksFetcher {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .ok();
        Self {
            http,
            retry_after: RETRY_AFTER,
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// The remembered answer for `uri`, unless it is stale or lacks `kid` and may be refreshed.
    async fn remembered(&self, uri: &str, kid: Option<&str>) -> Option<Result<PublicJwks, String>> {
        match self.cache.lock().await.get(uri)? {
            Fetched::Keys(at, set) if at.elapsed() < TTL => {
                let knows_kid = kid.is_none_or(|k| set.keys.iter().any(|key| key.kid.as_deref() == Some(k)));
                (knows_kid || at.elapsed() < self.retry_after).then(|| Ok(set.clone()))
            }
            Fetched::Failed(at, why) if at.elapsed() < self.retry_after => Some(Err(why.clone())),
            _ => None,
        }
    }

    async fn download(&self, uri: &str, from: FetchFrom) -> Result<PublicJwks, String> {
        let pinned;
        let http = match from {
            FetchFrom::AnyHost => self.http.as_ref().ok_or("no HTTP client")?,
            FetchFrom::PublicHosts { allow_loopback } => {
                pinned = public_client(uri, allow_loopback).await?;
                &pinned
            }
        };
        let resp = http.get(uri).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{uri} answered {}", resp.status()));
        }
        let bytes = read_limited(resp, MAX_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

impl Default for HttpJwksFetcher {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl JwksFetcher for HttpJwksFetcher {
    async fn fetch(&self, uri: &str, kid: Option<&str>, from: FetchFrom) -> Result<PublicJwks, String> {
        // What one party may fetch is no answer for another: the policy is part of the key.
        let key = match from {
            FetchFrom::AnyHost => uri.to_owned(),
            FetchFrom::PublicHosts { .. } => format!("public {uri}"),
        };
        let key = key.as_str();
        if let Some(answer) = self.remembered(key, kid).await {
            return answer;
        }
        let gate = {
            let mut fetching = self.fetching.lock().await;
            if fetching.len() >= MAX_CACHED {
                fetching.retain(|_, g| Arc::strong_count(g) > 1);
            }
            Arc::clone(fetching.entry(key.to_owned()).or_default())
        };
        let _turn = gate.lock().await;
        // Whoever held the turn before may have fetched it already.
        if let Some(answer) = self.remembered(key, kid).await {
            return answer;
        }
        let result = self.download(uri, from).await;
        let entry = match &result {
            Ok(set) => Fetched::Keys(Instant::now(), set.clone()),
            Err(why) => Fetched::Failed(Instant::now(), why.clone()),
        };
        let mut cache = self.cache.lock().await;
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, f| match f {
                Fetched::Keys(at, _) => at.elapsed() < TTL,
                Fetched::Failed(at, _) => at.elapsed() < self.retry_after,
            });
        }
        if cache.len() < MAX_CACHED {
            cache.insert(key.to_owned(), entry);
        }
        result
    }
}

/// Fetches federated trust domains' bundles: no redirects, no proxy, at most 64 KB, five
/// seconds. The endpoint is the operator's choice (checked when it was added), so internal
/// addresses are allowed.
#[derive(Debug, Default)]
pub struct HttpBundleFetcher;

#[async_trait]
impl sigil_core::spiffe::federation::BundleFetcher for HttpBundleFetcher {
    async fn fetch_bundle(&self, url: &str) -> Result<Vec<u8>, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let resp = http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("the bundle endpoint is unreachable: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("the bundle endpoint answered {}", resp.status()));
        }
        read_limited(resp, 64 * 1024).await
    }
}

/// Fetches client metadata documents through [`public_client`], at most `max_bytes`.
#[derive(Debug, Default)]
pub struct HttpDocumentFetcher;

#[async_trait]
impl sigil_core::oauth::metadata_doc::DocumentFetcher for HttpDocumentFetcher {
    async fn fetch_document(
        &self,
        url: &str,
        max_bytes: usize,
        allow_loopback: bool,
    ) -> Result<(Vec<u8>, Option<Duration>), String> {
        let http = public_client(url, allow_loopback).await?;
        let resp = http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "the fetch timed out".to_owned()
                } else {
                    e.to_string()
                }
            })?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("the document URL answered {}", resp.status()));
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(cache_lifetime);
        let body = read_limited(resp, max_bytes).await?;
        Ok((body, max_age.flatten()))
    }
}

/// An HTTP client for `url` that connects only to a public address of its host (no private,
/// loopback, link-local or other special-use one, RFC 6890; loopback if allowed), pinned to the
/// checked address so DNS cannot change it in between. No redirects, no proxy, five seconds.
async fn public_client(url: &str, allow_loopback: bool) -> Result<reqwest::Client, String> {
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = u.host_str().ok_or("no host")?.trim_matches(['[', ']']).to_owned();
    let port = u.port_or_known_default().ok_or("no port")?;
    let addrs: Vec<std::net::SocketAddr> =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| "name resolution timed out".to_owned())?
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
    let first = *addrs.first().ok_or("the host has no address")?;
    if let Some(bad) = addrs
        .iter()
        .find(|a| sigil_types::special_use_address(a.ip()) && !(allow_loopback && a.ip().is_loopback()))
    {
        return Err(format!(
            "{host} resolves to a private or special-use address ({})",
            bad.ip()
        ));
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve(&host, first)
        .build()
        .map_err(|e| e.to_string())
}

/// `Cache-Control` → how long a response may be reused: `no-store`/`no-cache` → zero,
/// `max-age=N` → N seconds, anything else → no opinion.
fn cache_lifetime(header: &str) -> Option<Duration> {
    let mut max_age = None;
    for d in header.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            max_age = n.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    max_age
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// A JWKS endpoint that counts its requests and answers with whatever `body` holds then
    /// (`None`: 500), after `delay`.
    async fn jwks_endpoint(
        body: Arc<std::sync::Mutex<Option<String>>>,
        delay: Duration,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let (body, hits) = (Arc::clone(&body), Arc::clone(&counted));
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let answer = body.lock().unwrap().clone();
                    let reply = match answer {
                        Some(b) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                            b.len()
                        ),
                        None => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .into(),
                    };
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        (url, hits)
    }

    fn jwks_with(kid: &str) -> Option<String> {
        Some(format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"{kid}"}}]}}"#
        ))
    }

    /// One fetch serves concurrent requests; a failure is remembered; a kid the cached set lacks
    /// is fetched again, but not more often than `retry_after`.
    #[tokio::test]
    async fn jwks_fetches_are_shared_remembered_and_renewed_for_new_kids() {
        let body = Arc::new(std::sync::Mutex::new(jwks_with("k1")));
        let (url, hits) = jwks_endpoint(Arc::clone(&body), Duration::from_millis(200)).await;
        let fetcher = Arc::new(HttpJwksFetcher {
            retry_after: Duration::from_millis(400),
            ..HttpJwksFetcher::new()
        });
        let count = || hits.load(std::sync::atomic::Ordering::SeqCst);
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (f, u) = (Arc::clone(&fetcher), url.clone());
                tokio::spawn(async move { f.fetch(&u, Some("k1"), FetchFrom::AnyHost).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap().keys.len(), 1);
        }
        assert_eq!(count(), 1, "twenty requests, one fetch");
        // The client rotates to k2: not fetched again at once, then once the set is old enough.
        *body.lock().unwrap() = jwks_with("k2");
        let set = fetcher.fetch(&url, Some("k2"), FetchFrom::AnyHost).await.unwrap();
        assert_eq!((count(), set.keys[0].kid.as_deref()), (1, Some("k1")));
        tokio::time::sleep(Duration::from_millis(450)).await;
        let set = fetcher.fetch(&url, Some("k2"), FetchFrom::AnyHost).await.unwrap();
        assert_eq!((count(), set.keys[0].kid.as_deref()), (2, Some("k2")));
        assert_eq!(
            fetcher.fetch(&url, None, FetchFrom::AnyHost).await.unwrap().keys[0]
                .kid
                .as_deref(),
            Some("k2")
        );
        assert_eq!(count(), 2);

        // A failing endpoint is asked once per retry period, whatever the traffic.
        let (broken, broken_hits) = jwks_endpoint(Arc::new(std::sync::Mutex::new(None)), Duration::ZERO).await;
        for _ in 0..5 {
            assert!(fetcher.fetch(&broken, Some("k1"), FetchFrom::AnyHost).await.is_err());
        }
        assert_eq!(broken_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A registrant's jwks_uri on an internal address is never connected to, and the refusal
    /// is not an answer for the operator's own clients of the same URI.
    #[tokio::test]
    async fn registrants_jwks_uris_reach_public_hosts_only() {
        let body = Arc::new(std::sync::Mutex::new(jwks_with("k1")));
        let (url, hits) = jwks_endpoint(body, Duration::ZERO).await;
        let fetcher = HttpJwksFetcher::new();
        let public = FetchFrom::PublicHosts { allow_loopback: false };
        let refused = fetcher.fetch(&url, Some("k1"), public).await.unwrap_err();
        assert!(refused.contains("special-use"), "{refused}");
        let localhost = url.replace("127.0.0.1", "localhost");
        assert!(fetcher.fetch(&localhost, Some("k1"), public).await.is_err());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "never connected");
        assert!(fetcher.fetch(&url, Some("k1"), FetchFrom::AnyHost).await.is_ok());
        let dev = FetchFrom::PublicHosts { allow_loopback: true };
        assert!(HttpJwksFetcher::new().fetch(&url, Some("k1"), dev).await.is_ok());
    }

    #[test]
    fn cache_control_is_read() {
        assert_eq!(cache_lifetime("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(cache_lifetime("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_lifetime("public"), None);
    }
}
