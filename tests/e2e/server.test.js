// Running the zoo like a real server: one log line per request (HTTP and
// socket), socket connects and disconnects, a start-up line; a clean
// shutdown on SIGTERM; one readable line and a non-zero exit for bad
// start-up settings.
'use strict';
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const { freshDatabase, startZoo, connect, request, sleep, freePort } = require('./helpers');

const ZOO = process.env.ZOO_BIN || require('node:path').join(__dirname, '..', '..', 'target', 'debug', 'zoo');

function run(env) {
  return new Promise((resolve) => {
    const out = [];
    const child = spawn(ZOO, [], { env: { ...process.env, RUST_LOG: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => out.push(String(d)));
    child.stderr.on('data', (d) => out.push(String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 40000);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, output: out.join('') }); });
  });
}

describe('the zoo as a server', () => {
  it('logs one line per request, socket connects and disconnects, and its start', async () => {
    const db = freshDatabase('sqlite');
    const zoo = await startZoo(db.url, { RUST_LOG: 'info' });
    try {
      await fetch(zoo.url + '/user?limit=1');
      const s = await connect(zoo.url);
      await request(s, 'get', '/pet/999');
      s.disconnect();
      await sleep(300);
      const log = zoo.log.join('');
      assert.match(log, /zoo listening url=http:\/\/127\.0\.0\.1:\d+ database="sqlite:\/\/[^"]+" cluster=false/);
      // One span per request, the same fields over both transports; the
      // line logged when it ends carries them.
      assert.match(log, /request\{transport="http" method=GET path="\/user" status=200\}: \S+: request ms=[\d.]+/);
      assert.match(log, /request\{transport="socket" method=GET path="\/pet\/999" socket="[^"]+" status=404\}: \S+: request ms=[\d.]+/);
      assert.doesNotMatch(log, /transport="http" method=GET path="\/pet\/999"/, 'a socket request is logged once, as a socket request');
      assert.match(log, /socket connected sid=\S+/);
      assert.match(log, /socket disconnected sid=\S+/);
      assert.doesNotMatch(log, /\x1b\[/, 'no colour codes when the output is not a terminal');
    } finally {
      await zoo.stop();
      db.drop();
    }
  });

  it('on SIGTERM finishes in-flight requests, disconnects sockets and exits 0', async () => {
    const db = freshDatabase('sqlite');
    const zoo = await startZoo(db.url);
    const s = await connect(zoo.url);
    const disconnected = new Promise((res) => s.on('disconnect', res));
    const inflight = fetch(zoo.url + '/delay/700').then((r) => r.status);
    await sleep(150);
    const exited = new Promise((res) => zoo.child.once('exit', (code) => res(code)));
    zoo.child.kill('SIGTERM');
    assert.equal(await inflight, 200, 'the in-flight request completed');
    await disconnected;
    assert.equal(await exited, 0);
    await assert.rejects(fetch(zoo.url + '/user'), 'it no longer accepts connections');
    db.drop();
  });

  it('serves no control routes with NODE_ENV=production', async () => {
    const db = freshDatabase('sqlite');
    const zoo = await startZoo(db.url, { NODE_ENV: 'production' });
    try {
      const s = await connect(zoo.url);
      const pet = await request(s, 'post', '/pet', { name: 'Rex' });
      assert.equal(pet.jwr.statusCode, 200);
      for (const [method, url] of [
        ['post', '/blast'],
        ['post', `/rooms/sails_model_pet_${pet.body.id}:pet/join`],
        ['post', '/rooms/news/broadcast'],
        ['post', `/sockets/${s._raw.id}/join/news`],
        ['get', `/sockets/${s._raw.id}/rooms`],
        ['post', `/pets/${pet.body.id}/publish`],
      ]) {
        const r = await request(s, method, url, { event: 'pet', data: { verb: 'destroyed', id: pet.body.id } });
        assert.equal(r.jwr.statusCode, 404, `${method} ${url} over a socket`);
        const h = await fetch(zoo.url + url, { method: method.toUpperCase(), headers: { 'content-type': 'application/json' }, body: method === 'get' ? undefined : '{}' });
        assert.equal(h.status, 404, `${method} ${url} over HTTP`);
      }
      assert.equal((await request(s, 'post', '/pets/watch')).jwr.statusCode, 200, 'the model API routes stay');
      s.disconnect();
    } finally {
      await zoo.stop();
      db.drop();
    }
  });

  it('refuses bad settings with one readable line and a non-zero exit', async () => {
    const port = await freePort();
    let r = await run({ DATABASE_URL: 'mysql://nope', PORT: String(port) });
    assert.equal(r.code, 1);
    assert.equal(r.output.trim(), 'zoo: unsupported database URL `mysql://nope`: expected `sqlite://<file>`, `sqlite::memory:` or `postgres://...`');
    r = await run({ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nope', PORT: String(port) });
    assert.equal(r.code, 1);
    assert.match(r.output.trim(), /^zoo: cannot connect to the database: .*Connection refused/);
    assert.doesNotMatch(r.output, /panicked|backtrace/);
    const blocker = net.createServer().listen(port, '127.0.0.1');
    await new Promise((res) => blocker.once('listening', res));
    r = await run({ DATABASE_URL: 'sqlite::memory:', PORT: String(port) });
    blocker.close();
    assert.equal(r.code, 1);
    assert.match(r.output.trim(), new RegExp(`^zoo: cannot listen on 127\\.0\\.0\\.1:${port}: Address already in use`));
    r = await run({ DATABASE_URL: 'sqlite::memory:', PORT: 'not-a-port' });
    assert.equal(r.code, 1);
    assert.match(r.output.trim(), /^zoo: cannot listen on 127\.0\.0\.1:not-a-port/);
  });
});
