"""Starts a real `sigil serve` on a free loopback port with a fresh data directory."""

import json
import os
import socket
import subprocess
import tempfile
import time

import pytest
import requests

API = "https://api.example.com"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sigil:
    def __init__(self, url, token, data_dir):
        self.url = url
        self.token = token
        self.data_dir = data_dir

    def admin(self, method, path, body=None):
        r = requests.request(method, self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def client(self, identity, method, jwks=None):
        body = {"identity": identity, "token_endpoint_auth_method": method}
        if jwks is not None:
            body["jwks"] = jwks
        return self.admin("POST", "/admin/v1/clients", body)


@pytest.fixture(scope="session")
def sigil():
    data = tempfile.mkdtemp(prefix="sigil-interop-")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [os.environ.get("SIGIL_BIN", "sigil"), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SIGIL_LOG_LEVEL": "warn"},
    )
    deadline = time.time() + 20
    while True:
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.time() < deadline, "sigil did not start"
        time.sleep(0.05)
    with open(os.path.join(data, "admin-token")) as f:
        s = Sigil(url, f.read().strip(), data)
    s.admin("POST", "/admin/v1/users", {"username": "alice"})
    s.admin("POST", "/admin/v1/agents", {"name": "bot", "owner": "alice", "ceiling": {"scopes": ["read", "write"]}})
    s.admin("POST", "/admin/v1/resources", {"uri": API, "name": "api", "owner": "alice", "scopes": ["read", "write", "admin"]})
    yield s
    proc.terminate()
    proc.wait(timeout=10)
