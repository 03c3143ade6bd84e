//! Fetching client JWKS from registered `jwks_uri`s: size- and time-limited, no redirects,
//! cached for five minutes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sigil_core::oauth::client_auth::JwksFetcher;
use sigil_crypto::PublicJwks;
use tokio::sync::Mutex;

const TTL: Duration = Duration::from_secs(300);
const MAX_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct HttpJwksFetcher {
    http: Option<reqwest::Client>,
    cache: Mutex<HashMap<String, (Instant, PublicJwks)>>,
}

impl HttpJwksFetcher {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok();
        Self {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for HttpJwksFetcher {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl JwksFetcher for HttpJwksFetcher {
    async fn fetch(&self, uri: &str) -> Result<PublicJwks, String> {
        if let Some((at, set)) = self.cache.lock().await.get(uri)
            && at.elapsed() < TTL
        {
            return Ok(set.clone());
        }
        let http = self.http.as_ref().ok_or("no HTTP client")?;
        let resp = http.get(uri).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{uri} answered {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if bytes.len() > MAX_BYTES {
            return Err("JWKS too large".into());
        }
        let set: PublicJwks = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        self.cache
            .lock()
            .await
            .insert(uri.to_owned(), (Instant::now(), set.clone()));
        Ok(set)
    }
}
