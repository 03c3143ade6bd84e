//! SVID signing in process: X509-SVIDs from CSRs and from keys, and JWT-SVIDs, each beside the
//! raw signature rate of the same key type measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_core::spiffe::jwt_svid;
use sigil_crypto::x509::{SvidRequest, X509Authority, generate_svid_key, make_csr};
use sigil_crypto::{Algorithm, SigningKey};
use sigil_types::{SpiffeId, TrustDomain};

fn rate(d: Duration, mut f: impl FnMut() -> bool) -> f64 {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < d {
        if f() {
            n += 1;
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

pub fn bench(d: Duration) -> Result<Vec<(String, String)>, String> {
    let now = 1_800_000_000;
    let ca = X509Authority::generate_root("spiffe://bench.local", now - 60, now + 86_400).map_err(|e| e.to_string())?;
    let key = generate_svid_key().map_err(|e| e.to_string())?;
    let csr = make_csr(&key).map_err(|e| e.to_string())?;
    let req = SvidRequest {
        spiffe_id: "spiffe://bench.local/ns/prod/sa/billing",
        dns_names: &[],
        not_before: now,
        not_after: now + 3600,
    };
    let (p256, _) = SigningKey::generate(Algorithm::Es256).map_err(|e| e.to_string())?;
    let tbs = vec![7u8; 450]; // about the size of an SVID's to-be-signed part
    let raw_p256 = rate(d, || p256.sign(&tbs).is_ok());
    let sig = p256.sign(&tbs).map_err(|e| e.to_string())?;
    let public = sigil_crypto::PublicJwk::from(&p256.public_jwk());
    let raw_p256_verify = rate(d, || public.verify(sigil_crypto::ClientAlg::Es256, &tbs, &sig));
    // A CSR costs one verification (its signature) and one signature (the SVID's).
    let sign_and_verify = 1.0 / (1.0 / raw_p256 + 1.0 / raw_p256_verify);
    let from_csr = rate(d, || ca.sign_csr(&csr, &req).is_ok());
    let from_key = rate(d, || ca.sign_for_key(&key, &req).is_ok());
    // JWT-SVIDs are ES256 (the JWT-SVID specification allows only RSA and ECDSA).
    let jwt_key = Arc::new(p256);
    let claims = vec![7u8; 200];
    let raw_jwt = rate(d, || jwt_key.sign(&claims).is_ok());
    let td = TrustDomain::parse("bench.local").map_err(|e| e.to_string())?;
    let id = SpiffeId::parse("spiffe://bench.local/web").map_err(|e| e.to_string())?;
    let aud = vec!["https://api.example.com".to_owned()];
    let mut n = 0u64;
    let jwt = rate(d, || {
        n += 1;
        jwt_svid::mint(&jwt_key, &td, &id, &aud, now, 300, n.to_string()).is_ok()
    });
    let pct = |a: f64, b: f64| format!("{:.0}%", 100.0 * a / b);
    Ok(vec![
        (
            "raw ECDSA P-256 signatures/s, one core (aws-lc-rs)".into(),
            format!("{raw_p256:.0}/s"),
        ),
        (
            "raw ECDSA P-256 verifications/s, one core".into(),
            format!("{raw_p256_verify:.0}/s"),
        ),
        (
            "X509-SVIDs/s from CSRs, one core (parse + verify the CSR, build, sign)".into(),
            format!(
                "{from_csr:.0}/s — {} of one raw verify + one raw sign ({sign_and_verify:.0}/s)",
                pct(from_csr, sign_and_verify)
            ),
        ),
        (
            "X509-SVIDs/s for a server-side PKCS#8 key, one core (parses the key each time)".into(),
            format!("{from_key:.0}/s — {} of raw P-256 signing", pct(from_key, raw_p256)),
        ),
        (
            "raw ES256 signatures/s over a JWT-sized input, one core".into(),
            format!("{raw_jwt:.0}/s"),
        ),
        (
            "JWT-SVIDs/s (ES256), one core".into(),
            format!("{jwt:.0}/s — {} of raw ES256 signing", pct(jwt, raw_jwt)),
        ),
    ])
}
