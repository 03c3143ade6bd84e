//! Checking an X509-SVID against the trust domain's authorities, and the node proof: a short JWS
//! a node agent signs with its own X509-SVID's key (certificate in `x5c`) to show the server who
//! it is on every call, over plain HTTP or TLS alike.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::Deserialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::{Algorithm, SigningKey, b64url, b64url_decode};

/// `ecdsa-with-SHA256` (RFC 5758 §3.2), the only signature algorithm Sigil's CA uses.
const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";

/// Why an X509-SVID (or a proof made with one) is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    #[error("not an X.509 certificate")]
    Malformed,
    #[error("the certificate is not valid now")]
    Expired,
    #[error("the certificate is a CA certificate, not an SVID")]
    NotLeaf,
    #[error("an X509-SVID has exactly one URI SAN, a spiffe:// ID")]
    SpiffeId,
    #[error("the certificate is not signed by an authority of this trust domain")]
    UnknownAuthority,
    #[error("the proof is malformed: {0}")]
    Proof(&'static str),
    #[error("the proof's signature does not verify")]
    ProofSignature,
}

/// A leaf SVID that chains to one of the authorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSvid {
    /// The `spiffe://` URI SAN, as written in the certificate.
    pub spiffe_id: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The subject public key: an uncompressed P-256 point.
    public_point: Vec<u8>,
}

/// Checks that `leaf_der` is an X509-SVID signed directly by one of `authorities` (DER CA
/// certificates) and valid at `now` (unix seconds).
pub fn verify_svid(leaf_der: &[u8], authorities: &[Vec<u8>], now: i64) -> Result<VerifiedSvid, SvidError> {
    verify_svid_chain(leaf_der, &[], authorities, now)
}

/// As [`verify_svid`], also accepting a leaf signed by one of `intermediates` (a trust domain
/// whose CA is an intermediate under an upstream CA), itself a current CA certificate signed by
/// one of `authorities`.
pub fn verify_svid_chain(
    leaf_der: &[u8],
    intermediates: &[Vec<u8>],
    authorities: &[Vec<u8>],
    now: i64,
) -> Result<VerifiedSvid, SvidError> {
    let (rest, leaf) = X509Certificate::from_der(leaf_der).map_err(|_| SvidError::Malformed)?;
    if !rest.is_empty() {
        return Err(SvidError::Malformed);
    }
    let validity = leaf.validity();
    if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
        return Err(SvidError::Expired);
    }
    if leaf.is_ca() {
        return Err(SvidError::NotLeaf);
    }
    let spiffe_id = only_spiffe_uri(&leaf)?;
    let by_authority = |cert: &X509Certificate<'_>| {
        authorities
            .iter()
            .any(|ca_der| X509Certificate::from_der(ca_der).is_ok_and(|(_, ca)| signed_by(cert, &ca)))
    };
    let signed = by_authority(&leaf)
        || intermediates.iter().any(|der| {
            X509Certificate::from_der(der).is_ok_and(|(_, mid)| {
                let v = mid.validity();
                mid.is_ca()
                    && now >= v.not_before.timestamp()
                    && now <= v.not_after.timestamp()
                    && signed_by(&leaf, &mid)
                    && by_authority(&mid)
            })
        });
    if !signed {
        return Err(SvidError::UnknownAuthority);
    }
    Ok(VerifiedSvid {
        spiffe_id,
        serial: leaf.raw_serial_as_string().replace(':', ""),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        public_point: leaf.public_key().subject_public_key.data.to_vec(),
    })
}

/// Whether `issuer` (by name and ECDSA P-256 key) signed `cert`.
fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.signature_algorithm.algorithm.to_id_string() == ECDSA_WITH_SHA256
        && issuer.subject().as_raw() == cert.issuer().as_raw()
        && UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_ASN1,
            issuer.public_key().subject_public_key.data.as_ref(),
        )
        .verify(cert.tbs_certificate.as_ref(), cert.signature_value.data.as_ref())
        .is_ok()
}

/// The certificate's single URI SAN, which must be a `spiffe://` ID (X509-SVID §2).
fn only_spiffe_uri(cert: &X509Certificate<'_>) -> Result<String, SvidError> {
    let mut uris = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    uris.push(*u);
                }
            }
        }
    }
    match uris.as_slice() {
        [one] if one.starts_with("spiffe://") => Ok((*one).to_owned()),
        _ => Err(SvidError::SpiffeId),
    }
}

/// The JOSE `typ` of a node proof.
pub const NODE_PROOF_TYP: &str = "sigil-node+jwt";

/// Signs `payload` (JSON) as a node proof with the SVID's PKCS#8 P-256 key, the SVID in `x5c`.
pub fn sign_node_proof(key_pkcs8: &[u8], svid_der: &[u8], payload: &[u8]) -> Result<String, crate::CryptoError> {
    sign_node_proof_with_chain(key_pkcs8, svid_der, &[], payload)
}

/// As [`sign_node_proof`], with the SVID's intermediate CA certificates after it in `x5c`.
pub fn sign_node_proof_with_chain(
    key_pkcs8: &[u8],
    svid_der: &[u8],
    chain: &[Vec<u8>],
    payload: &[u8],
) -> Result<String, crate::CryptoError> {
    let key = SigningKey::from_pkcs8(String::new(), Algorithm::Es256, key_pkcs8)?;
    let x5c: Vec<String> = std::iter::once(svid_der)
        .chain(chain.iter().map(Vec::as_slice))
        .map(base64_std)
        .collect();
    let header = serde_json::json!({
        "alg": "ES256",
        "typ": NODE_PROOF_TYP,
        "x5c": x5c,
    });
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(payload));
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64url(&sig)))
}

#[derive(Deserialize)]
struct ProofHeader {
    alg: String,
    typ: Option<String>,
    x5c: Vec<String>,
    /// RFC 7515 §4.1.11: no extension is understood.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// Verifies a node proof: its SVID (first `x5c` entry) must chain to `authorities`, and the JWS
/// must be signed by that SVID's key. Returns the SVID and the payload bytes; the caller checks
/// the claims.
pub fn verify_node_proof(jws: &str, authorities: &[Vec<u8>], now: i64) -> Result<(VerifiedSvid, Vec<u8>), SvidError> {
    verify_node_proof_with(jws, |leaf, chain| verify_svid_chain(leaf, chain, authorities, now))
}

/// As [`verify_node_proof`], with the caller checking the SVID (`check_svid` gets its DER and
/// the intermediates after it in `x5c`), so a caller can remember SVIDs it has already verified.
pub fn verify_node_proof_with(
    jws: &str,
    check_svid: impl FnOnce(&[u8], &[Vec<u8>]) -> Result<VerifiedSvid, SvidError>,
) -> Result<(VerifiedSvid, Vec<u8>), SvidError> {
    if jws.len() > 8 * 1024 {
        return Err(SvidError::Proof("too long"));
    }
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(SvidError::Proof("not a compact JWS"));
    };
    let header: ProofHeader = b64url_decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(SvidError::Proof("bad header"))?;
    if header.crit.is_some() {
        return Err(SvidError::Proof("critical header extensions are not supported"));
    }
    if header.alg != "ES256" || header.typ.as_deref() != Some(NODE_PROOF_TYP) {
        return Err(SvidError::Proof("alg must be ES256 and typ sigil-node+jwt"));
    }
    if header.x5c.len() > 4 {
        return Err(SvidError::Proof("x5c holds more than the SVID and its intermediates"));
    }
    let mut certs = header.x5c.iter().map(|c| base64_std_decode(c));
    let leaf = certs
        .next()
        .flatten()
        .ok_or(SvidError::Proof("x5c must hold the node's SVID"))?;
    let chain = certs
        .collect::<Option<Vec<_>>>()
        .ok_or(SvidError::Proof("bad x5c encoding"))?;
    let svid = check_svid(&leaf, &chain)?;
    let sig = b64url_decode(s).map_err(|_| SvidError::Proof("bad signature encoding"))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &svid.public_point)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| SvidError::ProofSignature)?;
    let payload = b64url_decode(p).map_err(|_| SvidError::Proof("bad payload encoding"))?;
    Ok((svid, payload))
}

fn base64_std(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn base64_std_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::x509::{SvidRequest, X509Authority, generate_svid_key};

    const NOW: i64 = 1_800_000_000;

    fn issue(ca: &X509Authority, id: &str, key: &[u8]) -> Vec<u8> {
        let req = SvidRequest {
            spiffe_id: id,
            dns_names: &[],
            not_before: NOW - 10,
            not_after: NOW + 3600,
        };
        ca.sign_for_key(key, &req).unwrap()
    }

    #[test]
    fn an_svid_verifies_against_its_authority_only() {
        let ca = X509Authority::generate_root("spiffe://a.test", NOW - 60, NOW + 86_400).unwrap();
        let other = X509Authority::generate_root("spiffe://a.test", NOW - 60, NOW + 86_400).unwrap();
        let key = generate_svid_key().unwrap();
        let leaf = issue(&ca, "spiffe://a.test/node/1", &key);
        let ok = verify_svid(&leaf, &[ca.cert_der().to_vec()], NOW).unwrap();
        assert_eq!(ok.spiffe_id, "spiffe://a.test/node/1");
        assert_eq!(
            verify_svid(&leaf, &[other.cert_der().to_vec()], NOW),
            Err(SvidError::UnknownAuthority)
        );
        assert_eq!(
            verify_svid(&leaf, &[ca.cert_der().to_vec()], NOW + 7200),
            Err(SvidError::Expired)
        );
        assert_eq!(
            verify_svid(ca.cert_der(), &[ca.cert_der().to_vec()], NOW),
            Err(SvidError::NotLeaf)
        );
        assert_eq!(
            verify_svid(b"junk", &[ca.cert_der().to_vec()], NOW),
            Err(SvidError::Malformed)
        );
    }

    #[test]
    fn an_svid_under_an_intermediate_needs_the_intermediate() {
        let root = X509Authority::generate_root("spiffe://corp.test", NOW - 60, NOW + 86_400).unwrap();
        let mid = X509Authority::generate_intermediate("spiffe://a.test", &root, NOW - 60, NOW + 3600).unwrap();
        let key = generate_svid_key().unwrap();
        let leaf = issue(&mid, "spiffe://a.test/w", &key);
        let anchors = [root.cert_der().to_vec()];
        let chain = [mid.cert_der().to_vec()];
        assert_eq!(
            verify_svid_chain(&leaf, &chain, &anchors, NOW).unwrap().spiffe_id,
            "spiffe://a.test/w"
        );
        assert_eq!(verify_svid(&leaf, &anchors, NOW), Err(SvidError::UnknownAuthority));
        // Once the certificates expire, nothing verifies.
        assert_eq!(
            verify_svid_chain(&leaf, &chain, &anchors, NOW + 7200),
            Err(SvidError::Expired)
        );
        // Nor does one that chains to another root.
        let other = X509Authority::generate_root("spiffe://corp.test", NOW - 60, NOW + 86_400).unwrap();
        assert_eq!(
            verify_svid_chain(&leaf, &chain, &[other.cert_der().to_vec()], NOW),
            Err(SvidError::UnknownAuthority)
        );
    }

    #[test]
    fn a_node_proof_is_bound_to_the_svid_key() {
        let ca = X509Authority::generate_root("spiffe://a.test", NOW - 60, NOW + 86_400).unwrap();
        let key = generate_svid_key().unwrap();
        let leaf = issue(&ca, "spiffe://a.test/node/1", &key);
        let proof = sign_node_proof(&key, &leaf, br#"{"aud":"x"}"#).unwrap();
        let (svid, payload) = verify_node_proof(&proof, &[ca.cert_der().to_vec()], NOW).unwrap();
        assert_eq!(svid.spiffe_id, "spiffe://a.test/node/1");
        assert_eq!(payload, br#"{"aud":"x"}"#);

        // Someone else's key with the node's certificate: the signature does not verify.
        let thief = generate_svid_key().unwrap();
        let forged = sign_node_proof(&thief, &leaf, b"{}").unwrap();
        assert_eq!(
            verify_node_proof(&forged, &[ca.cert_der().to_vec()], NOW),
            Err(SvidError::ProofSignature)
        );
        // A tampered payload does not verify either.
        let mut parts: Vec<&str> = proof.split('.').collect();
        let other_payload = b64url(br#"{"aud":"y"}"#);
        parts[1] = &other_payload;
        assert_eq!(
            verify_node_proof(&parts.join("."), &[ca.cert_der().to_vec()], NOW),
            Err(SvidError::ProofSignature)
        );
    }
}
