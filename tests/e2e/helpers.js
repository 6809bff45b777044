// Shared helpers: start the zoo, connect stock sails.io.js clients, record
// every event each socket receives.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const fs = require('node:fs');

const ZOO = process.env.ZOO_BIN || path.join(__dirname, '..', '..', 'target', 'debug', 'zoo');
const NOTES = process.env.NOTES_BIN || path.join(__dirname, '..', '..', 'target', 'debug', 'notes');
const PG = process.env.TOPSAIL_E2E_PG || 'postgres://postgres@127.0.0.1:5432';
const SocketIoClient = require('socket.io-client');
// sails.io.js augments the client module once; every socket comes from it.
const io = require('sails.io.js')(SocketIoClient);
io.sails.autoConnect = false;
io.sails.environment = 'production';
io.sails.reconnection = false;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

let dbCounter = 0;
/** A fresh database URL for `dialect` ('sqlite' or 'postgres'), and its cleanup. */
function freshDatabase(dialect) {
  const name = `topsail_e2e_${process.pid}_${dbCounter++}`;
  if (dialect === 'sqlite') {
    const file = path.join(os.tmpdir(), `${name}.sqlite`);
    return { url: `sqlite://${file}`, drop: () => { for (const s of ['', '-wal', '-shm']) fs.rmSync(file + s, { force: true }); } };
  }
  const psql = (sql) => {
    const r = spawnSync('psql', [`${PG}/postgres`, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`psql failed (is PostgreSQL reachable at ${PG}?): ${r.stderr}`);
  };
  psql(`CREATE DATABASE ${name}`);
  return { url: `${PG}/${name}`, drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/** Starts a zoo process; resolves once it answers HTTP. */
function startZoo(databaseUrl, env = {}) {
  return startServer(ZOO, databaseUrl, env);
}

/** Starts the notes example; resolves once it answers HTTP. */
function startNotes(databaseUrl, env = {}) {
  return startServer(NOTES, databaseUrl, env);
}

async function startServer(bin, databaseUrl, env) {
  const port = await freePort();
  const log = [];
  const child = spawn(bin, [], {
    env: { ...process.env, DATABASE_URL: databaseUrl, PORT: String(port), RUST_LOG: process.env.RUST_LOG || 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => log.push(String(d)));
  child.stderr.on('data', (d) => log.push(String(d)));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`${path.basename(bin)} exited (${child.exitCode}):\n${log.join('')}`);
    try { await fetch(url + '/__getcookie'); return { url, child, log, port, stop: () => stop(child) }; } catch { await sleep(50); }
  }
  child.kill('SIGKILL');
  throw new Error(`${path.basename(bin)} did not start:\n${log.join('')}`);
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', resolve);
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 3000).unref();
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts a Redis server on `port` (nothing on disk); resolves once it accepts connections. */
async function startRedis(port) {
  // `DEBUG` (the fault suite's `DEBUG SLEEP`) is refused unless enabled.
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--enable-debug-command', 'local'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      await new Promise((res, rej) => {
        const s = net.connect(port, '127.0.0.1', () => { s.end(); res(); });
        s.on('error', rej);
      });
      return child;
    } catch { await sleep(50); }
  }
  throw new Error('redis-server did not start');
}

/** Debian's Chromium (CHROMIUM overrides where it is), headless, driven by playwright-core. */
function launchChromium() {
  const { chromium } = require('playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
}

/** A connected sails.io.js socket that records the events it receives. */
async function connect(url, { events = ['user', 'pet', 'tag', 'message', 'news', 'sails:parseError'], query, headers } = {}) {
  const opts = { url };
  if (query) opts.query = query;
  if (headers) opts.initialConnectionHeaders = headers;
  const socket = io.sails.connect(url, opts);
  socket.received = [];
  for (const e of events) socket.on(e, (msg) => socket.received.push([e, msg]));
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('socket did not connect')), 5000);
    socket.on('connect', () => { clearTimeout(t); resolve(); });
  });
  return socket;
}

/** Sends a virtual request; resolves with `{body, jwr}`. */
function request(socket, method, url, data) {
  return new Promise((resolve) => {
    socket.request({ method, url, data }, (body, jwr) => resolve({ body, jwr }));
  });
}

/** Waits until `socket` has received `n` events (or fails after `ms`). */
async function waitFor(socket, n, ms = 3000) {
  const start = Date.now();
  while (socket.received.length < n) {
    if (Date.now() - start > ms) throw new Error(`expected ${n} events, got ${socket.received.length}: ${JSON.stringify(socket.received)}`);
    await sleep(10);
  }
}

/** Takes what each socket received, after giving stray events time to show up. */
async function settle(sockets, quietMs = 150) {
  await sleep(quietMs);
  return sockets.map((s) => s.received.splice(0));
}

/** The events without timestamps, for exact comparison. */
function strip(v) {
  if (Array.isArray(v)) return v.map(strip);
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v)) if (k !== 'createdAt' && k !== 'updatedAt') o[k] = strip(v[k]);
    return o;
  }
  return v;
}

/**
 * A TCP proxy to `targetPort` on 127.0.0.1 that a test can cut: `cut()`
 * destroys every connection through it and refuses new ones (as a network
 * that went away does) until `restore()`.
 */
async function startProxy(targetPort) {
  const live = new Set();
  let down = false;
  let target = targetPort;
  const server = net.createServer((client) => {
    if (down) return client.destroy();
    const upstream = net.connect(target, '127.0.0.1');
    const pair = [client, upstream];
    live.add(pair);
    const close = () => { live.delete(pair); client.destroy(); upstream.destroy(); };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    cut() {
      down = true;
      for (const [a, b] of [...live]) { a.destroy(); b.destroy(); }
      live.clear();
    },
    restore() { down = false; },
    /** New connections go to `port` (another node of a cluster). */
    retarget(port) { target = port; },
    close() { this.cut(); return new Promise((resolve) => server.close(resolve)); },
  };
}

module.exports = { startProxy, freshDatabase, startZoo, startNotes, startRedis, launchChromium, connect, request, waitFor, settle, strip, sleep, freePort, SocketIoClient, io };
