// Sigil's token service driven by openid-client (discovery, client_credentials, DPoP) and its
// tokens verified by jose — both by panva, neither written here.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import * as jose from 'jose';
import * as client from 'openid-client';

import { API, startSigil } from './sigil.mjs';

let sigil;
before(async () => {
  sigil = await startSigil();
});
after(() => sigil.stop());

async function discover(c, auth) {
  return client.discovery(new URL(sigil.url), c.client_id, undefined, auth, { execute: [client.allowInsecureRequests] });
}

test('openid-client: discovery and client_credentials with client_secret_basic', async () => {
  const c = await sigil.admin('POST', '/admin/v1/clients', { identity: 'bot', token_endpoint_auth_method: 'client_secret_basic' });
  const config = await discover(c, client.ClientSecretBasic(c.client_secret));
  assert.equal(config.serverMetadata().issuer, sigil.url);
  const tokens = await client.clientCredentialsGrant(config, { resource: API, scope: 'read' });
  assert.equal(tokens.token_type.toLowerCase(), 'bearer');
  assert.equal(tokens.scope, 'read');

  // jose verifies the RFC 9068 token against the published JWKS.
  const jwks = jose.createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(tokens.access_token, jwks, {
    issuer: sigil.url,
    audience: API,
    typ: 'at+jwt',
    requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id', 'scope'],
  });
  assert.equal(protectedHeader.typ, 'at+jwt');
  assert.equal(payload.client_id, c.client_id);
  await assert.rejects(jose.jwtVerify(tokens.access_token, jwks, { audience: 'https://other.example.com' }));
});

test('openid-client: private_key_jwt with an Ed25519 key', async () => {
  const { privateKey, publicKey } = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = { ...(await jose.exportJWK(publicKey)), kid: 'node-ed25519', alg: 'EdDSA', use: 'sig' };
  const c = await sigil.admin('POST', '/admin/v1/clients', { identity: 'bot', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [jwk] } });
  const config = await discover(c, client.PrivateKeyJwt({ key: privateKey, kid: 'node-ed25519' }));
  const tokens = await client.clientCredentialsGrant(config, { resource: API });
  assert.deepEqual(tokens.scope.split(' ').sort(), ['read', 'write']);
});

test('openid-client: DPoP-bound tokens (RFC 9449)', async () => {
  const c = await sigil.admin('POST', '/admin/v1/clients', { identity: 'bot', token_endpoint_auth_method: 'client_secret_basic', dpop_bound_access_tokens: true });
  const config = await discover(c, client.ClientSecretBasic(c.client_secret));
  const keyPair = await client.randomDPoPKeyPair('ES256');
  const DPoP = client.getDPoPHandle(config, keyPair);
  const tokens = await client.clientCredentialsGrant(config, { resource: API }, { DPoP });
  assert.equal(tokens.token_type.toLowerCase(), 'dpop');
  const claims = jose.decodeJwt(tokens.access_token);
  const thumbprint = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey));
  assert.equal(claims.cnf.jkt, thumbprint);
  // Without a proof this client is refused.
  await assert.rejects(client.clientCredentialsGrant(config, { resource: API }), (e) => e.error === 'invalid_dpop_proof');
});
