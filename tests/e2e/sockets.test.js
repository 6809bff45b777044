// The sockets API (sails.sockets) and the model-level pub-sub API, driven through
// the zoo's own routes.
'use strict';
const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { freshDatabase, startZoo, connect, request, waitFor, settle } = require('./helpers');

const J = { 'content-type': 'application/json' };
const post = (url, path, body = {}) => fetch(url + path, { method: 'POST', headers: J, body: JSON.stringify(body) }).then((r) => r.json());
const idOf = async (s) => (await request(s, 'get', '/whoami')).body.id;
const rooms = async (url, id) => (await fetch(`${url}/sockets/${id}/rooms`)).json();

describe('sockets API', () => {
  let db, zoo, a, b, c, all;
  before(async () => {
    db = freshDatabase('sqlite');
    zoo = await startZoo(db.url);
  });
  after(async () => {
    await zoo?.stop();
    db?.drop();
  });
  beforeEach(async () => {
    [a, b, c] = await Promise.all([1, 2, 3].map(() => connect(zoo.url)));
    all = [a, b, c];
  });
  afterEach(() => { for (const s of all) s.disconnect(); });

  it('puts every socket in a room named after its id', async () => {
    const id = await idOf(a);
    assert.deepEqual(await rooms(zoo.url, id), [id]);
    await post(zoo.url, `/rooms/${id}/broadcast`, { event: 'news', data: 'to you' });
    await waitFor(a, 1);
    assert.deepEqual(await settle(all), [[['news', 'to you']], [], []]);
  });

  it('join and leave; broadcast omits the sender in every form', async () => {
    for (const s of [a, b]) assert.equal((await request(s, 'post', '/rooms/lobby/join')).body.ok, true);
    await request(a, 'post', '/rooms/lobby/broadcast', { event: 'news', data: { from: 'a' } });
    await waitFor(b, 1);
    assert.deepEqual(await settle(all), [[], [['news', { from: 'a' }]], []], 'the sender is omitted');
    await post(zoo.url, '/rooms/lobby/broadcast', { data: 'hi' });
    await waitFor(a, 1);
    await waitFor(b, 1);
    assert.deepEqual(await settle(all), [[['message', 'hi']], [['message', 'hi']], []], 'the default event is `message`');
    await request(b, 'post', '/rooms/lobby/leave');
    await post(zoo.url, '/rooms/lobby/broadcast', { event: 'news', data: 2 });
    await waitFor(a, 1);
    assert.deepEqual(await settle(all), [[['news', 2]], [], []]);
    const r = await fetch(zoo.url + '/rooms/lobby/join', { method: 'POST' });
    assert.equal(r.status, 400, 'only a socket can join itself');
  });

  it('blast reaches every socket but the sender', async () => {
    await request(a, 'post', '/blast', { event: 'news', data: 'all' });
    await waitFor(b, 1);
    await waitFor(c, 1);
    assert.deepEqual(await settle(all), [[], [['news', 'all']], [['news', 'all']]]);
  });

  it('joins and leaves by socket id', async () => {
    const bid = await idOf(b);
    await post(zoo.url, `/sockets/${bid}/join/vip`);
    assert.deepEqual(await rooms(zoo.url, bid), [bid, 'vip'].sort());
    await post(zoo.url, '/rooms/vip/broadcast', { event: 'news', data: 'vip' });
    await waitFor(b, 1);
    assert.deepEqual(await settle(all), [[], [['news', 'vip']], []]);
    await post(zoo.url, `/sockets/${bid}/leave/vip`);
    assert.deepEqual(await rooms(zoo.url, bid), [bid]);
  });

  it('moves room members: add to rooms, remove from rooms, leave all', async () => {
    const [aid, bid, cid] = await Promise.all([a, b, c].map(idOf));
    for (const s of [a, b]) await request(s, 'post', '/rooms/red/join');
    await post(zoo.url, '/rooms/red/add-members-to/blue');
    assert.deepEqual(await rooms(zoo.url, aid), [aid, 'blue', 'red'].sort());
    assert.deepEqual(await rooms(zoo.url, cid), [cid]);
    await post(zoo.url, '/rooms/red/remove-members-from/blue');
    assert.deepEqual(await rooms(zoo.url, bid), [bid, 'red'].sort());
    await request(a, 'post', '/rooms/green/join');
    await post(zoo.url, '/rooms/red/leave-all');
    assert.deepEqual(await rooms(zoo.url, aid), [aid], 'every room left but its own');
    assert.deepEqual(await rooms(zoo.url, bid), [bid]);
  });

  it('the model API: subscribe, publish, unsubscribe, watch, unwatch', async () => {
    // Created over HTTP: no socket is subscribed by the create itself.
    const pet = await post(zoo.url, '/pet', { name: 'Pub' });
    await request(a, 'post', `/pets/${pet.id}/subscribe`);
    await request(b, 'post', `/pets/${pet.id}/subscribe`);
    await settle(all);
    await request(a, 'post', `/pets/${pet.id}/publish`, { custom: true });
    await waitFor(b, 1);
    assert.deepEqual(await settle(all), [[], [['pet', { custom: true }]], []], 'data as given, no envelope; the sender omitted');
    await request(b, 'post', `/pets/${pet.id}/unsubscribe`);
    await post(zoo.url, `/pets/${pet.id}/publish`, { n: 1 });
    await waitFor(a, 1);
    assert.deepEqual(await settle(all), [[['pet', { n: 1 }]], [], []]);
    await request(b, 'post', '/pets/watch');
    await request(c, 'post', '/pet', { name: 'Watched' });
    await waitFor(b, 1);
    assert.equal((await settle(all))[1][0][1].verb, 'created');
    await request(b, 'post', '/pets/unwatch');
    await request(c, 'post', '/pet', { name: 'Unwatched' });
    assert.deepEqual((await settle(all, 300))[1], [], 'unwatch stops created messages');
  });
});
