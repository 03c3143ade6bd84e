"""Sigil's token service driven by authlib (a client nobody here wrote), its tokens checked by PyJWT."""

import json
import os
import subprocess
import time
import uuid

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import ECKey, OKPKey, RSAKey

from conftest import API


def _metadata(sigil):
    return requests.get(sigil.url + "/.well-known/oauth-authorization-server", timeout=5).json()


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_authlib_private_key_jwt_client_credentials(sigil, alg):
    if alg == "RS256":
        key = RSAKey.generate_key(2048, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        key = OKPKey.generate_key("Ed25519", private=True)
    public = key.as_dict(private=False)
    public["kid"] = "interop-" + alg
    client = sigil.client("bot", "private_key_jwt", {"keys": [public]})
    meta = _metadata(sigil)
    session = OAuth2Session(
        client["client_id"],
        key,
        token_endpoint_auth_method=PrivateKeyJWT(meta["token_endpoint"], alg=alg, headers={"kid": "interop-" + alg}),
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", resource=API, scope="read")
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "read"
    assert token["expires_in"] == 300


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_keys_from_sigil_client_keygen_load_in_cryptography(sigil, alg, tmp_path):
    """`sigil client keygen` writes a PKCS#8 private key that a third-party stack reads as it is
    (Python's cryptography, on OpenSSL), and authlib signs private_key_jwt assertions with it."""
    pem, jwks = tmp_path / "agent.pem", tmp_path / "agent-jwks.json"
    subprocess.run(
        [os.environ.get("SIGIL_BIN", "sigil"), "client", "keygen", "--private-key", str(pem), "--jwks", str(jwks), "--alg", alg],
        check=True,
        capture_output=True,
    )
    private = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    public = json.loads(jwks.read_text())
    kid = public["keys"][0]["kid"]
    client = sigil.client("bot", "private_key_jwt", public)
    meta = _metadata(sigil)
    as_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key = {"EdDSA": OKPKey, "ES256": ECKey, "RS256": RSAKey}[alg].import_key(as_pem)
    session = OAuth2Session(
        client["client_id"],
        key,
        token_endpoint_auth_method=PrivateKeyJWT(meta["token_endpoint"], alg=alg, headers={"kid": kid}),
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", resource=API, scope="read")
    assert token["scope"] == "read"


def test_authlib_client_secret_basic(sigil):
    client = sigil.client("bot", "client_secret_basic")
    assert client["client_secret"].startswith("sigil_cs_")
    meta = _metadata(sigil)
    session = OAuth2Session(client["client_id"], client["client_secret"], token_endpoint_auth_method="client_secret_basic")
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", resource=API)
    assert set(token["scope"].split()) == {"read", "write"}
    post = OAuth2Session(client["client_id"], client["client_secret"], token_endpoint_auth_method="client_secret_post")
    assert post.fetch_token(meta["token_endpoint"], grant_type="client_credentials", resource=API)["access_token"]


def test_pyjwt_verifies_every_rfc9068_claim(sigil):
    client = sigil.client("bot", "client_secret_basic")
    meta = _metadata(sigil)
    session = OAuth2Session(client["client_id"], client["client_secret"], token_endpoint_auth_method="client_secret_basic")
    access = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", resource=API, scope="write")["access_token"]
    header = jwt.get_unverified_header(access)
    assert header["typ"] == "at+jwt"  # RFC 9068 §2.1
    signing_key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(access)
    claims = jwt.decode(
        access,
        signing_key.key,
        algorithms=["EdDSA", "ES256"],
        audience=API,
        issuer=meta["issuer"],
        options={"require": ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"]},
    )
    assert claims["client_id"] == client["client_id"]
    assert claims["scope"] == "write"
    assert claims["sub"].startswith("idn_")
    assert claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - time.time()) < 60
    # The audience is exactly the resource: a verifier for another API refuses it.
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(access, signing_key.key, algorithms=["EdDSA", "ES256"], audience="https://other.example.com")


def test_authlib_introspection_and_revocation(sigil):
    # The resource server is a workload of its own, named as a server of the API: RFC 7662 §4
    # has the authorization server tell a resource server only about tokens meant for it.
    # (Until an API names its servers, any workload may introspect its tokens.)
    sigil.admin("POST", "/admin/v1/workloads", {"name": "api-server", "owner": "alice"})
    rs = sigil.client("api-server", "client_secret_basic")
    agent = sigil.client("bot", "client_secret_basic")
    meta = _metadata(sigil)
    agent_session = OAuth2Session(agent["client_id"], agent["client_secret"], token_endpoint_auth_method="client_secret_basic")
    access = agent_session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", resource=API)["access_token"]
    rs_session = OAuth2Session(rs["client_id"], rs["client_secret"], token_endpoint_auth_method="client_secret_basic")
    # Once the API names its servers, another identity learns nothing about its tokens.
    sigil.admin("PATCH", "/admin/v1/resources/api", {"servers": ["bot"]})
    assert rs_session.introspect_token(meta["introspection_endpoint"], token=access).json() == {"active": False}
    sigil.admin("PATCH", "/admin/v1/resources/api", {"servers": ["api-server"]})
    info = rs_session.introspect_token(meta["introspection_endpoint"], token=access).json()
    assert info["active"] is True
    assert info["aud"] == API and info["client_id"] == agent["client_id"]
    resp = agent_session.revoke_token(meta["revocation_endpoint"], token=access)
    assert resp.status_code == 200
    assert rs_session.introspect_token(meta["introspection_endpoint"], token=access).json() == {"active": False}


def test_errors_are_rfc6749_section_5_2(sigil):
    meta = _metadata(sigil)
    client = sigil.client("bot", "client_secret_basic")
    cases = [
        ({"grant_type": "client_credentials", "resource": API}, ("nobody", "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials", "resource": "https://unregistered.example"}, (client["client_id"], client["client_secret"]), 400, "invalid_target"),
        ({"grant_type": "client_credentials", "resource": API, "scope": "admin"}, (client["client_id"], client["client_secret"]), 400, "invalid_scope"),
        ({"grant_type": "implicit", "resource": API}, (client["client_id"], client["client_secret"]), 400, "unsupported_grant_type"),
    ]
    for form, auth, status, error in cases:
        r = requests.post(meta["token_endpoint"], data=form, auth=auth, timeout=5)
        assert r.status_code == status, r.text
        assert r.json()["error"] == error
        assert r.headers["Cache-Control"] == "no-store"
        if status == 401:
            assert "WWW-Authenticate" in r.headers


def test_rfc7591_registration_then_authlib_uses_the_client(sigil):
    iat = sigil.admin("POST", "/admin/v1/registration-tokens", {"owner": "alice", "identity": "bot"})
    meta = _metadata(sigil)
    assert meta["registration_endpoint"] == iat["registration_endpoint"]
    body = {"client_name": "python agent", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_post"}
    r = requests.post(meta["registration_endpoint"], json=body, headers={"Authorization": f"Bearer {iat['token']}"}, timeout=5)
    assert r.status_code == 201, r.text
    reg = r.json()
    assert reg["client_secret_expires_at"] == 0 and reg["client_name"] == "python agent"
    session = OAuth2Session(reg["client_id"], reg["client_secret"], token_endpoint_auth_method="client_secret_post")
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", resource=API, scope="read")
    assert token["scope"] == "read"
    # RFC 7592: read with the registration access token; the response (§3) carries a new one,
    # which replaces the old (§2.1: the client MUST discard its previous token); then delete.
    auth = {"Authorization": f"Bearer {reg['registration_access_token']}"}
    read = requests.get(reg["registration_client_uri"], headers=auth, timeout=5).json()
    assert read["client_id"] == reg["client_id"] and read["registration_client_uri"] == reg["registration_client_uri"]
    assert requests.get(reg["registration_client_uri"], headers=auth, timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {read['registration_access_token']}"}
    assert requests.delete(reg["registration_client_uri"], headers=auth, timeout=5).status_code == 204
    assert requests.get(reg["registration_client_uri"], headers=auth, timeout=5).status_code == 401
