"""The SPIFFE Workload API of `sigil node`, driven by py-spiffe (the `spiffe` package), the
SPIFFE project's own Python client: X509-SVIDs and bundles, JWT-SVIDs and their validation,
and the agent taking an identity away once its registration entry is deleted."""

import base64
import os
import subprocess
import tempfile
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient
from spiffe.errors import PySpiffeError
from spiffe.workloadapi.errors import FetchX509SvidError, ValidateJwtSvidError

TD = TrustDomain("sigil.local")
NODE_ID = "spiffe://sigil.local/node/py"
APP_ID = "spiffe://sigil.local/py/app"
AUDIENCE = "https://api.example.com"


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def wait_for(what, fn, timeout=15):
    """Polls fn until it returns without a py-spiffe error; the agent syncs every 200ms."""
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except PySpiffeError as e:
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last error: {e}") from e
            time.sleep(0.1)


@pytest.fixture(scope="module")
def agent(sigil):
    """A node agent attested with a fresh join token, and one entry that selects this process
    (the Workload API attests the caller of the socket, which is pytest itself)."""
    join = sigil.admin("POST", "/admin/v1/nodes/join-tokens", {"spiffe_id": NODE_ID})
    work = tempfile.mkdtemp(prefix="sigil-node-")  # short: unix socket paths are limited to ~100 bytes
    sock = os.path.join(work, "api.sock")
    log = open(os.path.join(work, "node.log"), "wb")
    proc = subprocess.Popen(
        [os.environ.get("SIGIL_BIN", "sigil"), "node", "--server", sigil.url, "--join-token", join["token"],
         "--socket", sock, "--data-dir", os.path.join(work, "data"), "--sync-interval", "200ms"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SIGIL_LOG_LEVEL": "warn"},
    )
    try:
        deadline = time.time() + 20
        while not os.path.exists(sock):
            assert proc.poll() is None and time.time() < deadline, open(log.name).read()
            time.sleep(0.05)
        entry = sigil.admin("POST", "/admin/v1/entries", {
            "spiffe_id": APP_ID, "parent_id": NODE_ID, "selectors": [f"unix:uid:{os.getuid()}"], "identity": None,
        })
        with WorkloadApiClient(f"unix://{sock}", default_timeout=5) as client:
            # The entry reaches the agent on its next sync.
            wait_for("the first X509-SVID", client.fetch_x509_svid)
            yield client, entry, work
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_x509_svid_chains_to_the_trust_bundle(sigil, agent):
    client, _, work = agent
    svid = client.fetch_x509_svid()
    assert svid.spiffe_id == SpiffeId(APP_ID)
    leaf = svid.leaf
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [APP_ID]
    # The key handed out is the one the certificate was issued for.
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert svid.private_key.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        leaf.public_key().public_bytes(serialization.Encoding.DER, spki)

    bundle = client.fetch_x509_bundles().get_bundle_for_trust_domain(TD)
    assert bundle is not None
    # Some authority of the bundle (the chain's last certificate, or a root above it) signed the chain.
    top = svid.cert_chain[-1]
    issuers = [ca for ca in bundle.x509_authorities if ca.subject == top.issuer]
    assert issuers, "no CA in the sigil.local bundle issued the X509-SVID"
    top.verify_directly_issued_by(issuers[0])  # raises if the signature does not check out

    # The same authorities are published at the bundle endpoint, as x5c of x509-svid keys.
    jwks = requests.get(sigil.url + "/spiffe/bundle", timeout=10).json()["keys"]
    published = {k["x5c"][0] for k in jwks if k.get("use") == "x509-svid"}
    assert {base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode() for ca in bundle.x509_authorities} <= published

    # And a stock TLS stack agrees: openssl builds the path from leaf to the bundle.
    leaf_pem, chain_pem, bundle_pem = (os.path.join(work, n) for n in ("leaf.pem", "chain.pem", "bundle.pem"))
    with open(leaf_pem, "wb") as f:
        f.write(pem(leaf))
    with open(chain_pem, "wb") as f:
        f.write(b"".join(pem(c) for c in svid.cert_chain[1:]))
    with open(bundle_pem, "wb") as f:
        f.write(b"".join(pem(c) for c in bundle.x509_authorities))
    cmd = ["openssl", "verify", "-CAfile", bundle_pem]
    if len(svid.cert_chain) > 1:
        cmd += ["-untrusted", chain_pem]
    r = subprocess.run(cmd + [leaf_pem], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_jwt_svid_validates_remotely_and_locally(agent):
    client, _, _ = agent
    svid = client.fetch_jwt_svid(audience={AUDIENCE})
    assert svid.spiffe_id == SpiffeId(APP_ID)
    assert AUDIENCE in svid.audience

    # Validation by the agent (ValidateJWTSVID): right audience passes, any other is refused.
    assert client.validate_jwt_svid(svid.token, AUDIENCE).spiffe_id == SpiffeId(APP_ID)
    # The agent itself must refuse (InvalidArgument), not just py-spiffe's own claim check afterwards.
    with pytest.raises(ValidateJwtSvidError, match="INVALID_ARGUMENT"):
        client.validate_jwt_svid(svid.token, "https://other.example.com")

    # Validation offline, against the JWT authorities the agent hands out (signature, aud, exp).
    bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(TD)
    assert bundle is not None
    assert JwtSvid.parse_and_validate(svid.token, bundle, {AUDIENCE}).spiffe_id == SpiffeId(APP_ID)
    with pytest.raises(PySpiffeError):
        JwtSvid.parse_and_validate(svid.token, bundle, {"https://other.example.com"})


def test_deleting_the_entry_revokes_the_identity(sigil, agent):
    # Runs last in this module: it takes away the identity the other tests use.
    client, entry, _ = agent
    sigil.admin("DELETE", f"/admin/v1/entries/{entry['id']}")
    deadline = time.time() + 10
    while True:
        try:
            client.fetch_x509_svid()
        except FetchX509SvidError as e:
            # The agent answers PermissionDenied once no entry selects the caller.
            assert "PERMISSION_DENIED" in str(e), str(e)
            break
        assert time.time() < deadline, "X509-SVID still served 10s after its entry was deleted"
        time.sleep(0.1)
