// Shared by the parity tests: start Sails and the zoo side by side.
'use strict';
const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');

const ZOO = process.env.ZOO_BIN || path.join(__dirname, '..', '..', 'target', 'debug', 'zoo');

function strip(v) {
  if (Array.isArray(v)) return v.map(strip);
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v).sort()) if (k !== 'createdAt' && k !== 'updatedAt') o[k] = strip(v[k]);
    return o;
  }
  return v;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function waitUp(base, child, log) {
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}):\n${log.join('')}`);
    try { await fetch(base + '/__nothing'); return; } catch { await new Promise((r) => setTimeout(r, 100)); }
  }
  throw new Error(`server did not start:\n${log.join('')}`);
}

async function start(cmd, args, env) {
  const port = await freePort();
  const log = [];
  const child = spawn(cmd, args, { env: { ...process.env, ...env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => log.push(String(d)));
  child.stderr.on('data', (d) => log.push(String(d)));
  const base = `http://127.0.0.1:${port}`;
  await waitUp(base, child, log);
  return { base, child, log };
}


/** Starts Sails (sails-disk in memory) and the zoo on `databaseUrl`. */
async function startBoth(databaseUrl) {
  const sails = await start(process.execPath, [path.join(__dirname, 'sails-zoo.js')], {});
  const zoo = await start(ZOO, [], { DATABASE_URL: databaseUrl, RUST_LOG: 'warn' });
  return { sails, zoo, stop: () => { sails.child.kill('SIGTERM'); zoo.child.kill('SIGTERM'); } };
}

module.exports = { strip, freePort, start, startBoth };
