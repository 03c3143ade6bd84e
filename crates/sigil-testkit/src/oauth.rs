//! The smallest OAuth world a test needs: a user, an agent, a resource, a client, a token.

use sigil_client::Client;
use sigil_proto::admin::ClientView;

/// The resource [`agent_with_secret_client`] registers.
pub const API: &str = "https://api.example.com";

/// A request body from JSON (each call site names its type).
macro_rules! body {
    ($($json:tt)+) => {
        serde_json::from_value(serde_json::json!($($json)+))
            .unwrap_or_else(|e| crate::fail(&format!("test body: {e}")))
    };
}

fn step(what: &str, e: sigil_client::ClientError) -> ! {
    crate::fail(&format!("{what}: {e}"))
}

/// User `alice`, her agent `bot` (ceiling `read`), the resource [`API`] (scope `read`) and a
/// `client_secret_basic` client of `bot`, whose secret the returned view carries.
pub async fn agent_with_secret_client(c: &Client) -> ClientView {
    c.create_user(&body!({"username": "alice"}))
        .await
        .unwrap_or_else(|e| step("user", e));
    c.create_identity(
        crate::Family::Agents,
        &body!({"name": "bot", "owner": "alice", "ceiling": {"scopes": ["read"]}}),
    )
    .await
    .unwrap_or_else(|e| step("agent", e));
    c.create_resource(&body!({"uri": API, "name": "api", "owner": "alice", "scopes": ["read"]}))
        .await
        .unwrap_or_else(|e| step("resource", e));
    c.create_client(&body!({"identity": "bot", "token_endpoint_auth_method": "client_secret_basic"}))
        .await
        .unwrap_or_else(|e| step("client", e))
}

/// The token response for `client` at `server`, asked the way an agent asks: client_credentials
/// with client_secret_basic, for [`API`].
pub async fn client_credentials_token(server: &str, client: &ClientView) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(format!("{server}/token"))
        .basic_auth(&client.client_id, client.client_secret.as_deref())
        .form(&[("grant_type", "client_credentials"), ("resource", API)])
        .send()
        .await
        .unwrap_or_else(|e| crate::fail(&format!("POST /token: {e}")));
    resp.json()
        .await
        .unwrap_or_else(|e| crate::fail(&format!("token response: {e}")))
}
