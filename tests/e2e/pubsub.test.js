// Resourceful pub-sub as the stock client sees it: every message,
// its exact recipients (watcher, record subscriber, actor, bystander), the
// cross-model fan-out in order, and the requester never echoed.
'use strict';
const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { freshDatabase, startZoo, connect, request, waitFor, settle, strip } = require('./helpers');

const J = { 'content-type': 'application/json' };
async function http(url, method, path, body) {
  const res = await fetch(url + path, { method, headers: body ? J : {}, body: body ? JSON.stringify(body) : undefined });
  return res.json();
}
const verbs = (events) => events.map(([e, m]) => `${e} ${m.verb}`);

for (const dialect of ['sqlite', 'postgres']) {
  describe(`pub-sub (${dialect})`, () => {
    let db, zoo, sockets;
    let actor, watcher, subscriber, bystander;
    before(async () => {
      db = freshDatabase(dialect);
      zoo = await startZoo(db.url);
    });
    after(async () => {
      await zoo?.stop();
      db?.drop();
    });
    beforeEach(async () => {
      [actor, watcher, subscriber, bystander] = await Promise.all([1, 2, 3, 4].map(() => connect(zoo.url)));
      sockets = [actor, watcher, subscriber, bystander];
    });
    afterEach(() => { for (const s of sockets) s.disconnect(); });

    it('created goes to watchers only, populated, and never back to the actor', async () => {
      const w = await request(watcher, 'get', '/pet?name=nothing-yet');
      assert.deepEqual(w.body, [], 'an empty find still watches');
      const created = await request(actor, 'post', '/pet', { name: 'Rex', species: 'dog' });
      await waitFor(watcher, 1);
      const [a, wa, s, b] = await settle(sockets);
      assert.deepEqual(a, [], 'the actor is not echoed');
      assert.deepEqual(s, []);
      assert.deepEqual(b, []);
      assert.deepEqual(wa, [['pet', { verb: 'created', data: created.body, id: created.body.id }]]);
    });

    it('updated goes to the record\'s subscribers (watchers were introduced), with previous', async () => {
      await request(watcher, 'get', '/pet?name=nothing-yet');
      const pet = (await request(actor, 'post', '/pet', { name: 'Ace' })).body;
      await request(subscriber, 'get', `/pet/${pet.id}`);
      await waitFor(watcher, 1);
      await settle(sockets);
      await request(actor, 'patch', `/pet/${pet.id}`, { name: 'Max', species: 'cat' });
      await waitFor(subscriber, 1);
      await waitFor(watcher, 1);
      const [a, w, s, b] = await settle(sockets);
      assert.deepEqual(a, []);
      assert.deepEqual(b, []);
      // It carries the record's new ETag: what a findOne of it answers.
      const etag = (await fetch(`${zoo.url}/pet/${pet.id}`)).headers.get('etag');
      assert.match(etag, /^"[A-Za-z0-9_-]{22}"$/);
      const expected = { verb: 'updated', id: pet.id, data: { name: 'Max', species: 'cat', id: pet.id }, previous: strip({ ...pet, tags: [] }), etag };
      assert.deepEqual(strip(s), [['pet', expected]]);
      assert.deepEqual(strip(w), [['pet', expected]], 'a watcher was subscribed to the new record');
      assert.equal(typeof s[0][1].data.updatedAt, 'number');
    });

    it('an HTTP change reaches every subscriber, the creator included', async () => {
      const pet = (await request(actor, 'post', '/pet', { name: 'Http' })).body;
      await request(subscriber, 'get', `/pet/${pet.id}`);
      await settle(sockets);
      await http(zoo.url, 'PATCH', `/pet/${pet.id}`, { name: 'Web' });
      await waitFor(actor, 1);
      await waitFor(subscriber, 1);
      const [a, , s, b] = await settle(sockets);
      assert.deepEqual(verbs(a), ['pet updated'], 'create subscribed the creator');
      assert.deepEqual(verbs(s), ['pet updated']);
      assert.deepEqual(b, []);
    });

    it('destroyed goes to subscribers, then the reverse messages', async () => {
      const user = (await request(actor, 'post', '/user', { name: 'Own', email: 'own@example.com' })).body;
      const tag = (await request(actor, 'post', '/tag', { label: 'destroy-me' })).body;
      const pet = (await request(actor, 'post', '/pet', { name: 'Gone', owner: user.id, tags: [tag.id] })).body;
      await request(subscriber, 'get', `/pet/${pet.id}`);
      await request(watcher, 'get', `/user/${user.id}`);
      await request(watcher, 'get', `/tag/${tag.id}`);
      await settle(sockets);
      await request(actor, 'delete', `/pet/${pet.id}`);
      await waitFor(subscriber, 3);
      await waitFor(watcher, 3);
      const [a, w, s] = await settle(sockets);
      assert.deepEqual(a, []);
      // Reads subscribe deeply (subscribeDeep): the pet's reader is also in the
      // owner's and the tag's rooms, and the user's and tag's reader is in
      // the pet's room. Both hear all three, in order.
      const expected = [
        ['pet', { verb: 'destroyed', id: pet.id, previous: strip(pet) }],
        ['user', { id: user.id, verb: 'removedFrom', attribute: 'pets', removedId: pet.id }],
        ['tag', { id: tag.id, verb: 'removedFrom', attribute: 'pets', removedId: pet.id }],
      ];
      assert.deepEqual(strip(s), expected);
      assert.deepEqual(strip(w), expected);
    });

    it('create with associations: reverse messages first, in order, then created', async () => {
      const user = (await request(actor, 'post', '/user', { name: 'U', email: `u${Date.now()}@example.com` })).body;
      const tag = (await request(actor, 'post', '/tag', { label: `t${Date.now()}` })).body;
      await request(watcher, 'get', `/user/${user.id}`);
      await request(watcher, 'get', `/tag/${tag.id}`);
      await request(watcher, 'get', '/pet?name=none');
      await settle(sockets);
      const pet = (await request(actor, 'post', '/pet', { name: 'Linked', owner: user.id, tags: [tag.id] })).body;
      await waitFor(watcher, 3);
      const [a, w] = await settle(sockets);
      assert.deepEqual(a, []);
      assert.deepEqual(w, [
        ['tag', { id: tag.id, verb: 'addedTo', attribute: 'pets', addedId: pet.id }],
        ['user', { id: user.id, verb: 'addedTo', attribute: 'pets', addedId: pet.id }],
        ['pet', { verb: 'created', data: pet, id: pet.id }],
      ]);
    });

    it('create that takes children: child updated, created, old parent removedFrom', async () => {
      const ann = (await request(actor, 'post', '/user', { name: 'Ann', email: `ann${Date.now()}@example.com` })).body;
      const pet = (await request(actor, 'post', '/pet', { name: 'Taken', owner: ann.id })).body;
      await request(watcher, 'get', `/user/${ann.id}`);
      await request(watcher, 'get', `/pet/${pet.id}`);
      await request(watcher, 'get', '/user?name=none');
      await settle(sockets);
      const bob = (await request(actor, 'post', '/user', { name: 'Bob', email: `bob${Date.now()}@example.com`, pets: [pet.id] })).body;
      await waitFor(watcher, 3);
      const [, w] = await settle(sockets);
      assert.deepEqual(strip(w), [
        ['pet', { verb: 'updated', data: { owner: bob.id }, id: pet.id }],
        ['user', { verb: 'created', data: strip(bob), id: bob.id }],
        ['user', { id: ann.id, verb: 'removedFrom', attribute: 'pets', removedId: pet.id }],
      ]);
    });

    it('update of a to-one: removedFrom the old parent, addedTo the new, then updated', async () => {
      const ann = (await request(actor, 'post', '/user', { name: 'A', email: `a${Date.now()}@example.com` })).body;
      const bob = (await request(actor, 'post', '/user', { name: 'B', email: `b${Date.now()}@example.com` })).body;
      const pet = (await request(actor, 'post', '/pet', { name: 'Mover', owner: ann.id })).body;
      for (const path of [`/user/${ann.id}`, `/user/${bob.id}`, `/pet/${pet.id}`]) await request(watcher, 'get', path);
      await settle(sockets);
      await request(actor, 'patch', `/pet/${pet.id}`, { owner: bob.id });
      await waitFor(watcher, 3);
      const [, w] = await settle(sockets);
      assert.deepEqual(verbs(w), ['user removedFrom', 'user addedTo', 'pet updated']);
      assert.deepEqual(w[0][1], { id: ann.id, verb: 'removedFrom', attribute: 'pets', removedId: pet.id });
      assert.deepEqual(w[1][1], { id: bob.id, verb: 'addedTo', attribute: 'pets', addedId: pet.id });
      assert.equal(w[2][1].previous.owner.id, ann.id);
    });

    it('add, remove and replace fan out to both sides; the actor is subscribed to the child', async () => {
      const ann = (await request(watcher, 'post', '/user', { name: 'P', email: `p${Date.now()}@example.com` })).body;
      const bob = (await request(watcher, 'post', '/user', { name: 'Q', email: `q${Date.now()}@example.com` })).body;
      const pet = (await request(watcher, 'post', '/pet', { name: 'Shared', owner: ann.id })).body;
      const tag = (await request(watcher, 'post', '/tag', { label: `x${Date.now()}` })).body;
      for (const path of [`/user/${ann.id}`, `/user/${bob.id}`, `/pet/${pet.id}`, `/tag/${tag.id}`]) await request(subscriber, 'get', path);
      await settle(sockets);
      await request(actor, 'put', `/user/${bob.id}/pets/${pet.id}`);
      await waitFor(subscriber, 3);
      let [a, , s] = await settle(sockets);
      assert.deepEqual(a, []);
      assert.deepEqual(s, [
        ['user', { id: bob.id, verb: 'addedTo', attribute: 'pets', addedId: pet.id }],
        ['pet', { verb: 'updated', data: { owner: bob.id }, id: pet.id }],
        ['user', { id: ann.id, verb: 'removedFrom', attribute: 'pets', removedId: pet.id }],
      ]);
      await request(actor, 'put', `/pet/${pet.id}/tags/${tag.id}`);
      await waitFor(subscriber, 2);
      [a, , s] = await settle(sockets);
      assert.deepEqual(s, [
        ['pet', { id: pet.id, verb: 'addedTo', attribute: 'tags', addedId: tag.id }],
        ['tag', { id: tag.id, verb: 'addedTo', attribute: 'pets', addedId: pet.id }],
      ]);
      // The actor of `add` was subscribed to the child: an HTTP change reaches it.
      await http(zoo.url, 'PATCH', `/tag/${tag.id}`, { label: `y${Date.now()}` });
      await waitFor(actor, 1);
      [a] = await settle(sockets);
      assert.deepEqual(verbs(a), ['tag updated']);
      await request(actor, 'delete', `/user/${bob.id}/pets/${pet.id}`);
      await waitFor(subscriber, 2);
      [, , s] = await settle(sockets);
      assert.deepEqual(s, [
        ['user', { id: bob.id, verb: 'removedFrom', attribute: 'pets', removedId: pet.id }],
        ['pet', { verb: 'updated', data: { owner: null }, id: pet.id }],
      ]);
      await request(actor, 'put', `/pet/${pet.id}/tags`, []);
      await waitFor(subscriber, 2);
      [, , s] = await settle(sockets);
      assert.deepEqual(s, [
        ['pet', { id: pet.id, verb: 'removedFrom', attribute: 'tags', removedId: tag.id }],
        ['tag', { id: tag.id, verb: 'removedFrom', attribute: 'pets', removedId: pet.id }],
      ]);
    });

    it('destroying a parent updates its children', async () => {
      const ann = (await request(actor, 'post', '/user', { name: 'D', email: `d${Date.now()}@example.com` })).body;
      const pet = (await request(actor, 'post', '/pet', { name: 'Orphan', owner: ann.id })).body;
      await request(subscriber, 'get', `/pet/${pet.id}`);
      await request(watcher, 'get', `/user/${ann.id}`);
      await settle(sockets);
      await request(actor, 'delete', `/user/${ann.id}`);
      await waitFor(subscriber, 2);
      await waitFor(watcher, 2);
      const [a, w, s, b] = await settle(sockets);
      assert.deepEqual([a, b], [[], []]);
      // Each reader is in both rooms (the pet's reader through its owner,
      // the user's reader through its pets).
      assert.deepEqual(verbs(w), ['user destroyed', 'pet updated']);
      assert.deepEqual(verbs(s), ['user destroyed', 'pet updated']);
      assert.deepEqual(s[1], ['pet', { verb: 'updated', data: { owner: null }, id: pet.id }]);
    });
  });
}
