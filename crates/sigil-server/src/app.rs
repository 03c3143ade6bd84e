//! The composition root: builds every component once and hands them to the adapters.

use std::sync::Arc;

use sigil_core::admin_auth::AdminAuth;
use sigil_core::audit::AuditLog;
use sigil_core::keys::{KeyManager, KeyPolicy};
use sigil_core::oauth::{OAuthConfig, OAuthDeps, OAuthService};
use sigil_core::registry::Registry;
use sigil_core::store::Store;
use sigil_core::{Clock, Rng};
use sigil_crypto::MasterKey;

use crate::config::Config;

/// Everything a request handler needs, shared by all of them.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// The issuer identifier, exactly as it appears in tokens and metadata.
    pub issuer: String,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub registry: Registry,
    pub keys: Arc<KeyManager>,
    /// The SPIFFE issuer's X.509 authority.
    pub spiffe: Arc<sigil_core::spiffe::X509Ca>,
    /// Node attestation and the node API.
    pub nodes: Arc<sigil_core::spiffe::nodes::Nodes>,
    /// Admission to the node API.
    pub node_gate: crate::gate::Gate,
    /// Federated trust domains and their bundles.
    pub federations: Arc<sigil_core::spiffe::federation::Federations>,
    /// SPIFFE registration entries.
    pub entries: Arc<sigil_core::spiffe::entries::Entries>,
    pub admin: AdminAuth,
    pub audit: AuditLog,
    pub oauth: OAuthService,
    pub policy: Arc<sigil_policy::PolicyService>,
    /// Cached registry reads, shared by the token endpoint and access evaluations.
    pub reads: Arc<sigil_core::oauth::reads::RegistryReads>,
}

/// Why the application cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Policy(#[from] sigil_policy::PolicyError),
    #[error("trust domain: {0}")]
    TrustDomain(String),
    #[error("upstream CA: {0}")]
    Upstream(String),
}

impl App {
    pub fn new(
        config: Config,
        issuer: String,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn Rng>,
        master: Arc<MasterKey>,
    ) -> Result<Self, AppError> {
        let policy = KeyPolicy {
            algorithm: config.key_algorithm,
            publish_ahead: config.publish_ahead,
            retire_after: config.retire_after,
        };
        let keys = Arc::new(KeyManager::new(
            Arc::clone(&master),
            Arc::clone(&store),
            Arc::clone(&clock),
            policy,
        ));
        let policy = Arc::new(sigil_policy::PolicyService::new(
            Arc::clone(&store),
            Arc::clone(&clock),
        )?);
        let reads = Arc::new(sigil_core::oauth::reads::RegistryReads::new(Arc::clone(&store)));
        // The trust domain was checked when the config was loaded.
        let trust_domain =
            sigil_types::TrustDomain::parse(&config.trust_domain).map_err(|e| AppError::TrustDomain(e.to_string()))?;
        let entries = Arc::new(sigil_core::spiffe::entries::Entries::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&rng),
            trust_domain.clone(),
        ));
        let mut ca = sigil_core::spiffe::X509Ca::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&master),
            trust_domain,
        );
        if let Some((cert, key)) = &config.upstream_ca {
            ca = ca.with_upstream(load_upstream(cert, key)?);
        }
        let spiffe = Arc::new(ca);
        let deps = OAuthDeps {
            store: Arc::clone(&store),
            clock: Arc::clone(&clock),
            rng: Arc::clone(&rng),
            keys: Arc::clone(&keys),
            spiffe: Arc::clone(&spiffe),
            fetcher: Arc::new(crate::jwks_fetch::HttpJwksFetcher::new()),
            policy: Arc::clone(&policy) as Arc<dyn sigil_core::oauth::policy::IssuancePolicy>,
            reads: Arc::clone(&reads),
            documents: Arc::new(crate::jwks_fetch::HttpDocumentFetcher),
        };
        let oauth = OAuthService::new(
            deps,
            &master,
            OAuthConfig {
                issuer: issuer.clone(),
                token_endpoint: format!("{issuer}/token"),
                introspection_endpoint: format!("{issuer}/introspect"),
                revocation_endpoint: format!("{issuer}/revoke"),
                userinfo_endpoint: format!("{issuer}/userinfo"),
                access_token_ttl: config.access_token_ttl,
                max_access_token_ttl: config.max_access_token_ttl,
                dpop_nonce: config.dpop_nonce,
                authorization_endpoint: format!("{issuer}/authorize"),
                max_delegation_depth: config.max_delegation_depth,
                refresh_token_ttl: config.refresh_token_ttl,
                metadata_documents: config.metadata_documents.clone(),
            },
        );
        let nodes = Arc::new(sigil_core::spiffe::nodes::Nodes::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&rng),
            Arc::clone(&spiffe),
            sigil_crypto::KeyedHasher::new(&master, "sigil join token v1"),
            format!("{issuer}/spiffe/v1/node"),
        ));
        let federations = Arc::new(sigil_core::spiffe::federation::Federations::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::new(crate::jwks_fetch::HttpBundleFetcher),
            spiffe.trust_domain().clone(),
        ));
        let node_gate = crate::gate::Gate::new(
            config.node_api_in_flight,
            config.node_api_queue,
            std::time::Duration::from_secs(1),
        );
        let admin = AdminAuth::new(Arc::clone(&store), Arc::clone(&clock), Arc::clone(&rng), &master);
        let audit = AuditLog::new(Arc::clone(&store), Arc::clone(&clock), rng.as_ref(), issuer.clone());
        let registry =
            Registry::new(Arc::clone(&store), Arc::clone(&clock), rng).with_max_token_ttl(config.max_access_token_ttl);
        Ok(Self {
            config,
            issuer,
            store,
            clock,
            registry,
            keys,
            spiffe,
            nodes,
            node_gate,
            federations,
            entries,
            admin,
            audit,
            oauth,
            policy,
            reads,
        })
    }
}

/// Reads the upstream CA: a PEM certificate that is a CA, and its PKCS#8 P-256 key (PEM).
fn load_upstream(cert: &std::path::Path, key: &std::path::Path) -> Result<sigil_crypto::x509::X509Authority, AppError> {
    use rustls_pki_types::pem::PemObject;
    let cert_der = rustls_pki_types::CertificateDer::from_pem_file(cert)
        .map_err(|e| AppError::Upstream(format!("{}: {e}", cert.display())))?;
    let key_der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(key)
        .map_err(|e| AppError::Upstream(format!("{}: {e}", key.display())))?;
    sigil_crypto::x509::X509Authority::from_parts(key_der.secret_pkcs8_der(), cert_der.as_ref())
        .map_err(|e| AppError::Upstream(e.to_string()))
}
