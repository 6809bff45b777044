// No message lost across a reconnect, for the stock sails.io.js client
// (`reconnection: true`, the cookie of GET /__getcookie in its handshake),
// through a real TCP proxy the test cuts while another client makes 200
// changes to records the socket is subscribed to and watching.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freshDatabase, startZoo, startProxy, request, sleep, io } = require('./helpers');
const topsailResume = require('../../crates/topsail-socket/assets/topsail-resume.js');

const J = { 'content-type': 'application/json' };
async function http(url, method, path, body) {
  const res = await fetch(url + path, { method, headers: J, body: JSON.stringify(body) });
  assert.ok(res.ok, `${method} ${path}: ${res.status}`);
  return res.json();
}

/** The cookies GET /__getcookie sets, as a Cookie header. */
async function getCookie(url) {
  const res = await fetch(url + '/__getcookie');
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  assert.match(cookie, /topsail\.rid=[0-9a-f]{32}/, 'a resume key');
  return cookie;
}

/** A stock sails.io.js socket through `proxy` that reconnects by itself and
 * records every model event with its sequence number. */
async function subscriber(proxy, cookie, { optIn = false } = {}) {
  const socket = io.sails.connect(proxy.url, { url: proxy.url, reconnection: true, initialConnectionHeaders: { cookie } });
  socket.got = [];
  socket.ids = [];
  for (const e of ['pet', 'user', 'news', 'topsail:resync']) socket.on(e, (msg, seq) => socket.got.push({ e, msg, seq }));
  socket.on('connect', () => socket.ids.push(socket._raw.id));
  if (optIn) socket.optIn = topsailResume(socket);
  await until(() => socket.ids.length === 1, 5000, 'the first connection');
  return socket;
}

async function until(done, ms, what) {
  const start = Date.now();
  while (!done()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** 200 changes over HTTP: 50 pets created (the socket watches pets), each
 * then renamed (it was introduced to them while away), and the socket's
 * subscribed user renamed 100 times, interleaved. Returns the messages the
 * socket must get, as keys. */
async function twoHundredChanges(url, userId, tag) {
  const expected = [];
  const pets = [];
  for (let i = 0; i < 100; i++) {
    if (i < 50) {
      const pet = await http(url, 'POST', '/pet', { name: `${tag}-p${i}` });
      pets.push(pet.id);
      expected.push(`pet created ${pet.id} ${tag}-p${i}`);
    } else {
      const k = i - 50;
      await http(url, 'PATCH', `/pet/${pets[k]}`, { name: `${tag}-p${k}-renamed` });
      expected.push(`pet updated ${pets[k]} ${tag}-p${k}-renamed`);
    }
    await http(url, 'PATCH', `/user/${userId}`, { name: `${tag}-u${i}` });
    expected.push(`user updated ${userId} ${tag}-u${i}`);
  }
  return expected;
}

const key = ({ e, msg }) => (e === 'news' ? `news ${msg}` : `${e} ${msg.verb} ${msg.id} ${msg.data && msg.data.name}`);

/** What an app that drops a repeat (a sequence number it has seen) ends up
 * with, in the order it handled them. */
function deduplicated(got) {
  const seen = new Set();
  const kept = [];
  for (const g of got) {
    if (g.e === 'topsail:resync') continue;
    assert.equal(typeof g.seq, 'number', `a sequence number on ${key(g)}`);
    if (seen.has(g.seq)) continue;
    seen.add(g.seq);
    kept.push(g);
  }
  return kept;
}

/** After it reconnects by itself, `socket` got every `expected` message,
 * each record in commit order, and no topsail:resync. */
async function replayedAfterReconnect(socket, expected) {
  await until(() => socket.ids.length >= 2, 20000, 'the reconnect');
  const resynced = () => socket.got.some((g) => g.e === 'topsail:resync');
  await until(() => expected.every((k) => socket.got.some((g) => key(g) === k)) || resynced(), 20000, 'all 200 messages');
  assert.deepEqual(socket.got.filter((g) => g.e === 'topsail:resync'), [], 'no topsail:resync');
  assert.deepEqual(deduplicated(socket.got).map(key), expected, 'each record in commit order');
}

/** Resolves once `child` has exited. */
function exitOf(child) {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', resolve)));
}

/** Cuts the proxy for `ms` while the changes are made; resolves with the
 * messages expected, once the proxy is back and the changes are done. */
async function cutWhileChanging(zoo, proxy, userId, tag, ms) {
  proxy.cut();
  // The app's own messages too: to a room the socket joined, and to all.
  await http(zoo.url, 'POST', '/rooms/club/broadcast', { event: 'news', data: `club-${tag}` });
  await http(zoo.url, 'POST', '/blast', { event: 'news', data: `blast-${tag}` });
  const changes = twoHundredChanges(zoo.url, userId, tag)
    .then((expected) => [`news club-${tag}`, `news blast-${tag}`, ...expected]);
  await sleep(ms);
  proxy.restore();
  return changes;
}

async function setUp(zoo, proxy, optIn) {
  const user = await http(zoo.url, 'POST', '/user', { name: 'owner', email: `o${Date.now()}${Math.random()}@example.com` });
  const cookie = await getCookie(proxy.url);
  const socket = await subscriber(proxy, cookie, { optIn });
  // Watches pets (and is subscribed to none yet), and is subscribed to the user.
  assert.equal((await request(socket, 'get', '/pet?name=none-yet')).jwr.statusCode, 200);
  assert.equal((await request(socket, 'get', `/user/${user.id}`)).jwr.statusCode, 200);
  assert.equal((await request(socket, 'post', '/rooms/club/join')).jwr.statusCode, 200);
  return { user, socket };
}

/** After it came back by itself, the socket still watches pets and is still
 * subscribed to the user: new changes reach it live. */
async function stillSubscribed(zoo, socket, userId, tag) {
  const pet = await http(zoo.url, 'POST', '/pet', { name: `${tag}-after` });
  await http(zoo.url, 'PATCH', `/user/${userId}`, { name: `${tag}-after` });
  const want = [`pet created ${pet.id} ${tag}-after`, `user updated ${userId} ${tag}-after`];
  await until(() => want.every((w) => socket.got.some((g) => key(g) === w)), 5000, 'the messages after the reconnect');
}

for (const dialect of ['sqlite', 'postgres']) {
  describe(`reconnects (${dialect})`, () => {
    let db, zoo, proxy;
    before(async () => {
      db = freshDatabase(dialect);
      zoo = await startZoo(db.url);
      proxy = await startProxy(zoo.port);
    });
    after(async () => {
      await proxy?.close();
      await zoo?.stop();
      db?.drop();
    });

    it('a 1 s cut: the stock client gets all 202 messages, each record in commit order, and stays subscribed', async () => {
      const { user, socket } = await setUp(zoo, proxy, false);
      try {
        const expected = await cutWhileChanging(zoo, proxy, user.id, 'a', 1000);
        await until(() => socket.ids.length >= 2, 15000, 'the reconnect');
        await until(() => expected.every((k) => socket.got.some((g) => key(g) === k)), 15000, 'all 202 messages');
        assert.notEqual(socket.ids[0], socket.ids[1], 'it came back as a new socket');
        // At least once: a repeat carries the same sequence number ...
        const seqOf = new Map();
        for (const g of socket.got) {
          if (seqOf.has(key(g))) assert.equal(seqOf.get(key(g)), g.seq, `a repeat of ${key(g)} keeps its number`);
          seqOf.set(key(g), g.seq);
        }
        // ... so an app that drops repeats has every message once, in commit order.
        assert.deepEqual(deduplicated(socket.got).map(key), expected);
        assert.ok(!socket.got.some((g) => g.e === 'topsail:resync'), 'nothing was lost');
        await stillSubscribed(zoo, socket, user.id, 'a');
      } finally {
        socket.disconnect();
      }
    });

    it('with the opt-in client, each message arrives exactly once', async () => {
      const { user, socket } = await setUp(zoo, proxy, true);
      try {
        const expected = await cutWhileChanging(zoo, proxy, user.id, 'b', 1000);
        await until(() => socket.ids.length >= 2, 15000, 'the reconnect');
        await until(() => expected.every((k) => socket.got.some((g) => key(g) === k)), 15000, 'all 202 messages');
        await sleep(200);
        assert.deepEqual(socket.got.map(key), expected, 'each once, in commit order');
        await stillSubscribed(zoo, socket, user.id, 'b');
        assert.equal(socket.got.length, 204);
      } finally {
        socket.disconnect();
      }
    });
  });
}

describe('reconnects after long gaps (sqlite)', () => {
  let db, zoo, proxy, small, smallDb, smallProxy;
  before(async () => {
    db = freshDatabase('sqlite');
    zoo = await startZoo(db.url);
    proxy = await startProxy(zoo.port);
    // A log of 20 messages per room: a gap of 100 updates of one record
    // is longer than it.
    smallDb = freshDatabase('sqlite');
    small = await startZoo(smallDb.url, { REPLAY_PER_ROOM: '20' });
    smallProxy = await startProxy(small.port);
  });
  after(async () => {
    await proxy?.close();
    await smallProxy?.close();
    await zoo?.stop();
    await small?.stop();
    db?.drop();
    smallDb?.drop();
  });

  it('a 30 s cut: all 202 messages, in commit order, and still subscribed', async () => {
    const { user, socket } = await setUp(zoo, proxy, false);
    try {
      const expected = await cutWhileChanging(zoo, proxy, user.id, 'c', 30000);
      await until(() => socket.ids.length >= 2, 20000, 'the reconnect');
      await until(() => expected.every((k) => socket.got.some((g) => key(g) === k)), 15000, 'all 202 messages');
      assert.deepEqual(deduplicated(socket.got).map(key), expected);
      await stillSubscribed(zoo, socket, user.id, 'c');
    } finally {
      socket.disconnect();
    }
  });

  it('a gap longer than the log: one topsail:resync naming what to fetch again, never a silent gap', async () => {
    const { user, socket } = await setUp(small, smallProxy, false);
    try {
      await cutWhileChanging(small, smallProxy, user.id, 'd', 1000);
      await until(() => socket.got.some((g) => g.e === 'topsail:resync'), 20000, 'topsail:resync');
      const resyncs = socket.got.filter((g) => g.e === 'topsail:resync');
      assert.equal(resyncs.length, 1);
      const { msg } = resyncs[0];
      assert.equal(msg.reason, 'gap');
      assert.deepEqual(msg.records, [{ model: 'user', id: user.id }], 'the user lost part of its gap');
      // The watched model's room had 50 creations in the gap: pets are
      // named too (fetch the list again).
      assert.ok(msg.models.includes('pet'), JSON.stringify(msg));
      // No part of the user's gap was replayed: the app fetches it again.
      assert.ok(!socket.got.some((g) => g.e === 'user' && g.msg.data.name.startsWith('d-u')), 'no partial replay');
      await stillSubscribed(small, socket, user.id, 'd');
    } finally {
      socket.disconnect();
    }
  });
});

describe('a single process restarted (sqlite, RESUME_FILE)', () => {
  let db, zoo, proxy, file;
  before(async () => {
    db = freshDatabase('sqlite');
    file = path.join(os.tmpdir(), `topsail-resume-${process.pid}-${Date.now()}.json`);
    zoo = await startZoo(db.url, { RESUME_FILE: file });
    proxy = await startProxy(zoo.port);
  });
  after(async () => {
    await proxy?.close();
    await zoo?.stop();
    db?.drop();
    fs.rmSync(file, { force: true });
    fs.rmSync(`${file}.journal`, { recursive: true, force: true });
  });

  for (const [how, what, tag] of [['SIGTERM', 'a deploy', 'd'], ['SIGKILL', 'a crash', 'k']]) {
    it(`${how} (${what}) after 200 changes, then a new process: the stock client gets all it missed from the journal, not topsail:resync`, async () => {
      const { user, socket } = await setUp(zoo, proxy, false);
      try {
        await sleep(1500);
        proxy.cut();
        const expected = await twoHundredChanges(zoo.url, user.id, tag);
        zoo.child.kill(how);
        await exitOf(zoo.child);
        zoo = await startZoo(db.url, { RESUME_FILE: file });
        proxy.retarget(zoo.port);
        proxy.restore();
        await replayedAfterReconnect(socket, expected);
        await stillSubscribed(zoo, socket, user.id, tag);
      } finally {
        socket.disconnect();
      }
    });
  }

  it('SIGKILL in the middle of 8 concurrent writers: every create that was answered reaches the stock client after it comes back, or it is told to fetch pets again', async () => {
    const { socket } = await setUp(zoo, proxy, false);
    try {
      await sleep(1500);
      proxy.cut();
      const answered = [];
      let killed = false;
      const writer = async (w) => {
        for (let i = 0; !killed; i++) {
          let pet;
          try {
            pet = await http(zoo.url, 'POST', '/pet', { name: `m-${w}-${i}` });
          } catch {
            return; // the process is gone
          }
          answered.push(`pet created ${pet.id} m-${w}-${i}`);
        }
      };
      const writers = Array.from({ length: 8 }, (_, w) => writer(w));
      await sleep(1000);
      zoo.child.kill('SIGKILL');
      killed = true;
      await Promise.all(writers);
      await exitOf(zoo.child);
      assert.ok(answered.length >= 50, `${answered.length} creates answered before the kill`);
      zoo = await startZoo(db.url, { RESUME_FILE: file });
      proxy.retarget(zoo.port);
      proxy.restore();
      await until(() => socket.ids.length >= 2, 20000, 'the reconnect');
      const resynced = () => socket.got.some((g) => g.e === 'topsail:resync');
      await until(() => answered.every((k) => socket.got.some((g) => key(g) === k)) || resynced(), 20000, 'every answered create');
      // A create committed and killed before its messages were journaled
      // reached no one: the pets' watchers are told to fetch them again.
      const resyncs = socket.got.filter((g) => g.e === 'topsail:resync');
      if (resyncs.length > 0) {
        assert.equal(resyncs.length, 1, JSON.stringify(resyncs));
        assert.ok(resyncs[0].msg.models.includes('pet'), JSON.stringify(resyncs[0].msg));
      }
    } finally {
      socket.disconnect();
    }
  });

  for (const how of ['SIGKILL']) {
    it(`${how}, and the journal lost with it: the stock client gets its rooms back and one topsail:resync, never a silent gap`, async () => {
      const { user, socket } = await setUp(zoo, proxy, false);
      try {
        // Recorded every second.
        await sleep(1500);
        proxy.cut();
        zoo.child.kill(how);
        await exitOf(zoo.child);
        fs.rmSync(`${file}.journal`, { recursive: true, force: true });
        zoo = await startZoo(db.url, { RESUME_FILE: file });
        proxy.retarget(zoo.port);
        proxy.restore();
        await until(() => socket.ids.length >= 2, 20000, 'the reconnect');
        await until(() => socket.got.some((g) => g.e === 'topsail:resync'), 10000, 'topsail:resync');
        const resyncs = socket.got.filter((g) => g.e === 'topsail:resync');
        assert.equal(resyncs.length, 1);
        const { msg } = resyncs[0];
        assert.equal(msg.reason, 'gap');
        assert.deepEqual(msg.records, [{ model: 'user', id: user.id }], JSON.stringify(msg));
        assert.ok(msg.models.includes('pet'), JSON.stringify(msg));
        // Still watching pets and subscribed to the user, on the new process.
        await stillSubscribed(zoo, socket, user.id, how);
      } finally {
        socket.disconnect();
      }
    });
  }
});

describe('a socket taken back is held to the read rules (notes, sqlite)', () => {
  let db, app, proxy, ann, bo;
  const signUp = async (name) => {
    const res = await fetch(app.url + '/signup', { method: 'POST', headers: J, body: JSON.stringify({ name, email: `${name}@example.com`, password: `${name}-secret-pw` }) });
    assert.equal(res.status, 200);
    return res.headers.get('set-cookie').split(';')[0];
  };
  const as = (cookie) => async (method, path, body) => {
    const res = await fetch(app.url + path, { method, headers: { ...J, cookie }, body: body && JSON.stringify(body) });
    assert.ok(res.ok, `${method} ${path}: ${res.status}`);
    return res.json();
  };
  before(async () => {
    const { startNotes } = require('./helpers');
    db = freshDatabase('sqlite');
    app = await startNotes(db.url);
    proxy = await startProxy(app.port);
    ann = await signUp('ann');
    bo = await signUp('bo');
  });
  after(async () => {
    await proxy?.close();
    await app?.stop();
    db?.drop();
  });

  it('a note turned private in the gap, and a new private one, never reach the other account; a shared one does', async () => {
    const boSays = as(bo);
    const shared = await boSays('POST', '/note', { title: 'bo-shared', shared: true });
    // Ann's resume key, with her session: what her browser would send.
    const res = await fetch(app.url + '/__getcookie', { headers: { cookie: ann } });
    const rid = res.headers.getSetCookie().map((c) => c.split(';')[0]).find((c) => c.startsWith('topsail.rid='));
    const socket = io.sails.connect(proxy.url, { url: proxy.url, reconnection: true, initialConnectionHeaders: { cookie: `${ann}; ${rid}` } });
    socket.got = [];
    socket.ids = [];
    socket.on('note', (msg, seq) => socket.got.push({ msg, seq }));
    socket.on('connect', () => socket.ids.push(socket._raw.id));
    try {
      await until(() => socket.ids.length === 1, 5000, 'the first connection');
      // Subscribed to Bo's shared note, and watching notes.
      const list = await request(socket, 'get', '/note');
      assert.deepEqual(list.body.map((n) => n.title), ['bo-shared']);

      proxy.cut();
      await boSays('PATCH', `/note/${shared.id}`, { shared: false, title: 'bo-secret-now' });
      await boSays('PATCH', `/note/${shared.id}`, { body: 'bo-secret-body' });
      await boSays('POST', '/note', { title: 'bo-secret-new' });
      const open = await boSays('POST', '/note', { title: 'bo-open-new', shared: true });
      await sleep(500);
      proxy.restore();
      await until(() => socket.ids.length >= 2, 15000, 'the reconnect');
      await until(() => socket.got.some((g) => g.msg.verb === 'created' && g.msg.data.title === 'bo-open-new'), 10000, 'the shared note created in the gap');
      // Still subscribed to what she may read: the new shared note's changes reach her.
      await boSays('PATCH', `/note/${open.id}`, { body: 'edited' });
      await until(() => socket.got.some((g) => g.msg.verb === 'updated' && g.msg.id === open.id), 5000, 'the update of the shared note');
      // Not subscribed any more to the note that turned private.
      await boSays('PATCH', `/note/${shared.id}`, { body: 'bo-secret-later' });
      await sleep(300);
      assert.ok(!JSON.stringify(socket.got).includes('bo-secret'), JSON.stringify(socket.got));
      assert.ok(!socket.got.some((g) => g.msg.id === shared.id), 'nothing of the note that turned private');
    } finally {
      socket.disconnect();
    }
  });
});

describe('reconnects across a cluster of two nodes (postgres, redis)', () => {
  let db, redis, n1, n2, proxy, n2RedisUrl;
  before(async () => {
    const { startRedis, freePort } = require('./helpers');
    const redisPort = await freePort();
    redis = await startRedis(redisPort);
    db = freshDatabase('postgres');
    n2RedisUrl = `redis://127.0.0.1:${redisPort}/`;
    const env = { REDIS_URL: n2RedisUrl };
    n1 = await startZoo(db.url, env);
    n2 = await startZoo(db.url, env);
    proxy = await startProxy(n1.port);
  });
  after(async () => {
    await proxy?.close();
    await n1?.stop();
    await n2?.stop();
    redis?.kill('SIGKILL');
    db?.drop();
  });

  it('a socket that drops from one node and comes back to the other gets all it missed, and stays subscribed', async () => {
    const { user, socket } = await setUp(n1, proxy, false);
    try {
      proxy.cut();
      // The load balancer now sends it to node 2.
      proxy.retarget(n2.port);
      // Changes on both nodes: messages relayed between them.
      await http(n1.url, 'POST', '/blast', { event: 'news', data: 'blast-x' });
      const fromN2 = await twoHundredChanges(n2.url, user.id, 'x');
      await sleep(300);
      proxy.restore();
      const expected = ['news blast-x', ...fromN2];
      await until(() => socket.ids.length >= 2, 15000, 'the reconnect');
      await until(() => expected.every((k) => socket.got.some((g) => key(g) === k)), 15000, 'all 201 messages');
      assert.deepEqual(deduplicated(socket.got).map(key), expected, 'each record in commit order');
      // Its own room of the app was joined on node 1: it is back too (the
      // principal, anonymous, is known to be the same).
      assert.ok(!socket.got.some((g) => g.e === 'topsail:resync'), JSON.stringify(socket.got.filter((g) => g.e === 'topsail:resync')));
      // Subscribed on node 2 now: a change made on node 1 reaches it.
      await stillSubscribed(n1, socket, user.id, 'x');
      await http(n1.url, 'POST', '/rooms/club/broadcast', { event: 'news', data: 'club-after' });
      await until(() => socket.got.some((g) => key(g) === 'news club-after'), 5000, 'the room of the app');
    } finally {
      socket.disconnect();
    }
  });

  it('a node killed: its sockets come back to the other node and get all they missed; the node restarts', async () => {
    proxy.retarget(n1.port);
    const { user, socket } = await setUp(n1, proxy, false);
    try {
      // Killed: it parks nothing; the other node has its last record of
      // its sockets (written every second).
      await sleep(1500);
      n1.child.kill('SIGKILL');
      proxy.cut();
      proxy.retarget(n2.port);
      const expected = await twoHundredChanges(n2.url, user.id, 'k');
      proxy.restore();
      await until(() => socket.ids.length >= 2, 15000, 'the reconnect');
      await until(() => expected.every((k) => socket.got.some((g) => key(g) === k)), 20000, 'all 200 messages');
      assert.deepEqual(deduplicated(socket.got).map(key), expected, 'each record in commit order');
      n1 = await startZoo(db.url, { REDIS_URL: n2RedisUrl });
      await stillSubscribed(n1, socket, user.id, 'k');
    } finally {
      socket.disconnect();
    }
  });

  it('the whole cluster restarted: a socket that comes back gets all it missed from the log in Redis, not topsail:resync', async () => {
    proxy.retarget(n1.port);
    const { user, socket } = await setUp(n1, proxy, false);
    try {
      proxy.cut();
      const expected = await twoHundredChanges(n2.url, user.id, 'w');
      // Every node killed: no process holds the log in memory any more.
      const exited = [n1, n2].map((n) => exitOf(n.child));
      for (const n of [n1, n2]) n.child.kill('SIGKILL');
      await Promise.all(exited);
      n1 = await startZoo(db.url, { REDIS_URL: n2RedisUrl });
      n2 = await startZoo(db.url, { REDIS_URL: n2RedisUrl });
      proxy.retarget(n1.port);
      proxy.restore();
      await replayedAfterReconnect(socket, expected);
      // Subscribed on the new node 1: a change made on the new node 2 reaches it.
      await stillSubscribed(n2, socket, user.id, 'w');
    } finally {
      socket.disconnect();
    }
  });
});
