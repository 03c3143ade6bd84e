//! `sigil client …` and `sigil token …`.

use std::path::Path;

use base64::Engine;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use sigil_crypto::{Algorithm, PublicJwk, SigningKey, b64url};
use sigil_proto::admin::CreateClient;

use crate::admin::{client as api_client, list_pages};
use crate::cli::{ClientCommand, Global, Output, TokenCommand};
use crate::{Exit, Failure, output};

const CLIENT_COLUMNS: &[&str] = &["client_id", "identity", "token_endpoint_auth_method", "created_at"];

pub async fn client(g: &Global, c: ClientCommand) -> Result<(), Failure> {
    match c {
        ClientCommand::Create {
            identity,
            jwks_file,
            jwks_uri,
            secret,
            public,
            redirect_uri,
            id_jag_audience,
            dpop_required,
        } => {
            let api = api_client(g)?;
            let jwks = match &jwks_file {
                Some(f) => Some(read_json(f)?),
                None => None,
            };
            let method = if secret {
                "client_secret_basic"
            } else if public {
                "none"
            } else if jwks.is_some() || jwks_uri.is_some() {
                "private_key_jwt"
            } else {
                return Err(Failure::invalid("give --jwks-file, --jwks-uri, --secret or --public"));
            };
            let req = CreateClient {
                identity,
                token_endpoint_auth_method: method.into(),
                jwks,
                jwks_uri,
                dpop_bound_access_tokens: dpop_required,
                redirect_uris: redirect_uri,
                id_jag_audiences: id_jag_audience
                    .iter()
                    .map(|a| match a.split_once('=') {
                        Some((audience, client_id)) => json!({"audience": audience, "client_id": client_id}),
                        None => json!({"audience": a}),
                    })
                    .collect(),
            };
            let view = api.create_client(&req).await?;
            match g.output {
                Output::Json => output::item(g.output, &view),
                Output::Text => {
                    println!("client_id      {}", view.client_id);
                    if let Some(s) = &view.client_secret {
                        println!("client_secret  {s}");
                        eprintln!("(the secret is shown once; store it now)");
                    }
                }
            }
        }
        ClientCommand::List { identity, page } => {
            let api = api_client(g)?;
            let q = identity.map(|i| vec![("identity", i)]).unwrap_or_default();
            list_pages(g, &page, q, CLIENT_COLUMNS, |q| {
                let api = api.clone();
                async move { api.list_clients(&q).await }
            })
            .await?;
        }
        ClientCommand::Show { client_id } => output::item(g.output, &api_client(g)?.get_client(&client_id).await?),
        ClientCommand::Delete { client_id } => {
            api_client(g)?.delete_client(&client_id).await?;
            output::done(g.output, "deleted", &client_id);
        }
        ClientCommand::Keygen { private_key, jwks, alg } => keygen(g.output, &private_key, &jwks, &alg)?,
    }
    Ok(())
}

fn read_json(p: &Path) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(p).map_err(|e| Failure::invalid(format!("cannot read {}: {e}", p.display())))?;
    serde_json::from_str(&text).map_err(|e| Failure::invalid(format!("{} is not JSON: {e}", p.display())))
}

fn keygen(out: Output, private_key: &Path, jwks_path: &Path, alg: &str) -> Result<(), Failure> {
    let alg = Algorithm::parse(alg).ok_or_else(|| Failure::invalid("--alg must be EdDSA, ES256 or RS256"))?;
    // A second run must not replace a key a client is registered with (nor write through a
    // symbolic link someone left at the path).
    for path in [private_key, jwks_path] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(Failure::invalid(format!(
                "{} already exists: remove it or choose another path",
                path.display()
            )));
        }
    }
    let (key, pkcs8) = SigningKey::generate(alg).map_err(|e| Failure::error(e.to_string()))?;
    let mut jwk = PublicJwk::from(&key.public_jwk());
    jwk.kid = Some(jwk.thumbprint().map_err(|e| Failure::error(e.to_string()))?);
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_slice());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    sigil_server::bootstrap::write_secret_file(private_key, pem.trim_end().as_bytes())
        .map_err(|e| Failure::error(e.to_string()))?;
    let set = json!({ "keys": [jwk] });
    std::fs::write(jwks_path, serde_json::to_string_pretty(&set).unwrap_or_default())
        .map_err(|e| Failure::error(format!("cannot write {}: {e}", jwks_path.display())))?;
    output::report(
        out,
        json!({ "private_key": private_key.display().to_string(), "jwks": jwks_path.display().to_string(), "kid": jwk.kid }),
        &format!(
            "wrote {} (private, 0600) and {} (register it with: sigil client create --identity NAME --jwks-file {})",
            private_key.display(),
            jwks_path.display(),
            jwks_path.display()
        ),
    );
    Ok(())
}

/// Loads a PKCS#8 PEM private key (Ed25519, P-256 or RSA) and its RFC 7638 thumbprint as `kid`.
fn load_key(path: &Path) -> Result<(SigningKey, String), Failure> {
    let der = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| {
            Failure::invalid(format!(
                "cannot read private key {}: {e} (give the PKCS#8 PEM private key, e.g. the --private-key file of `sigil client keygen`, not the JWKS)",
                path.display()
            ))
        })?;
    let bytes = der.secret_der();
    let key = SigningKey::from_pkcs8(String::new(), Algorithm::EdDsa, bytes)
        .or_else(|_| SigningKey::from_pkcs8(String::new(), Algorithm::Es256, bytes))
        .or_else(|_| SigningKey::from_pkcs8(String::new(), Algorithm::Rs256, bytes))
        .map_err(|_| Failure::invalid("the key must be an Ed25519, P-256 or RSA PKCS#8 private key"))?;
    let kid = PublicJwk::from(&key.public_jwk())
        .thumbprint()
        .map_err(|e| Failure::error(e.to_string()))?;
    let key = SigningKey::from_pkcs8(kid.clone(), key.alg(), bytes).map_err(|e| Failure::error(e.to_string()))?;
    Ok((key, kid))
}

fn oauth_failure(status: u16, body: &Value) -> Failure {
    let code = body.get("error").and_then(Value::as_str).unwrap_or("error");
    let desc = body
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let exit = match code {
        "invalid_client" | "unauthorized_client" => Exit::Denied,
        "invalid_request"
        | "invalid_scope"
        | "invalid_target"
        | "unsupported_grant_type"
        | "invalid_dpop_proof"
        | "use_dpop_nonce" => Exit::Invalid,
        _ => Exit::Error,
    };
    // `token get` sends no DPoP proof, so a DPoP refusal means the client (or its identity) is
    // required to use DPoP: say what to do instead of leaving the reader with the bare code.
    let hint = if code == "invalid_dpop_proof" || code == "use_dpop_nonce" {
        " (this client must prove possession of a key with DPoP, RFC 9449; `sigil token get` sends no DPoP proof, so use a DPoP-capable OAuth library)"
    } else {
        ""
    };
    Failure {
        exit,
        message: format!("{code} ({status}): {desc}{hint}"),
    }
}

pub async fn token(g: &Global, c: TokenCommand) -> Result<(), Failure> {
    let api = api_client(g)?;
    match c {
        TokenCommand::Get {
            client_id,
            key_file,
            secret,
            resource,
            scopes,
        } => {
            for s in &scopes {
                sigil_types::Scope::parse(s)?;
            }
            let meta = api.metadata().await?;
            let endpoint = meta
                .get("token_endpoint")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::error("the server's metadata has no token_endpoint"))?
                .to_owned();
            let mut form: Vec<(&str, String)> =
                vec![("grant_type", "client_credentials".into()), ("resource", resource)];
            if !scopes.is_empty() {
                form.push(("scope", scopes.join(" ")));
            }
            let (status, body) = match (key_file, secret) {
                (Some(k), None) => {
                    let (key, _) = load_key(&k)?;
                    form.push((
                        "client_assertion_type",
                        sigil_core::oauth::client_auth::JWT_BEARER_ASSERTION.into(),
                    ));
                    form.push(("client_assertion", assertion(&key, &client_id, &endpoint)?));
                    api.oauth_form(&endpoint, &form, None).await?
                }
                (None, Some(s)) => api.oauth_form(&endpoint, &form, Some((&client_id, &s))).await?,
                _ => return Err(Failure::invalid("give --key-file or --secret")),
            };
            if status != 200 {
                return Err(oauth_failure(status, &body));
            }
            match g.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default()),
                Output::Text => println!(
                    "{}",
                    body.get("access_token").and_then(Value::as_str).unwrap_or_default()
                ),
            }
        }
        TokenCommand::Revoke { access_token } => {
            api.revoke_token(&access_token).await?;
            // RFC 7009 §2.2: the server answers the same whether or not the token was active.
            output::report(
                g.output,
                serde_json::json!({ "result": "revoked" }),
                "revoked (if it was an active token)",
            );
        }
        TokenCommand::Introspect { access_token } => {
            let v = api.introspect_token(&access_token).await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
    }
    Ok(())
}

/// An RFC 7523 client assertion: iss = sub = client id, aud = the token endpoint, one minute.
fn assertion(key: &SigningKey, client_id: &str, aud: &str) -> Result<String, Failure> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let jti = b64url(&sigil_crypto::random_bytes::<16>().map_err(|e| Failure::error(e.to_string()))?);
    let claims = json!({ "iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60, "jti": jti });
    sigil_crypto::sign_compact(key, "JWT", claims.to_string().as_bytes()).map_err(|e| Failure::error(e.to_string()))
}

pub async fn registration_token(g: &Global, c: crate::cli::RegistrationTokenCommand) -> Result<(), Failure> {
    use crate::cli::RegistrationTokenCommand;
    let (owner, identity, ttl) = match c {
        RegistrationTokenCommand::Create { owner, identity, ttl } => (owner, identity, ttl),
        RegistrationTokenCommand::List => {
            let list = api_client(g)?.list_registration_tokens().await?;
            let rows: Vec<Value> = list.items.iter().filter_map(|t| serde_json::to_value(t).ok()).collect();
            output::table(
                g.output,
                &rows,
                &["id", "owner", "identity", "expires_at", "created_by"],
            );
            return Ok(());
        }
        RegistrationTokenCommand::Revoke { id } => {
            api_client(g)?.revoke_registration_token(&id).await?;
            output::done(g.output, "revoked", &id);
            return Ok(());
        }
    };
    let ttl = sigil_server::config::parse_duration("ttl", &ttl).map_err(|e| Failure::invalid(e.to_string()))?;
    let req = sigil_proto::admin::CreateRegistrationToken {
        owner,
        identity,
        ttl_seconds: Some(ttl.as_secs()),
    };
    let view = api_client(g)?.create_registration_token(&req).await?;
    match g.output {
        Output::Json => output::item(g.output, &view),
        Output::Text => {
            println!("{}", view.token);
            eprintln!(
                "(initial access token {} for {}, expires {}; shown once; revoke with: sigil registration-token revoke {})",
                view.id, view.registration_endpoint, view.expires_at, view.id
            );
        }
    }
    Ok(())
}

pub async fn issuer(g: &Global, c: crate::cli::IssuerCommand) -> Result<(), Failure> {
    use crate::cli::IssuerCommand;
    let api = api_client(g)?;
    match c {
        IssuerCommand::Add {
            issuer,
            jwks_file,
            jwks_uri,
            username_claim,
            audiences,
            id_jag,
        } => {
            let jwks = jwks_file.as_deref().map(read_json).transpose()?;
            let req = sigil_proto::admin::CreateTrustedIssuer {
                issuer,
                jwks,
                jwks_uri,
                username_claim,
                audiences,
                accept_id_jag: id_jag,
            };
            let view = api.add_trusted_issuer(&req).await?;
            match g.output {
                Output::Json => output::item(g.output, &view),
                Output::Text => println!("{}  {}", view.id, view.issuer),
            }
        }
        IssuerCommand::List => {
            let list = api.list_trusted_issuers().await?;
            let rows: Vec<Value> = list.items.iter().filter_map(|i| serde_json::to_value(i).ok()).collect();
            output::table(
                g.output,
                &rows,
                &["id", "issuer", "username_claim", "accept_id_jag", "created_at"],
            );
        }
        IssuerCommand::Delete { id } => {
            api.delete_trusted_issuer(&id).await?;
            output::done(g.output, "deleted", &id);
        }
    }
    Ok(())
}

fn entry_request(a: crate::cli::EntryArgs) -> Result<sigil_proto::admin::EntryRequest, Failure> {
    let secs = |field: &'static str, v: Option<String>| -> Result<Option<u64>, Failure> {
        v.map(|d| {
            sigil_server::config::parse_duration(field, &d)
                .map(|d| d.as_secs())
                .map_err(|e| Failure::invalid(e.to_string()))
        })
        .transpose()
    };
    Ok(sigil_proto::admin::EntryRequest {
        spiffe_id: a.spiffe_id,
        parent_id: a.parent_id,
        selectors: a.selectors,
        identity: a.identity,
        x509_ttl_seconds: secs("x509-ttl", a.x509_ttl)?,
        jwt_ttl_seconds: secs("jwt-ttl", a.jwt_ttl)?,
        dns_names: a.dns_names,
    })
}

pub async fn entry(g: &Global, c: crate::cli::EntryCommand) -> Result<(), Failure> {
    use crate::cli::EntryCommand;
    let api = api_client(g)?;
    match c {
        EntryCommand::Create(a) => {
            let view = api.create_entry(&entry_request(a)?).await?;
            match g.output {
                Output::Json => output::item(g.output, &view),
                Output::Text => println!("{}  {}", view.id, view.spiffe_id),
            }
        }
        EntryCommand::Update { id, args } => {
            output::item(g.output, &api.update_entry(&id, &entry_request(args)?).await?)
        }
        EntryCommand::List { parent_id, spiffe_id } => {
            let mut q = Vec::new();
            if let Some(p) = parent_id {
                q.push(("parent_id", p));
            }
            if let Some(s) = spiffe_id {
                q.push(("spiffe_id", s));
            }
            let list = api.list_entries(&q).await?;
            let rows: Vec<Value> = list.items.iter().filter_map(|i| serde_json::to_value(i).ok()).collect();
            output::table(
                g.output,
                &rows,
                &["id", "spiffe_id", "parent_id", "selectors", "identity"],
            );
        }
        EntryCommand::Show { id } => output::item(g.output, &api.get_entry(&id).await?),
        EntryCommand::Delete { id } => {
            api.delete_entry(&id).await?;
            output::done(g.output, "deleted", &id);
        }
    }
    Ok(())
}
