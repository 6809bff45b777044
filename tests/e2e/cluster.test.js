// Two zoo processes sharing one PostgreSQL database and a Redis:
// pub-sub, sender exclusion, _introduce and the sockets API across nodes,
// and a Redis outage that neither node dies of.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { freshDatabase, startZoo, startRedis, connect, request, waitFor, settle, sleep, freePort } = require('./helpers');

const J = { 'content-type': 'application/json' };
const post = (url, path, body = {}) => fetch(url + path, { method: 'POST', headers: J, body: JSON.stringify(body) }).then((r) => r.json());
const idOf = async (s) => (await request(s, 'get', '/whoami')).body.id;

describe('cluster of two nodes', () => {
  let db, redis, redisPort, n1, n2;
  before(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    db = freshDatabase('postgres');
    const env = { REDIS_URL: `redis://127.0.0.1:${redisPort}/` };
    n1 = await startZoo(db.url, env);
    n2 = await startZoo(db.url, env);
  });
  after(async () => {
    await n1?.stop();
    await n2?.stop();
    redis?.kill('SIGKILL');
    db?.drop();
  });

  it('delivers pub-sub across nodes, leaves out the actor, and introduces watchers', async () => {
    const watcher = await connect(n1.url);
    const actor = await connect(n2.url);
    const bystander = await connect(n2.url);
    const all = [watcher, actor, bystander];
    await request(watcher, 'get', '/pet?name=none');
    await sleep(100);
    const pet = (await request(actor, 'post', '/pet', { name: 'Across' })).body;
    await waitFor(watcher, 1);
    let [w, a, b] = await settle(all, 300);
    assert.deepEqual(w, [['pet', { verb: 'created', data: pet, id: pet.id }]]);
    assert.deepEqual([a, b], [[], []]);
    // The watcher on node 1 was subscribed to the record created on node 2.
    await request(actor, 'patch', `/pet/${pet.id}`, { name: 'Moved' });
    await waitFor(watcher, 1);
    [w, a, b] = await settle(all, 300);
    assert.equal(w[0][1].verb, 'updated');
    assert.equal(w[0][1].data.name, 'Moved');
    assert.deepEqual([a, b], [[], []], 'the actor is left out on its own node');
    // The actor is in the record's room too; a change by the node-1 watcher
    // reaches the node-2 actor and not the watcher.
    await request(watcher, 'patch', `/pet/${pet.id}`, { species: 'cat' });
    await waitFor(actor, 1);
    [w, a] = await settle(all, 300);
    assert.deepEqual(w, []);
    assert.equal(a[0][1].data.species, 'cat');
    for (const s of all) s.disconnect();
  });

  it('runs the sockets API across nodes', async () => {
    const x = await connect(n1.url);
    const y = await connect(n2.url);
    const all = [x, y];
    const xid = await idOf(x);
    // Join a socket of node 1 through node 2, by id.
    assert.equal((await post(n2.url, `/sockets/${xid}/join/club`)).ok, true);
    assert.deepEqual(await (await fetch(`${n2.url}/sockets/${xid}/rooms`)).json(), ['club', xid].sort());
    await request(y, 'post', '/rooms/club/join');
    await post(n2.url, '/rooms/club/broadcast', { event: 'news', data: 'club' });
    await waitFor(x, 1);
    await waitFor(y, 1);
    assert.deepEqual(await settle(all), [[['news', 'club']], [['news', 'club']]]);
    await request(y, 'post', '/rooms/club/broadcast', { event: 'news', data: 'from y' });
    await waitFor(x, 1);
    assert.deepEqual(await settle(all), [[['news', 'from y']], []], 'the sender is omitted across nodes');
    await request(x, 'post', '/blast', { event: 'news', data: 'blast' });
    await waitFor(y, 1);
    assert.deepEqual((await settle(all))[1], [['news', 'blast']]);
    await post(n1.url, '/rooms/club/add-members-to/lounge');
    await post(n1.url, '/rooms/lounge/broadcast', { event: 'news', data: 'lounge' });
    await waitFor(x, 1);
    await waitFor(y, 1);
    assert.deepEqual(await settle(all), [[['news', 'lounge']], [['news', 'lounge']]]);
    await post(n2.url, '/rooms/club/leave-all');
    await post(n2.url, '/rooms/lounge/broadcast', { event: 'news', data: 'gone' });
    assert.deepEqual(await settle(all, 300), [[], []], 'leave_all emptied the rooms on both nodes');
    for (const s of all) s.disconnect();
  });

  it('survives a Redis outage and rejoins when Redis returns', async () => {
    const local = await connect(n1.url);
    const remote = await connect(n2.url);
    const all = [local, remote];
    await request(local, 'get', '/tag?label=none');
    await request(remote, 'get', '/tag?label=none');
    await sleep(100);
    redis.kill('SIGKILL');
    await sleep(300);
    // Node 1 still answers and still reaches its own sockets.
    const r = await fetch(n1.url + '/tag', { method: 'POST', headers: J, body: JSON.stringify({ label: 'during-outage' }) });
    assert.equal(r.status, 200);
    await waitFor(local, 1);
    let [l, rem] = await settle(all, 300);
    assert.equal(l[0][1].verb, 'created');
    assert.deepEqual(rem, [], 'node 2 cannot hear node 1 without Redis');
    assert.equal(n1.child.exitCode, null, 'node 1 is alive');
    assert.equal(n2.child.exitCode, null, 'node 2 is alive');
    // Redis comes back on the same port; the nodes reconnect and resubscribe.
    redis = await startRedis(redisPort);
    let delivered = false;
    for (let i = 0; i < 40 && !delivered; i++) {
      await fetch(n1.url + '/tag', { method: 'POST', headers: J, body: JSON.stringify({ label: `after-${i}` }) });
      await sleep(250);
      delivered = remote.received.length > 0;
    }
    assert.ok(delivered, 'cross-node delivery resumed after Redis returned');
    [l, rem] = await settle(all);
    assert.equal(rem[0][1].verb, 'created');
    for (const s of all) s.disconnect();
  });
});
