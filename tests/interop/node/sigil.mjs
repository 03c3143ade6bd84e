// Starts a real `sigil serve` on a free loopback port with a fresh data directory and seeds it.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const API = 'https://api.example.com';

export const freePort = () =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

export async function startSigil() {
  const dataDir = mkdtempSync(join(tmpdir(), 'sigil-node-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(process.env.SIGIL_BIN ?? 'sigil', ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir], {
    stdio: 'ignore',
    env: { ...process.env, SIGIL_LOG_LEVEL: 'warn' },
  });
  const deadline = Date.now() + 20000;
  for (;;) {
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) break;
    } catch {}
    if (Date.now() > deadline) throw new Error('sigil did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  const admin = async (method, path, body) => {
    const r = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
    return r.status === 204 ? null : r.json();
  };
  await admin('POST', '/admin/v1/users', { username: 'alice' });
  await admin('POST', '/admin/v1/agents', { name: 'bot', owner: 'alice', ceiling: { scopes: ['read', 'write'] } });
  await admin('POST', '/admin/v1/resources', { uri: API, name: 'api', owner: 'alice', scopes: ['read', 'write'] });
  return { url, admin, stop: () => proc.kill('SIGTERM') };
}

// Plays the browser at Sigil's authorization endpoint: opens `authorizationUrl`, signs in with
// the form it gets (carrying the CSRF cookie), answers the consent page with `decision`, and
// returns the URL of the 303 redirect back to the client (its `code`, `state`, `iss`).
export async function authorizeInBrowser(authorizationUrl, { username, password, decision = 'allow' }) {
  const hidden = (html, name) => {
    const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
    if (!m) throw new Error(`no hidden input ${name} in: ${html}`);
    return m[1].replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');
  };
  const expectPage = async (r, what) => {
    const html = await r.text();
    if (r.status !== 200) throw new Error(`${what}: ${r.status} ${html}`);
    return html;
  };
  const start = await fetch(authorizationUrl, { redirect: 'manual' });
  const cookie = start.headers.getSetCookie().find((c) => c.startsWith('sigil_csrf='))?.split(';')[0];
  const login = await expectPage(start, `GET ${authorizationUrl}`);
  if (!cookie) throw new Error('GET /authorize set no sigil_csrf cookie');
  const post = (path, form) =>
    fetch(new URL(path, authorizationUrl), {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form),
    });
  const consent = await expectPage(
    await post('/authorize/login', { request: hidden(login, 'request'), csrf: hidden(login, 'csrf'), username, password }),
    'POST /authorize/login',
  );
  const done = await post('/authorize/consent', {
    request: hidden(consent, 'request'),
    csrf: hidden(consent, 'csrf'),
    ticket: hidden(consent, 'ticket'),
    decision,
  });
  if (done.status !== 303) throw new Error(`POST /authorize/consent: ${done.status} ${await done.text()}`);
  return new URL(done.headers.get('location'));
}
