// Starts a real `sigil serve` on a free loopback port with a fresh data directory and seeds it.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const API = 'https://api.example.com';

const freePort = () =>
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
