//! The `spiffe` crate (rust-spiffe) as a third-party Workload API client of `sigil node`: X509-SVIDs
//! and bundles, JWT-SVIDs validated by the Workload API and offline against the JWT bundle, and an
//! identity taken away once its entry is deleted. Then two workloads talk mutual TLS with their
//! X509-SVIDs (rustls), each side checking the other's SPIFFE ID.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use sigil_crypto::svid_verify::{SvidError, verify_svid};
use sigil_testkit::TestServer;
use sigil_testkit::workload::{NodeAgent, entry, my_gid, my_uid};
use spiffe::{JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient, WorkloadApiError, X509Svid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const NODE_ID: &str = "spiffe://sigil.local/node/rs";
const A: &str = "spiffe://sigil.local/rs/a";
const B: &str = "spiffe://sigil.local/rs/b";
const AUDIENCE: &str = "https://api.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spiffe_crate_gets_svids_from_the_node_agent_and_they_do_mutual_tls() {
    let Some(s) = TestServer::start().await else { return };
    let c = s.client();

    // Two entries that both select this test process, so the Workload API hands it two identities.
    let uid = format!("unix:uid:{}", my_uid());
    let gid = format!("unix:gid:{}", my_gid());
    let entry_a = c
        .create_entry(&entry(A, NODE_ID, std::slice::from_ref(&uid), None))
        .await
        .unwrap();
    c.create_entry(&entry(B, NODE_ID, &[uid, gid], None)).await.unwrap();

    // The node agent, in process, on a temporary socket.
    let node = NodeAgent::start(&s.url, Some(s.join_token(NODE_ID).await)).await;
    let socket = node.socket.clone();
    assert!(socket.exists(), "the node agent did not open {}", socket.display());

    let client = WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
        .await
        .unwrap();

    // X509-SVIDs: both identities, picked by SPIFFE ID (the order is the agent's business).
    let svids = tokio::time::timeout(Duration::from_secs(10), client.fetch_all_x509_svids())
        .await
        .expect("the first X509-SVID response")
        .unwrap();
    let mut ids = spiffe_ids(&svids);
    ids.sort();
    assert_eq!(ids, vec![A.to_owned(), B.to_owned()]);
    let svid_a = pick(&svids, A);
    let svid_b = pick(&svids, B);
    let first = client.fetch_x509_svid().await.unwrap();
    assert!(ids.contains(&first.spiffe_id().to_string()));
    // The crate reads the same ID out of the certificate's URI SAN.
    assert_eq!(&svid_a.leaf().spiffe_id().unwrap(), svid_a.spiffe_id());

    // The X.509 bundle of sigil.local: the server's CA certificates, which sign both SVIDs.
    let td = TrustDomain::new("sigil.local").unwrap();
    let x509_bundles = client.fetch_x509_bundles().await.unwrap();
    let bundle = x509_bundles.get(&td).expect("an X.509 bundle for sigil.local");
    assert!(!bundle.authorities().is_empty());
    let authorities: Vec<Vec<u8>> = bundle
        .authorities()
        .iter()
        .map(|cert| cert.as_bytes().to_vec())
        .collect();
    assert_eq!(authorities, s.app().spiffe.authorities().unwrap());
    for (svid, id) in [(&svid_a, A), (&svid_b, B)] {
        let verified = verify_svid(svid.leaf().as_bytes(), &authorities, unix_now()).unwrap();
        assert_eq!(verified.spiffe_id, id);
    }

    // A JWT-SVID for A, validated by the Workload API for its audience and refused for another.
    let a_id = SpiffeId::new(A).unwrap();
    let jwt = client.fetch_jwt_svid([AUDIENCE], Some(&a_id)).await.unwrap();
    assert_eq!(jwt.spiffe_id(), &a_id);
    assert_eq!(jwt.audience().to_vec(), vec![AUDIENCE.to_owned()]);
    let validated = client.validate_jwt_token(AUDIENCE, jwt.token()).await.unwrap();
    assert_eq!(validated.spiffe_id(), &a_id);
    let wrong = client
        .validate_jwt_token("https://elsewhere.example.com", jwt.token())
        .await
        .unwrap_err();
    assert!(wrong.is_invalid_argument(), "{wrong:?}");
    // Without a SPIFFE ID the agent returns a JWT-SVID per identity.
    let all = client.fetch_all_jwt_svids([AUDIENCE], None).await.unwrap();
    let mut jwt_ids: Vec<String> = all.iter().map(|j| j.spiffe_id().to_string()).collect();
    jwt_ids.sort();
    assert_eq!(jwt_ids, vec![A.to_owned(), B.to_owned()]);
    // An ID this workload was not given.
    let zzz = SpiffeId::new("spiffe://sigil.local/rs/zzz").unwrap();
    let err = client.fetch_jwt_svid([AUDIENCE], Some(&zzz)).await.unwrap_err();
    assert!(matches!(err, WorkloadApiError::NoIdentityIssued), "{err:?}");

    // The JWT bundle, and the same token validated offline by the crate (signature, aud, exp).
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    let jwt_bundle = jwt_bundles.get(&td).expect("a JWT bundle for sigil.local");
    assert!(jwt_bundle.find_jwt_authority(jwt.key_id()).is_some());
    let offline = JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &[AUDIENCE]).unwrap();
    assert_eq!(offline.spiffe_id(), &a_id);
    assert!(JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["https://elsewhere.example.com"]).is_err());

    // Mutual TLS: A serves, B calls; each checks the other's SPIFFE ID against the bundle.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&svid_a, &authorities, &provider)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let good = TlsConnector::from(Arc::new(client_config(Some(&svid_b), &authorities, A, &provider)));
    let (served, answered) = tokio::join!(serve_once(&listener, &acceptor, &authorities), call_once(addr, &good));
    assert_eq!(served.unwrap(), B, "the server sees B's SPIFFE ID");
    assert_eq!(answered.unwrap(), b"pong");

    // A client that expects another server ID refuses A's certificate.
    let picky = TlsConnector::from(Arc::new(client_config(
        Some(&svid_b),
        &authorities,
        "spiffe://sigil.local/rs/zzz",
        &provider,
    )));
    let (served, answered) = tokio::join!(serve_once(&listener, &acceptor, &authorities), call_once(addr, &picky));
    let err = answered.expect_err("the handshake fails on the client");
    assert!(
        matches!(
            err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure
            ))
        ),
        "{err:?}"
    );
    assert!(served.is_err(), "the server sees the handshake fail too");

    // A client without an SVID is refused by the server (client certificates are required).
    let anonymous = TlsConnector::from(Arc::new(client_config(None, &authorities, A, &provider)));
    let (served, answered) = tokio::join!(
        serve_once(&listener, &acceptor, &authorities),
        call_once(addr, &anonymous)
    );
    assert!(served.is_err(), "{served:?}");
    assert!(answered.is_err(), "{answered:?}");

    // Deleting A's entry takes that identity away at the agent's next sync.
    c.delete_entry(&entry_a.id).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ids = spiffe_ids(&client.fetch_all_x509_svids().await.unwrap());
        if !ids.iter().any(|id| id == A) {
            assert_eq!(ids, vec![B.to_owned()]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{A} still served 10s after its entry was deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = client.fetch_jwt_svid([AUDIENCE], Some(&a_id)).await.unwrap_err();
    assert!(matches!(err, WorkloadApiError::NoIdentityIssued), "{err:?}");

    drop(client);
    node.stop().await;
}

fn spiffe_ids(svids: &[X509Svid]) -> Vec<String> {
    svids.iter().map(|s| s.spiffe_id().to_string()).collect()
}

fn pick(svids: &[X509Svid], id: &str) -> X509Svid {
    svids
        .iter()
        .find(|s| s.spiffe_id().to_string() == id)
        .cloned()
        .unwrap_or_else(|| panic!("no X509-SVID for {id}"))
}

fn unix_now() -> i64 {
    i64::try_from(UnixTime::now().as_secs()).unwrap()
}

fn cert_chain(svid: &X509Svid) -> Vec<CertificateDer<'static>> {
    svid.cert_chain()
        .iter()
        .map(|cert| CertificateDer::from(cert.as_bytes().to_vec()))
        .collect()
}

fn private_key(svid: &X509Svid) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.private_key().as_bytes().to_vec()))
}

/// A server that presents `svid` and requires a client certificate chaining to the bundle. The
/// stock webpki verifier suffices here: it checks no names, and the SPIFFE ID is checked after
/// the handshake.
fn server_config(svid: &X509Svid, authorities: &[Vec<u8>], provider: &Arc<CryptoProvider>) -> rustls::ServerConfig {
    let mut roots = RootCertStore::empty();
    for der in authorities {
        roots.add(CertificateDer::from(der.clone())).unwrap();
    }
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_single_cert(cert_chain(svid), private_key(svid))
        .unwrap()
}

/// A client that accepts only a server whose SVID chains to the bundle and names `expected`;
/// it presents `svid` if given.
fn client_config(
    svid: Option<&X509Svid>,
    authorities: &[Vec<u8>],
    expected: &str,
    provider: &Arc<CryptoProvider>,
) -> rustls::ClientConfig {
    let verifier = Arc::new(SpiffeServerVerifier {
        authorities: authorities.to_vec(),
        expected: expected.to_owned(),
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match svid {
        Some(svid) => builder
            .with_client_auth_cert(cert_chain(svid), private_key(svid))
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// Server-certificate verification by SPIFFE ID. SVIDs carry a `spiffe://` URI SAN and no DNS
/// name, so rustls' hostname-based verifier cannot be used: the chain is checked against the
/// bundle, then the ID is matched; the server name is ignored.
#[derive(Debug)]
struct SpiffeServerVerifier {
    authorities: Vec<Vec<u8>>,
    expected: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let now = i64::try_from(now.as_secs()).map_err(|_| rustls::Error::FailedToGetCurrentTime)?;
        let svid = verify_svid(end_entity.as_ref(), &self.authorities, now).map_err(|e| {
            rustls::Error::InvalidCertificate(match e {
                SvidError::Malformed => CertificateError::BadEncoding,
                SvidError::Expired => CertificateError::Expired,
                SvidError::SpiffeId => CertificateError::NotValidForName,
                _ => CertificateError::UnknownIssuer,
            })
        })?;
        if svid.spiffe_id != self.expected {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    // The handshake signatures: the provider's algorithms, as rustls' own verifier does.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts one connection: TLS with a verified client certificate, then "ping" in, "pong" out.
/// Returns the client's SPIFFE ID.
async fn serve_once(
    listener: &TcpListener,
    acceptor: &TlsAcceptor,
    authorities: &[Vec<u8>],
) -> std::io::Result<String> {
    let (tcp, _) = listener.accept().await?;
    let mut tls = acceptor.accept(tcp).await?;
    // rustls checked the chain; which workload is calling is the application's question.
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .cloned()
        .expect("a client certificate");
    let peer = verify_svid(leaf.as_ref(), authorities, unix_now())
        .expect("the client's X509-SVID")
        .spiffe_id;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    tls.write_all(b"pong").await?;
    tls.shutdown().await?;
    Ok(peer)
}

/// Connects, sends "ping" and returns the 4-byte answer.
async fn call_once(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    // Not used for verification (SVIDs have no DNS name); any valid name will do.
    let name = ServerName::try_from("sigil.local").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(b"ping").await?;
    tls.flush().await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    Ok(buf.to_vec())
}
