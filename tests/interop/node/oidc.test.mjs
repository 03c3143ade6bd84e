// A plain OpenID Connect relying party, panva's openid-client: discovery from
// /.well-known/openid-configuration, a sign-in that names no API (no `resource`), the code grant
// with PKCE, the ID token checks of OpenID Connect Core §3.1.3.7, and the UserInfo request of
// §5.3 (with its `sub` check), as a bearer token and DPoP-bound (RFC 9449 §7).
import assert from 'node:assert/strict';
import test from 'node:test';
import * as client from 'openid-client';

import { authorizeInBrowser, startSigil } from './sigil.mjs';

const PASSWORD = 'correct horse battery';
const REDIRECT = 'http://127.0.0.1:8765/cb';

async function relyingParty(t) {
  const sigil = await startSigil();
  t.after(() => sigil.stop());
  await sigil.admin('POST', '/admin/v1/users', { username: 'erin', email: 'erin@example.com', display_name: 'Erin Example' });
  await sigil.admin('PUT', '/admin/v1/users/erin/password', { password: PASSWORD });
  const c = await sigil.admin('POST', '/admin/v1/clients', {
    identity: 'bot',
    token_endpoint_auth_method: 'none',
    redirect_uris: [REDIRECT],
  });
  const config = await client.discovery(new URL(sigil.url), c.client_id, undefined, client.None(), {
    execute: [client.allowInsecureRequests],
  });
  return { sigil, config };
}

// Signs erin in (no `resource`: only who she is) and redeems the code.
async function signIn(config, scope, options) {
  const verifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    nonce,
    state,
  });
  const back = await authorizeInBrowser(url.href, { username: 'erin', password: PASSWORD });
  return client.authorizationCodeGrant(
    config,
    back,
    { pkceCodeVerifier: verifier, expectedNonce: nonce, expectedState: state },
    undefined,
    options,
  );
}

test('openid-client: sign-in without a resource, then UserInfo with the access token', async (t) => {
  const { config } = await relyingParty(t);
  assert.equal(config.serverMetadata().userinfo_endpoint, `${config.serverMetadata().issuer}/userinfo`);
  const tokens = await signIn(config, 'openid profile email');
  const id = tokens.claims();
  assert.equal(id.preferred_username, 'erin');
  const info = await client.fetchUserInfo(config, tokens.access_token, id.sub);
  assert.deepEqual(info, { sub: id.sub, preferred_username: 'erin', name: 'Erin Example', email: 'erin@example.com' });
  // openid-client refuses a UserInfo response about someone else (Core §5.3.4).
  await assert.rejects(client.fetchUserInfo(config, tokens.access_token, 'usr_someone_else'));
  // After a refresh the new access token reads the same.
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  assert.equal((await client.fetchUserInfo(config, refreshed.access_token, id.sub)).email, 'erin@example.com');
});

test('openid-client: a DPoP-bound sign-in token reads UserInfo with a proof (RFC 9449)', async (t) => {
  const { config } = await relyingParty(t);
  const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
  const tokens = await signIn(config, 'openid profile', { DPoP });
  assert.equal(tokens.token_type.toLowerCase(), 'dpop');
  const sub = tokens.claims().sub;
  const info = await client.fetchUserInfo(config, tokens.access_token, sub, { DPoP });
  assert.deepEqual(info, { sub, preferred_username: 'erin', name: 'Erin Example' });
  // Sent as a bearer token, the bound token is refused; the answer offers DPoP beside Bearer.
  await assert.rejects(client.fetchUserInfo(config, tokens.access_token, sub), (e) => {
    // openid-client parses the challenges (RFC 6750 §3, RFC 9449 §7.1) into `cause`.
    const [bearer, dpop] = e.cause;
    assert.equal(bearer.scheme, 'bearer');
    assert.equal(bearer.parameters.error, 'invalid_token');
    assert.equal(dpop.scheme, 'dpop');
    assert.match(dpop.parameters.algs, /ES256/);
    return true;
  });
});
