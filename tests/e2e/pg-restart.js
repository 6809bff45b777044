// A real PostgreSQL restart under load, run by hand (it restarts the
// machine's PostgreSQL, which the test suites share, so it is not one of
// them): `ZOO_BIN=... node tests/e2e/pg-restart.js`. The zoo on a fresh
// database, a socket watching `pet`, creates and reads on 4 connections
// each; `pg_ctlcluster <version> main restart` after 2 s. It prints what
// every answer was, how long the outage showed, and whether every
// committed create was heard once. docs/RELIABILITY.md quotes a run.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const { freshDatabase, startZoo, connect, request, sleep } = require('./helpers');

const J = { 'content-type': 'application/json' };

async function main() {
  const db = freshDatabase('postgres');
  const zoo = await startZoo(db.url);
  const watcher = await connect(zoo.url);
  await request(watcher, 'get', '/pet?name=none');
  let running = true;
  const results = [];
  const worker = async (kind, w) => {
    for (let i = 0; running; i++) {
      const started = performance.now();
      try {
        const r = kind === 'create'
          ? await fetch(zoo.url + '/pet', { method: 'POST', headers: J, body: JSON.stringify({ name: `w${w}-${i}` }) })
          : await fetch(zoo.url + '/pet?limit=5');
        const body = await r.json().catch(() => null);
        results.push({ kind, status: r.status, id: kind === 'create' ? body?.id : undefined, at: started, ms: performance.now() - started });
      } catch (e) {
        results.push({ kind, status: 0, at: started, ms: performance.now() - started });
      }
    }
  };
  const workers = [0, 1, 2, 3].flatMap((w) => [worker('create', w), worker('read', w)]);
  await sleep(2000);
  const version = fs.readdirSync('/etc/postgresql')[0];
  const restartAt = performance.now();
  const r = spawnSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'restart'], { encoding: 'utf8' });
  const restartMs = performance.now() - restartAt;
  if (r.status !== 0) throw new Error(`restart failed: ${r.stderr}`);
  await sleep(3000);
  running = false;
  await Promise.all(workers);
  await sleep(1000);

  for (const kind of ['create', 'read']) {
    const mine = results.filter((x) => x.kind === kind);
    const by = {};
    for (const x of mine) by[x.status] = (by[x.status] || 0) + 1;
    const failed = mine.filter((x) => x.status !== 200);
    const span = failed.length ? `${(Math.max(...failed.map((x) => x.at + x.ms)) - Math.min(...failed.map((x) => x.at))).toFixed(0)} ms` : 'none';
    console.log(`${kind}s: ${mine.length}, statuses ${JSON.stringify(by)}, non-200 answers spanning ${span}`);
  }
  console.log(`pg_ctlcluster restart took ${restartMs.toFixed(0)} ms`);
  const heard = new Map();
  for (const [event, msg] of watcher.received) {
    if (event === 'pet' && msg.verb === 'created') heard.set(msg.id, (heard.get(msg.id) || 0) + 1);
  }
  const committed = results.filter((x) => x.kind === 'create' && x.status === 200).map((x) => x.id);
  const missing = committed.filter((id) => !heard.has(id)).length;
  const twice = [...heard.values()].filter((n) => n > 1).length;
  console.log(`committed creates ${committed.length}, heard ${heard.size}, missing ${missing}, heard twice ${twice}`);
  watcher.disconnect();
  await zoo.stop();
  db.drop();
}

main().catch((e) => { console.error(e); process.exit(1); });
