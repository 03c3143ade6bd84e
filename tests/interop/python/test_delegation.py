"""Delegation driven by third-party clients: authlib runs the authorization code flow with PKCE,
refresh rotation and RFC 8693 token exchange; requests fills in Sigil's HTML sign-in and consent
forms as a browser would; PyJWT checks the `act` chains in the issued tokens."""

import secrets
import uuid
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.jose import JsonWebKey
from authlib.jose import jwt as authlib_jwt
from authlib.oidc.core import CodeIDToken

from conftest import API

CB = "http://127.0.0.1:8765/cb"
PASSWORD = "correct horse battery"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


def _metadata(sigil):
    return requests.get(sigil.url + "/.well-known/oauth-authorization-server", timeout=5).json()


class _Inputs(HTMLParser):
    """Collects name -> value of every <input> with a value (html.parser unescapes &amp; etc.)."""

    def __init__(self):
        super().__init__()
        self.values = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and "name" in a and "value" in a:
            self.values[a["name"]] = a["value"]


def _hidden(html):
    parser = _Inputs()
    parser.feed(html)
    return parser.values


def _fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _user(sigil):
    """A new user with a password; returns (username, user id)."""
    name = _fresh("carol")
    sigil.admin("POST", "/admin/v1/users", {"username": name})
    sigil.admin("PUT", f"/admin/v1/users/{name}/password", {"password": PASSWORD})
    return name, sigil.admin("GET", f"/admin/v1/users/{name}")["id"]


def _agent(sigil, prefix, scopes=("read", "write")):
    """A new agent owned by alice; returns (name, identity id)."""
    name = _fresh(prefix)
    sigil.admin("POST", "/admin/v1/agents", {"name": name, "owner": "alice", "ceiling": {"scopes": list(scopes)}})
    return name, sigil.admin("GET", f"/admin/v1/agents/{name}")["id"]


def _secret_client(sigil, agent):
    """A confidential (client_secret_basic) authlib session for the agent."""
    c = sigil.client(agent, "client_secret_basic")
    return OAuth2Session(c["client_id"], c["client_secret"], token_endpoint_auth_method="client_secret_basic")


def _browser(authorize_url, username, decision="allow"):
    """Signs in and answers the consent page like a browser; returns the 303 Location."""
    b = requests.Session()
    page = b.get(authorize_url, timeout=5)
    assert page.status_code == 200, page.text
    assert "sigil_csrf" in b.cookies.get_dict(path="/authorize")
    form = _hidden(page.text)
    assert form["request"] == urlsplit(authorize_url).query  # unescaped back to the raw query
    login = b.post(page.url.split("?")[0] + "/login", data={**form, "username": username, "password": PASSWORD}, timeout=5)
    assert login.status_code == 200, login.text
    consent = {k: v for k, v in _hidden(login.text).items() if k in ("request", "csrf", "ticket")}
    r = b.post(page.url.split("?")[0] + "/consent", data={**consent, "decision": decision}, allow_redirects=False, timeout=5)
    assert r.status_code == 303, r.text
    return r.headers["Location"]


def _delegate(sigil, meta, scope="read write", **extra):
    """Runs the whole authorization code + PKCE flow with authlib for a new user and agent."""
    username, user_id = _user(sigil)
    agent, agent_id = _agent(sigil, "assistant")
    client_id = sigil.admin("POST", "/admin/v1/clients", {"identity": agent, "token_endpoint_auth_method": "none", "redirect_uris": [CB]})["client_id"]
    session = OAuth2Session(client_id, redirect_uri=CB, scope=scope, code_challenge_method="S256")
    verifier = secrets.token_urlsafe(48)
    url, state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, resource=API, **extra)
    location = _browser(url, username)
    token = session.fetch_token(meta["token_endpoint"], authorization_response=location, state=state, code_verifier=verifier)
    return {"session": session, "token": token, "location": location, "user_id": user_id, "agent_id": agent_id, "client_id": client_id}


def _verify(meta, access):
    """PyJWT checks signature (key and algorithm from the JWKS), typ, iss, aud, exp."""
    assert jwt.get_unverified_header(access)["typ"] == "at+jwt"
    key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(access)
    return jwt.decode(access, key.key, algorithms=[key.algorithm_name], audience=API, issuer=meta["issuer"], options={"require": ["exp", "iat", "sub", "act"]})


def _introspect(sigil, token):
    return sigil.admin("POST", "/admin/v1/tokens/introspect", {"token": token})


def _exchange(session, meta, subject_token, scope="read"):
    return session.fetch_token(meta["token_endpoint"], grant_type=EXCHANGE, subject_token=subject_token, subject_token_type=ACCESS_TOKEN, resource=API, scope=scope)


def test_authlib_authorization_code_with_pkce(sigil):
    meta = _metadata(sigil)
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    d = _delegate(sigil, meta)
    response = parse_qs(urlsplit(d["location"]).query)
    assert d["location"].startswith(CB + "?")
    assert response["iss"] == [meta["issuer"]]  # RFC 9207
    claims = _verify(meta, d["token"]["access_token"])
    assert claims["sub"] == d["user_id"]
    assert claims["act"] == {"sub": d["agent_id"], "client_id": d["client_id"]}
    assert claims["scope"] == "read write" and d["token"]["scope"] == "read write"
    assert d["token"]["token_type"] == "Bearer" and d["token"]["refresh_token"]


def test_openid_connect_id_token_checked_by_authlib(sigil):
    """A relying party's view: authlib's OpenID Connect ID token rules (Core §3.1.3.7) over an ID
    token verified with the key the JWKS names, RS256 as OpenID Connect requires by default."""
    meta = requests.get(sigil.url + "/.well-known/openid-configuration", timeout=5).json()
    assert "RS256" in meta["id_token_signing_alg_values_supported"]
    nonce = secrets.token_urlsafe(16)
    d = _delegate(sigil, meta, scope="openid read", nonce=nonce)
    id_token = d["token"]["id_token"]
    assert jwt.get_unverified_header(id_token)["alg"] == "RS256"
    jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=5).json())
    claims = authlib_jwt.decode(
        id_token,
        jwks,
        claims_cls=CodeIDToken,
        claims_options={"iss": {"values": [meta["issuer"]]}},
        claims_params={"nonce": nonce, "client_id": d["client_id"]},
    )
    claims.validate()
    assert claims["sub"] == d["user_id"] and claims["aud"] == d["client_id"]
    # The access token beside it is still for the resource, without openid.
    assert _verify(meta, d["token"]["access_token"])["scope"] == "read"


def test_openid_connect_sign_in_without_a_resource_reads_userinfo(sigil):
    """A relying party that only signs its user in names no API (RFC 8707's resource is
    optional): authlib's session then reads the user's claims at the UserInfo endpoint the
    discovery document names (Core §5.3), and that access token opens no API."""
    meta = requests.get(sigil.url + "/.well-known/openid-configuration", timeout=5).json()
    username, user_id = _user(sigil)
    agent, _ = _agent(sigil, "login")
    client_id = sigil.admin("POST", "/admin/v1/clients", {"identity": agent, "token_endpoint_auth_method": "none", "redirect_uris": [CB]})["client_id"]
    session = OAuth2Session(client_id, redirect_uri=CB, scope="openid profile", code_challenge_method="S256")
    verifier = secrets.token_urlsafe(48)
    url, state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce="n-1")
    token = session.fetch_token(meta["token_endpoint"], authorization_response=_browser(url, username), state=state, code_verifier=verifier)
    assert set(token["scope"].split()) == {"openid", "profile"}
    info = session.get(meta["userinfo_endpoint"], timeout=5)
    assert info.status_code == 200, info.text
    assert info.json() == {"sub": user_id, "preferred_username": username}
    assert jwt.decode(token["id_token"], options={"verify_signature": False})["sub"] == user_id
    # The token's audience is the UserInfo endpoint: no resource server would accept it.
    assert jwt.decode(token["access_token"], options={"verify_signature": False})["aud"] == meta["userinfo_endpoint"]
    refused = requests.get(meta["userinfo_endpoint"], headers={"Authorization": "Bearer " + token["access_token"] + "x"}, timeout=5)
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_authlib_refresh_rotation_and_reuse_detection(sigil):
    meta = _metadata(sigil)
    d = _delegate(sigil, meta)
    session, first = d["session"], d["token"]["refresh_token"]
    second = session.refresh_token(meta["token_endpoint"], refresh_token=first)
    assert second["refresh_token"] != first
    assert _verify(meta, second["access_token"])["sub"] == d["user_id"]
    with pytest.raises(OAuthError) as reuse:
        session.refresh_token(meta["token_endpoint"], refresh_token=first)
    assert reuse.value.error == "invalid_grant"
    # Reuse revoked the whole family: the newer refresh token and its access token are dead too.
    with pytest.raises(OAuthError) as after:
        session.refresh_token(meta["token_endpoint"], refresh_token=second["refresh_token"])
    assert after.value.error == "invalid_grant"
    assert _introspect(sigil, second["access_token"])["active"] is False
    assert _introspect(sigil, d["token"]["access_token"])["active"] is False


def test_authlib_token_exchange_builds_an_act_chain(sigil):
    meta = _metadata(sigil)
    d = _delegate(sigil, meta)
    helper, helper_id = _agent(sigil, "helper")
    sub, sub_id = _agent(sigil, "subhelper", scopes=("read",))
    helper_session = _secret_client(sigil, helper)
    first = _exchange(helper_session, meta, d["token"]["access_token"])
    assert first["issued_token_type"] == ACCESS_TOKEN and first["scope"] == "read"
    second = _exchange(_secret_client(sigil, sub), meta, first["access_token"])
    user_claims = _verify(meta, d["token"]["access_token"])
    c1, c2 = _verify(meta, first["access_token"]), _verify(meta, second["access_token"])
    assert c1["sub"] == c2["sub"] == d["user_id"]
    assert c1["act"] == {"sub": helper_id, "client_id": helper_session.client_id, "act": user_claims["act"]}
    assert c2["act"]["sub"] == sub_id
    assert c2["act"]["act"]["sub"] == helper_id
    assert c2["act"]["act"]["act"] == {"sub": d["agent_id"], "client_id": d["client_id"]}
    assert c1["exp"] <= user_claims["exp"] and c2["exp"] <= c1["exp"]
    info = _introspect(sigil, second["access_token"])
    assert info["active"] is True and info["sub"] == d["user_id"] and info["act"] == c2["act"]
    records = sigil.admin("GET", "/admin/v1/audit/records?type=token.exchanged")["items"]
    mine = [i["record"] for i in sorted(records, key=lambda i: i["seq"]) if i["record"]["subject"] == d["user_id"]]
    assert [r["actors"] for r in mine] == [[helper_id, d["agent_id"]], [sub_id, helper_id, d["agent_id"]]]
    # An agent already in the chain may not join it again; a scope beyond the ceiling is refused.
    with pytest.raises(OAuthError) as loop:
        _exchange(helper_session, meta, second["access_token"])
    assert loop.value.error == "invalid_request" and "chain" in loop.value.description  # RFC 8693 §2.2.2
    with pytest.raises(OAuthError) as wide:
        _exchange(_secret_client(sigil, sub), meta, first["access_token"], scope="write")
    assert wide.value.error == "invalid_scope"


def _authorize_query(client_id, state, **extra):
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": CB, "scope": "read", "state": state, "resource": API}
    return urlencode({**params, **extra})


def test_bad_requests_are_refused(sigil):
    meta = _metadata(sigil)
    d = _delegate(sigil, meta)
    start = meta["authorization_endpoint"]
    # PKCE "plain" is not allowed (OAuth 2.1): an error redirect, with state and iss.
    q = _authorize_query(d["client_id"], "s1", code_challenge="x" * 43, code_challenge_method="plain")
    r = requests.get(f"{start}?{q}", allow_redirects=False, timeout=5)
    assert r.status_code == 303, r.text
    err = parse_qs(urlsplit(r.headers["Location"]).query)
    assert err["error"] == ["invalid_request"] and err["state"] == ["s1"] and err["iss"] == [meta["issuer"]]
    # A login form posted without the CSRF cookie is refused.
    verifier = secrets.token_urlsafe(48)
    session = OAuth2Session(d["client_id"], redirect_uri=CB, scope="read", code_challenge_method="S256")
    url, state = session.create_authorization_url(start, code_verifier=verifier, resource=API)
    form = _hidden(requests.get(url, timeout=5).text)
    username, _ = _user(sigil)
    r = requests.post(start + "/login", data={**form, "username": username, "password": PASSWORD}, timeout=5)
    assert r.status_code == 403, r.text
    # With the cookie, a wrong password shows the sign-in page again (200: not an HTTP challenge).
    b = requests.Session()
    form = _hidden(b.get(url, timeout=5).text)
    r = b.post(start + "/login", data={**form, "username": username, "password": "wrong password!"}, timeout=5)
    assert r.status_code == 200 and "wrong username or password" in r.text and "ticket" not in _hidden(r.text)
    # A wrong code_verifier is invalid_grant; so is the code once it was redeemed.
    location = _browser(url, username)
    code = parse_qs(urlsplit(location).query)["code"][0]
    form = {"grant_type": "authorization_code", "client_id": d["client_id"], "code": code, "redirect_uri": CB}
    wrong = requests.post(meta["token_endpoint"], data={**form, "code_verifier": secrets.token_urlsafe(48)}, timeout=5)
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    assert "code_verifier" in wrong.json()["error_description"]
    fresh = _browser(url, username)
    issued = session.fetch_token(meta["token_endpoint"], authorization_response=fresh, state=state, code_verifier=verifier)
    assert _introspect(sigil, issued["access_token"])["active"] is True
    with pytest.raises(OAuthError) as reuse:
        session.fetch_token(meta["token_endpoint"], authorization_response=fresh, state=state, code_verifier=verifier)
    assert reuse.value.error == "invalid_grant"
    # RFC 6749 §4.1.2: tokens already issued from a reused code are revoked.
    assert _introspect(sigil, issued["access_token"]) == {"active": False}
    # Saying no sends the user back with access_denied.
    denied = parse_qs(urlsplit(_browser(url, username, decision="deny")).query)
    assert denied["error"] == ["access_denied"] and denied["state"] == [state]
