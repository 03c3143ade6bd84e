//! The agent's state and its conversation with the server: keeping its own SVID renewed,
//! syncing entries, workload SVIDs and the bundle into the cache, and minting JWT-SVIDs on
//! demand.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sigil_proto::node::{DenialReport, JwtSvidRequest, SvidRequest, WorkloadInfo};
use zeroize::Zeroizing;

use crate::attestor::Attestor;
use crate::cache::{Bundle, Cache, Snapshot, WorkloadSvid};
use crate::client::{ClientError, NodeClient, decode_b64, unix_now};
use crate::identity::NodeIdentity;

/// The server signs at most this many SVIDs per request.
const BATCH: usize = 100;
/// One denial report per workload (uid, executable) per this interval.
const DENIAL_REPORT_INTERVAL: Duration = Duration::from_secs(60);

type WorkloadKey = (Option<u32>, Option<String>);

#[derive(Debug)]
struct CachedJwt {
    token: String,
    spiffe_id: String,
    issued_at: i64,
    expires_at: i64,
}

#[derive(Debug)]
pub struct Agent {
    pub client: NodeClient,
    pub cache: Cache,
    pub attestor: Attestor,
    identity: RwLock<Arc<NodeIdentity>>,
    data_dir: PathBuf,
    jwts: Mutex<HashMap<(String, Vec<String>), CachedJwt>>,
    /// When each workload (uid, executable) was last reported as denied.
    denials: Mutex<HashMap<WorkloadKey, Instant>>,
}

impl Agent {
    pub fn new(client: NodeClient, identity: NodeIdentity, data_dir: PathBuf) -> Self {
        Self {
            client,
            cache: Cache::new(),
            attestor: Attestor::new(),
            identity: RwLock::new(Arc::new(identity)),
            data_dir,
            jwts: Mutex::new(HashMap::new()),
            denials: Mutex::new(HashMap::new()),
        }
    }

    pub fn identity(&self) -> Arc<NodeIdentity> {
        match self.identity.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Renews the node's own SVID once it is past half-life, with a fresh key.
    async fn renew_self(&self) -> Result<(), ClientError> {
        let current = self.identity();
        if !current.needs_renewal(unix_now()) {
            return Ok(());
        }
        let (key, csr) = new_key_and_csr()?;
        let svid = self.client.renew(&current, &csr).await?;
        let next = NodeIdentity::new(
            svid.spiffe_id,
            decode_b64(&svid.cert)?,
            svid.chain.iter().map(|c| decode_b64(c)).collect::<Result<_, _>>()?,
            key,
            unix_now(),
            svid.expires_at,
        );
        if let Err(e) = next.save(&self.data_dir) {
            tracing::warn!(error = %e, "could not save the renewed node identity");
        }
        tracing::info!(expires_at = next.expires_at, "node SVID renewed");
        if let Ok(mut g) = self.identity.write() {
            *g = Arc::new(next);
        }
        Ok(())
    }

    /// One round with the server: renew self, fetch entries and the bundle, sign what is
    /// missing or due, and publish the new snapshot. On error the old snapshot stays.
    pub async fn sync_once(&self) -> Result<(), ClientError> {
        self.renew_self().await?;
        let id = self.identity();
        let listing = self.client.entries(&id).await?;
        let (entries, authority) = (listing.entries, listing.x509_authority);
        let mut federated = Vec::new();
        for (td, doc) in &listing.federated_bundles {
            match Bundle::from_spiffe_bundle(td.clone(), doc) {
                Ok(b) => federated.push(b),
                Err(e) => tracing::warn!(trust_domain = %td, error = %e, "skipping a federated bundle"),
            }
        }
        let bundle_doc = self.client.bundle().await?;
        let td = trust_domain_id(&id.spiffe_id);
        let bundle = Bundle::from_spiffe_bundle(td, &bundle_doc).map_err(ClientError::Protocol)?;

        let old = self.cache.current();
        let now = unix_now();
        let mut svids = HashMap::new();
        let mut due = Vec::new();
        for e in &entries {
            match old.svids.get(&e.id) {
                Some(s) if s.spiffe_id == e.spiffe_id && s.authority == authority && !s.needs_renewal(now) => {
                    svids.insert(e.id.clone(), Arc::clone(s));
                }
                _ => due.push(e),
            }
        }
        for chunk in due.chunks(BATCH) {
            let mut keys = HashMap::new();
            let mut requests = Vec::with_capacity(chunk.len());
            for e in chunk {
                let (key, csr) = new_key_and_csr()?;
                requests.push(SvidRequest {
                    entry_id: e.id.clone(),
                    csr: base64_std(&csr),
                });
                keys.insert(e.id.clone(), key);
            }
            let signed = self.client.sign_x509(&id, requests).await?;
            for s in signed.svids {
                match (s.svid, keys.remove(&s.entry_id)) {
                    (Some(v), Some(key)) => {
                        svids.insert(
                            s.entry_id,
                            Arc::new(WorkloadSvid {
                                spiffe_id: v.spiffe_id,
                                authority: authority.clone(),
                                cert_der: decode_b64(&v.cert)?,
                                chain: v.chain.iter().map(|c| decode_b64(c)).collect::<Result<_, _>>()?,
                                key_pkcs8: key,
                                issued_at: now,
                                expires_at: v.expires_at,
                            }),
                        );
                    }
                    _ => tracing::warn!(entry = %s.entry_id, error = ?s.error, "the server did not sign an SVID"),
                }
            }
        }
        let changed = !old.ready
            || old.entries != entries
            || old.bundle != bundle
            || old.federated != federated
            || old.svids.len() != svids.len()
            || svids
                .iter()
                .any(|(k, v)| old.svids.get(k).is_none_or(|o| !Arc::ptr_eq(o, v)));
        if changed {
            // JWT-SVIDs of entries that are gone must not be handed out any more.
            let live: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            if let Ok(mut j) = self.jwts.lock() {
                j.retain(|(entry, _), _| live.contains(entry.as_str()));
            }
            self.cache.publish(Snapshot {
                ready: true,
                entries,
                svids,
                bundle,
                federated,
            });
        }
        Ok(())
    }

    /// A JWT-SVID for an entry and audience: from the cache until half-life, else from the
    /// server (which audits it with the workload's evidence). One the server marks single-use
    /// (its audience is the server itself, which spends client assertions) is never cached.
    pub async fn jwt_svid(
        &self,
        entry_id: &str,
        audience: &[String],
        workload: &WorkloadInfo,
    ) -> Result<(String, String), ClientError> {
        let mut aud = audience.to_vec();
        aud.sort();
        aud.dedup();
        let key = (entry_id.to_owned(), aud.clone());
        let now = unix_now();
        if let Ok(j) = self.jwts.lock()
            && let Some(c) = j.get(&key)
            && now < c.issued_at + (c.expires_at - c.issued_at) / 2
        {
            return Ok((c.spiffe_id.clone(), c.token.clone()));
        }
        let resp = self
            .client
            .jwt_svid(
                &self.identity(),
                &JwtSvidRequest {
                    entry_id: entry_id.to_owned(),
                    audience: aud,
                    workload: workload.clone(),
                },
            )
            .await?;
        if !resp.single_use
            && let Ok(mut j) = self.jwts.lock()
        {
            if j.len() > 4096 {
                j.clear();
            }
            j.insert(
                key,
                CachedJwt {
                    token: resp.token.clone(),
                    spiffe_id: resp.spiffe_id.clone(),
                    issued_at: now,
                    expires_at: resp.expires_at,
                },
            );
        }
        Ok((resp.spiffe_id, resp.token))
    }

    /// Tells the server a workload matched no entry (at most once a minute per workload), in
    /// the background.
    pub fn report_denial(self: &Arc<Self>, workload: WorkloadInfo) {
        let key = (workload.uid, workload.path.clone());
        if let Ok(mut d) = self.denials.lock() {
            if d.get(&key).is_some_and(|t| t.elapsed() < DENIAL_REPORT_INTERVAL) {
                return;
            }
            if d.len() > 4096 {
                d.clear();
            }
            d.insert(key, Instant::now());
        }
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = agent
                .client
                .report_denial(&agent.identity(), &DenialReport { workload })
                .await
            {
                tracing::warn!(error = %e, "could not report a denied workload to the server");
            }
        });
    }
}

/// A fresh P-256 key and a CSR for it.
pub fn new_key_and_csr() -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), ClientError> {
    let key = sigil_crypto::x509::generate_svid_key().map_err(|e| ClientError::Protocol(e.to_string()))?;
    let csr = sigil_crypto::x509::make_csr(&key).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok((key, csr))
}

/// `spiffe://<td>` of a SPIFFE ID.
pub fn trust_domain_id(spiffe_id: &str) -> String {
    let rest = spiffe_id.strip_prefix("spiffe://").unwrap_or(spiffe_id);
    format!("spiffe://{}", rest.split('/').next().unwrap_or_default())
}

fn base64_std(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(der)
}
