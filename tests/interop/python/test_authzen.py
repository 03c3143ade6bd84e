"""AuthZEN Authorization API 1.0 with a plain HTTP client (requests), using the request and
response shapes of the specification's own examples (openid/authzen, authorization-api-1_0.md:
the single evaluation of §12.1, the boxcarred evaluations of §7 and §12.2)."""

import pytest
import requests

SCHEMA = """
namespace Sigil {
  entity todo;
  entity document;
  action "can_read" appliesTo { principal: [User], resource: [todo, document], context: Context };
  action "can_edit" appliesTo { principal: [User], resource: [document], context: Context };
  action "read" appliesTo { principal: [User], resource: [document], context: Context };
}
"""

POLICIES = """
@id("alice-reads-todos")
permit (principal == Sigil::User::"alice@example.com", action == Sigil::Action::"can_read", resource is Sigil::todo);
@id("read-documents-but-2")
permit (principal, action == Sigil::Action::"read", resource is Sigil::document)
unless { resource == Sigil::document::"2" };
@id("read-public-docs")
permit (principal, action == Sigil::Action::"can_read", resource == Sigil::document::"boxcarring.md");
"""


@pytest.fixture(scope="module")
def pdp(sigil):
    sigil.admin("POST", "/admin/v1/users", {"username": "alice@example.com"})
    sigil.admin("POST", "/admin/v1/policies", {"policies": POLICIES, "schema": SCHEMA, "activate": True})
    # The PEP is a resource server: a workload with an OAuth client of Sigil.
    sigil.admin("POST", "/admin/v1/workloads", {"name": "todo-api", "owner": "alice", "kind": "service"})
    client = sigil.client("todo-api", "client_secret_basic")
    return sigil, (client["client_id"], client["client_secret"])


def post(pdp, path, body, headers=None):
    sigil, auth = pdp
    return requests.post(sigil.url + path, json=body, auth=auth, headers=headers or {}, timeout=10)


def test_metadata_names_the_endpoints(pdp):
    sigil, _ = pdp
    r = requests.get(sigil.url + "/.well-known/authzen-configuration", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    meta = r.json()
    assert meta["policy_decision_point"] == sigil.url
    assert meta["access_evaluation_endpoint"] == sigil.url + "/access/v1/evaluation"
    assert meta["access_evaluations_endpoint"] == sigil.url + "/access/v1/evaluations"


def test_single_evaluation_example(pdp):
    # §12.1.1, verbatim, with its X-Request-ID.
    body = {
        "subject": {"type": "user", "id": "alice@example.com"},
        "resource": {"type": "todo", "id": "1"},
        "action": {"name": "can_read"},
        "context": {"time": "1985-10-26T01:22-07:00"},
    }
    rid = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"
    r = post(pdp, "/access/v1/evaluation", body, {"X-Request-ID": rid})
    assert r.status_code == 200, r.text
    assert r.json() == {"decision": True}
    assert r.headers["x-request-id"] == rid


def _documents(semantic):
    # §7.2's example: one subject and action, three documents.
    return {
        "subject": {"type": "user", "id": "alice@example.com"},
        "action": {"name": "read"},
        "options": {"evaluations_semantic": semantic},
        "evaluations": [
            {"resource": {"type": "document", "id": "1"}},
            {"resource": {"type": "document", "id": "2"}},
            {"resource": {"type": "document", "id": "3"}},
        ],
    }


def _decisions(r):
    assert r.status_code == 200, r.text
    return [e["decision"] for e in r.json()["evaluations"]]


def test_evaluations_semantics(pdp):
    assert _decisions(post(pdp, "/access/v1/evaluations", _documents("execute_all"))) == [True, False, True]
    assert _decisions(post(pdp, "/access/v1/evaluations", _documents("deny_on_first_deny"))) == [True, False]
    assert _decisions(post(pdp, "/access/v1/evaluations", _documents("permit_on_first_permit"))) == [True]


def test_boxcarred_evaluations_with_defaults_and_override(pdp):
    # §12.2's example: top-level subject, context and action; the third item overrides the action.
    body = {
        "subject": {"type": "user", "id": "alice@example.com"},
        "context": {"time": "2024-05-31T15:22-07:00"},
        "action": {"name": "can_read"},
        "evaluations": [
            {"resource": {"type": "document", "id": "boxcarring.md"}},
            {"resource": {"type": "document", "id": "subject-search.md"}},
            {"action": {"name": "can_edit"}, "resource": {"type": "document", "id": "resource-search.md"}},
        ],
    }
    r = post(pdp, "/access/v1/evaluations", body)
    assert _decisions(r) == [True, False, False]
    # A deny says why, in the response context the specification's examples use.
    assert "403" in r.json()["evaluations"][1]["context"]["reason_admin"]


def test_without_evaluations_a_batch_is_a_single_evaluation(pdp):
    body = {"subject": {"type": "user", "id": "alice@example.com"}, "resource": {"type": "todo", "id": "1"}, "action": {"name": "can_read"}}
    r = post(pdp, "/access/v1/evaluations", body)
    assert r.status_code == 200
    assert r.json() == {"decision": True}


def test_errors(pdp):
    sigil, _ = pdp
    body = {"subject": {"type": "user", "id": "alice@example.com"}, "resource": {"type": "todo", "id": "1"}, "action": {"name": "can_read"}}
    # An unauthenticated PEP gets 401 with a challenge.
    r = requests.post(sigil.url + "/access/v1/evaluation", json=body, timeout=10)
    assert r.status_code == 401
    assert "www-authenticate" in r.headers
    # An agent's client is not a PEP: the PDP does not answer agents about their own access.
    agent_client = sigil.client("bot", "client_secret_basic")
    r = requests.post(sigil.url + "/access/v1/evaluation", json=body, auth=(agent_client["client_id"], agent_client["client_secret"]), timeout=10)
    assert r.status_code == 403
    # A missing required member is a Bad Request.
    r = post(pdp, "/access/v1/evaluation", {"subject": body["subject"], "action": body["action"]})
    assert r.status_code == 400
    # Unknown members are ignored, as receivers must.
    r = post(pdp, "/access/v1/evaluation", {**body, "extension": {"x": 1}})
    assert r.status_code == 200 and r.json()["decision"] is True
