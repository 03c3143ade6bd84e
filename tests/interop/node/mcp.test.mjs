// The MCP authorization flow end to end with the official MCP TypeScript SDK: an MCP server
// (the SDK's McpServer and Streamable HTTP transport behind node:http) accepts only Sigil access
// tokens, and the SDK's client finds Sigil through the server's protected resource metadata
// (RFC 9728), reads Sigil's metadata (RFC 8414), runs authorization code + PKCE with `resource`
// (RFC 8707) as a pre-registered public client, and calls a tool. The browser part — Sigil's
// sign-in and consent pages — is played by the test; everything else is the SDK's own code.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';

import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import * as jose from 'jose';

import { API, authorizeInBrowser, freePort, startSigil } from './sigil.mjs';

const SCOPES = ['tools:read', 'tools:call'];
const PASSWORD = 'correct horse battery staple';

// ---- the MCP server: a protected resource whose authorization server is Sigil ----

async function startMcpServer(sigilUrl) {
  const jwks = jose.createRemoteJWKSet(new URL(`${sigilUrl}/.well-known/jwks.json`));
  const seen = []; // "METHOD path" of every request, to show what the client discovered
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  const resource = `${base}/mcp`;
  // RFC 9728 §3.1: the well-known suffix goes between the host and the resource's path.
  const resourceMetadataUrl = `${base}/.well-known/oauth-protected-resource/mcp`;
  const metadata = {
    resource,
    authorization_servers: [sigilUrl],
    scopes_supported: SCOPES,
    bearer_methods_supported: ['header'],
    resource_name: 'Sigil interop MCP server',
  };

  const unauthorized = (res, error) => {
    const params = [`resource_metadata="${resourceMetadataUrl}"`];
    if (error) params.push(`error="invalid_token"`, `error_description="${error.replaceAll('"', "'")}"`);
    res.writeHead(401, { 'www-authenticate': `Bearer ${params.join(', ')}`, 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: error ? 'invalid_token' : 'unauthorized' }));
  };

  // Returns the SDK's AuthInfo for a valid Sigil access token for this resource, or answers 401.
  const authenticate = async (req, res) => {
    const m = /^Bearer ([^\s]+)$/i.exec(req.headers.authorization ?? '');
    if (!m) return unauthorized(res);
    try {
      const { payload } = await jose.jwtVerify(m[1], jwks, {
        issuer: sigilUrl,
        audience: resource,
        typ: 'at+jwt',
        algorithms: ['EdDSA'],
        requiredClaims: ['sub', 'exp', 'scope'],
      });
      return {
        token: m[1],
        clientId: payload.client_id ?? payload.act?.client_id,
        scopes: payload.scope.split(' '),
        expiresAt: payload.exp,
        resource: new URL(resource),
        extra: { claims: payload },
      };
    } catch (e) {
      return unauthorized(res, e.code ?? e.message);
    }
  };

  const mcpServer = (authInfo) => {
    const mcp = new McpServer({ name: 'sigil-interop', version: '1.0.0' });
    mcp.registerTool(
      'whoami',
      { description: 'Who the access token says is calling: the user and the agent acting for them' },
      (extra) => {
        const claims = extra.authInfo?.extra?.claims ?? {};
        const who = { sub: claims.sub, act: claims.act, client_id: extra.authInfo?.clientId, scope: claims.scope, aud: claims.aud };
        return { content: [{ type: 'text', text: JSON.stringify(who) }] };
      },
    );
    return mcp;
  };

  server.on('request', async (req, res) => {
    const path = new URL(req.url, base).pathname;
    seen.push(`${req.method} ${path}`);
    try {
      if (path === '/.well-known/oauth-protected-resource/mcp' || path === '/.well-known/oauth-protected-resource') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify(metadata));
      }
      if (path !== '/mcp') {
        res.writeHead(404);
        return res.end();
      }
      const authInfo = await authenticate(req, res);
      if (!authInfo) return;
      if (req.method !== 'POST') {
        // Stateless server: no standalone SSE stream, no sessions to delete.
        res.writeHead(405, { allow: 'POST' });
        return res.end();
      }
      // Stateless Streamable HTTP: one server and transport per request.
      const mcp = mcpServer(authInfo);
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      res.on('close', () => {
        transport.close();
        mcp.close();
      });
      await mcp.connect(transport);
      req.auth = authInfo; // what the SDK's transport hands to tool handlers as extra.authInfo
      await transport.handleRequest(req, res);
    } catch (e) {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(e?.stack ?? e));
    }
  });

  return {
    url: resource,
    resourceMetadataUrl,
    seen,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}

// ---- the client side: an OAuthClientProvider for a pre-registered public client ----

class PreRegisteredProvider {
  constructor({ clientId, issuer, redirectUrl, user }) {
    this._client = { client_id: clientId, issuer };
    this._redirectUrl = redirectUrl;
    this._user = user;
    this._tokens = undefined;
    this._verifier = undefined;
    this.authorizationUrl = undefined; // what the SDK sent the "browser" to
    this.callbackUrl = undefined; // where Sigil sent the browser back to
  }
  get redirectUrl() {
    return this._redirectUrl;
  }
  get clientMetadata() {
    return {
      redirect_uris: [this._redirectUrl],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      client_name: 'Sigil interop MCP client',
    };
  }
  state() {
    this.lastState = crypto.randomUUID();
    return this.lastState;
  }
  // Registered by the admin API; the SDK presents it only to `issuer`. No saveClientInformation:
  // the SDK must not try dynamic registration.
  clientInformation() {
    return this._client;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }
  async redirectToAuthorization(url) {
    this.authorizationUrl = new URL(url);
    this.callbackUrl = await authorizeInBrowser(url, this._user);
  }
}

// Records the client's HTTP requests (discovery, token) without changing them.
function recordingFetch(log) {
  return async (url, init) => {
    const body = init?.body instanceof URLSearchParams ? new URLSearchParams(init.body) : undefined;
    const res = await fetch(url, init);
    log.push({ method: init?.method ?? 'GET', url: String(url), body, status: res.status });
    return res;
  };
}

// ---- fixture ----

let sigil;
let mcp;
let fx;
before(async () => {
  sigil = await startSigil();
  mcp = await startMcpServer(sigil.url);
  const dana = await sigil.admin('POST', '/admin/v1/users', { username: 'dana' });
  await sigil.admin('PUT', '/admin/v1/users/dana/password', { password: PASSWORD });
  const agent = await sigil.admin('POST', '/admin/v1/agents', { name: 'mcp-client', owner: 'alice', ceiling: { scopes: SCOPES } });
  // Exactly the string the PRM advertises and the SDK sends as `resource`.
  await sigil.admin('POST', '/admin/v1/resources', { uri: mcp.url, name: 'mcp', owner: 'alice', scopes: SCOPES });
  const redirectUrl = `http://127.0.0.1:${await freePort()}/callback`;
  const client = await sigil.admin('POST', '/admin/v1/clients', {
    identity: 'mcp-client',
    token_endpoint_auth_method: 'none',
    redirect_uris: [redirectUrl],
  });
  fx = { dana, agent, clientId: client.client_id, redirectUrl };
});
after(async () => {
  await mcp?.stop();
  sigil?.stop();
});

const newProvider = () =>
  new PreRegisteredProvider({
    clientId: fx.clientId,
    issuer: sigil.url,
    redirectUrl: fx.redirectUrl,
    user: { username: 'dana', password: PASSWORD },
  });

async function connect(provider, log) {
  const client = new Client({ name: 'sigil-interop-client', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcp.url), { authProvider: provider, fetch: recordingFetch(log) });
  await client.connect(transport);
  return client;
}

async function whoami(client) {
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  assert.ok(!result.isError, JSON.stringify(result));
  return JSON.parse(result.content[0].text);
}

// ---- tests ----

test('MCP server refuses requests without a valid Sigil token (RFC 9728 §5.1 challenge)', async () => {
  const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '0' } } };
  const post = (headers = {}) =>
    fetch(mcp.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
      body: JSON.stringify(init),
    });

  const none = await post();
  assert.equal(none.status, 401);
  assert.equal(none.headers.get('www-authenticate'), `Bearer resource_metadata="${mcp.resourceMetadataUrl}"`);

  const prm = await (await fetch(mcp.resourceMetadataUrl)).json();
  assert.equal(prm.resource, mcp.url);
  assert.deepEqual(prm.authorization_servers, [sigil.url]);

  // A genuine Sigil token, but for another resource: the audience check refuses it.
  const c = await sigil.admin('POST', '/admin/v1/clients', { identity: 'bot', token_endpoint_auth_method: 'client_secret_basic' });
  const r = await fetch(`${sigil.url}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${btoa(`${c.client_id}:${c.client_secret}`)}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: API }),
  });
  assert.equal(r.status, 200);
  const other = await post({ authorization: `Bearer ${(await r.json()).access_token}` });
  assert.equal(other.status, 401);
  assert.match(other.headers.get('www-authenticate'), /^Bearer resource_metadata="[^"]+", error="invalid_token"/);
});

test('MCP SDK client: PRM discovery, Sigil metadata, code + PKCE + resource, tool call as dana via mcp-client', async () => {
  const provider = newProvider();
  const log = [];

  // 1. No token: the server answers 401, the SDK discovers Sigil and sends the browser there.
  await assert.rejects(connect(provider, log), UnauthorizedError);
  const urls = log.map((e) => `${e.method} ${e.url.split('?')[0]} ${e.status}`);
  assert.ok(urls.includes(`POST ${mcp.url} 401`), urls.join('\n'));
  assert.ok(urls.includes(`GET ${mcp.resourceMetadataUrl} 200`), urls.join('\n'));
  assert.ok(urls.includes(`GET ${sigil.url}/.well-known/oauth-authorization-server 200`), urls.join('\n'));
  assert.ok(!urls.some((u) => u.includes('/register')), 'no dynamic registration was attempted');

  const az = provider.authorizationUrl;
  assert.equal(`${az.origin}${az.pathname}`, `${sigil.url}/authorize`);
  const q = az.searchParams;
  assert.equal(q.get('response_type'), 'code');
  assert.equal(q.get('client_id'), fx.clientId);
  assert.equal(q.get('redirect_uri'), fx.redirectUrl);
  assert.equal(q.get('code_challenge_method'), 'S256');
  assert.ok(q.get('code_challenge'));
  assert.deepEqual(q.getAll('resource'), [mcp.url]);
  assert.equal(q.get('scope'), SCOPES.join(' ')); // the SDK takes PRM scopes_supported
  assert.equal(q.get('state'), provider.lastState);

  // 2. Sigil sent the browser back with a code, the state, and its issuer (RFC 9207).
  const cb = provider.callbackUrl;
  assert.equal(`${cb.origin}${cb.pathname}`, fx.redirectUrl);
  assert.equal(cb.searchParams.get('state'), provider.lastState);
  assert.equal(cb.searchParams.get('iss'), sigil.url);
  assert.equal(cb.searchParams.get('error'), null);
  const code = cb.searchParams.get('code');
  assert.ok(code);

  // 3. The SDK redeems the code: public client, PKCE verifier, same resource.
  const transport = new StreamableHTTPClientTransport(new URL(mcp.url), { authProvider: provider, fetch: recordingFetch(log) });
  await transport.finishAuth(code);
  const tokenCall = log.find((e) => e.method === 'POST' && e.url === `${sigil.url}/token`);
  assert.ok(tokenCall, 'the SDK called the token endpoint');
  assert.equal(tokenCall.status, 200);
  assert.equal(tokenCall.body.get('grant_type'), 'authorization_code');
  assert.equal(tokenCall.body.get('client_id'), fx.clientId);
  assert.equal(tokenCall.body.get('resource'), mcp.url);
  assert.ok(tokenCall.body.get('code_verifier'));

  const tokens = provider.tokens();
  assert.equal(tokens.token_type.toLowerCase(), 'bearer');
  assert.ok(tokens.refresh_token);
  const claims = jose.decodeJwt(tokens.access_token);
  assert.equal(jose.decodeProtectedHeader(tokens.access_token).typ, 'at+jwt');
  assert.equal(claims.iss, sigil.url);
  assert.equal(claims.aud, mcp.url);
  assert.equal(claims.sub, fx.dana.id);
  assert.equal(claims.act?.sub, fx.agent.id);
  assert.equal(claims.act?.client_id, fx.clientId);
  assert.deepEqual(claims.scope.split(' ').sort(), [...SCOPES].sort());

  // 4. A fresh connection with the token: list and call the tool.
  const client = await connect(provider, log);
  try {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name), ['whoami']);
    const who = await whoami(client);
    assert.equal(who.sub, fx.dana.id);
    assert.equal(who.act.sub, fx.agent.id);
    assert.equal(who.act.client_id, fx.clientId);
    assert.equal(who.aud, mcp.url);
  } finally {
    await client.close();
  }

  // 5. When the server stops accepting the access token, the SDK refreshes it at Sigil
  //    (refresh_token grant, public client, same resource) and carries on without the browser.
  provider.saveTokens({ ...tokens, access_token: 'not-a-jwt' });
  const before = provider.authorizationUrl;
  const refreshed = await connect(provider, log);
  try {
    const refresh = log.find((e) => e.url === `${sigil.url}/token` && e.body?.get('grant_type') === 'refresh_token');
    assert.ok(refresh, 'the SDK used the refresh token');
    assert.equal(refresh.status, 200);
    assert.equal(refresh.body.get('resource'), mcp.url);
    assert.equal(provider.authorizationUrl, before, 'no second trip through the browser');
    assert.notEqual(provider.tokens().refresh_token, tokens.refresh_token, 'Sigil rotates refresh tokens');
    const who = await whoami(refreshed);
    assert.equal(who.sub, fx.dana.id);
    assert.equal(who.act.sub, fx.agent.id);
  } finally {
    await refreshed.close();
  }
  assert.ok(mcp.seen.includes('GET /.well-known/oauth-protected-resource/mcp'));
});
