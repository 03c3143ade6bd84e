"""Sequential requests of one kind over one keep-alive connection, for measure.sh."""
import base64
import http.client
import json
import sys
import urllib.parse

url, n, kind, agent, api = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client):
    # RFC 6749 §2.3.1: id and secret form-encoded, then Basic.
    pair = f"{urllib.parse.quote(client['client_id'], safe='')}:{urllib.parse.quote(client['client_secret'], safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode(), **FORM}


def post(path, body, client):
    conn.request("POST", path, body=body, headers=basic(client))
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit(f"{path}: {r.status} {data!r}")
    return json.loads(data)


def token():
    body = "grant_type=client_credentials&resource=https%3A%2F%2Fapi.example.com&scope=read"
    return post("/token", body, agent)["access_token"]


def evaluate():
    # AuthZEN 1.0 §12.1's shape: the API asks whether alice may read a document.
    body = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
            "resource": {"type": "document", "id": "1"}}
    conn.request("POST", "/access/v1/evaluation", body=json.dumps(body),
                 headers={**basic(api), "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200 or not json.loads(data)["decision"]:
        sys.exit(f"evaluation: {r.status} {data!r}")


access_token = token()
for _ in range(n):
    if kind == "token":
        token()
    elif kind == "authzen":
        evaluate()
    elif not post("/introspect", "token=" + access_token, api)["active"]:
        sys.exit("the token is not active")
