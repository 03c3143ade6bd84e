// oidc-provider configured like Sigil's benchmark: client_credentials, client_secret_basic,
// resource indicators issuing JWT access tokens (EdDSA) for https://api.example.com, 5 minutes.
// Usage: node provider.mjs PORT [--cluster]
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';

import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

const port = Number(process.argv[2] ?? 3000);
const API = 'https://api.example.com';

if (process.argv.includes('--cluster') && cluster.isPrimary) {
  // Every worker needs the same signing key: make it once and hand it down.
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = JSON.stringify({ ...(await exportJWK(privateKey)), kid: 'bench', alg: 'EdDSA', use: 'sig' });
  for (let i = 0; i < availableParallelism(); i++) cluster.fork({ BENCH_JWK: jwk });
} else {
  let jwk = process.env.BENCH_JWK ? JSON.parse(process.env.BENCH_JWK) : null;
  if (!jwk) {
    const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    jwk = { ...(await exportJWK(privateKey)), kid: 'bench', alg: 'EdDSA', use: 'sig' };
  }
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [
      {
        client_id: 'bench',
        client_secret: 'bench-secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
        // The only key is Ed25519; the default (RS256) would have no key to sign with.
        id_token_signed_response_alg: 'EdDSA',
      },
    ],
    jwks: { keys: [jwk] },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => API,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'read write',
          audience: API,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'EdDSA' } },
        }),
      },
    },
  });
  provider.listen(port, '127.0.0.1');
}
