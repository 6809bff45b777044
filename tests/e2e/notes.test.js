// The notes example with the stock sails.io.js, on SQLite and PostgreSQL:
// two accounts, and every path by which one could learn of the other's
// private notes or password shown closed: answers, populate, watching
// through another model, `previous`, `destroyed`, a filter or sort on a
// private attribute, a note turned private, sign-out; and the handshake's
// origin check with the victim's cookie.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { freshDatabase, startNotes, connect, request, settle, sleep, io } = require('./helpers');

const EVENTS = ['note', 'account'];

/** POSTs JSON over HTTP; resolves `{status, body, cookie}`. */
async function post(base, path, data, cookie) {
  const headers = { 'content-type': 'application/json' };
  if (cookie) headers.cookie = cookie;
  const res = await fetch(base + path, { method: 'POST', headers, body: JSON.stringify(data) });
  const set = res.headers.get('set-cookie');
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: res.status, body, cookie: set ? set.split(';')[0] : cookie };
}

/** An HTTP request; resolves `{status, body}`. */
async function http(base, method, path, cookie, data) {
  const headers = {};
  if (cookie) headers.cookie = cookie;
  if (data !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, { method, headers, body: data === undefined ? undefined : JSON.stringify(data) });
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: res.status, body };
}

/** Everything `received` says, as text (to look for what must not be there). */
const said = (received) => JSON.stringify(received);

for (const dialect of ['sqlite', 'postgres']) {
  describe(`notes on ${dialect}: who may see what`, () => {
    let db, app, ann, bo, annSocket, boSocket;
    before(async () => {
      db = freshDatabase(dialect);
      app = await startNotes(db.url);
      ann = await post(app.url, '/signup', { name: 'Ann', email: 'ann@example.com', password: 'ann-secret-pw' });
      bo = await post(app.url, '/signup', { name: 'Bo', email: 'bo@example.com', password: 'bo-secret-pw1' });
      assert.equal(ann.status, 200, JSON.stringify(ann.body));
      assert.equal(bo.status, 200);
      assert.ok(ann.cookie.startsWith('sails.sid='), ann.cookie);
      // Sockets identify by the cookie of their handshake.
      annSocket = await connect(app.url, { events: EVENTS, headers: { cookie: ann.cookie } });
      boSocket = await connect(app.url, { events: EVENTS, headers: { cookie: bo.cookie } });
    });
    after(async () => {
      annSocket?.disconnect();
      boSocket?.disconnect();
      await app?.stop();
      db?.drop();
    });

    it('answers sign-up, sign-in, me and sign-out as the contract says', async () => {
      assert.equal(ann.body.name, 'Ann');
      assert.equal(ann.body.passwordHash, undefined, 'never the hash');
      const wrong = await post(app.url, '/signin', { email: 'ann@example.com', password: 'nope-nope-nope' });
      assert.equal(wrong.status, 401);
      const unknown = await post(app.url, '/signin', { email: 'who@example.com', password: 'nope-nope-nope' });
      assert.deepEqual([unknown.status, unknown.body], [wrong.status, wrong.body], 'no oracle of who has an account');
      const again = await post(app.url, '/signin', { email: 'ann@example.com', password: 'ann-secret-pw' });
      assert.equal(again.status, 200);
      const me = await http(app.url, 'GET', '/me', again.cookie);
      assert.equal(me.body.email, 'ann@example.com');
      const out = await post(app.url, '/signout', {}, again.cookie);
      assert.equal(out.status, 200);
      assert.equal((await http(app.url, 'GET', '/me', again.cookie)).status, 401);
      assert.equal((await http(app.url, 'GET', '/me')).status, 401);
      const dup = await post(app.url, '/signup', { name: 'Ann 2', email: 'ann@example.com', password: 'another-pw-1' });
      assert.equal(dup.status, 400);
      assert.equal(dup.body.code, 'E_UNIQUE');
    });

    it('answers 401 on every /note route without a session, over HTTP and sockets', async () => {
      for (const [method, path, data] of [['GET', '/note'], ['GET', '/note/1'], ['POST', '/note', { title: 'x' }], ['PATCH', '/note/1', { title: 'x' }], ['DELETE', '/note/1'], ['GET', '/note/1/owner']]) {
        const r = await http(app.url, method, path, undefined, data);
        assert.equal(r.status, 401, `${method} ${path}`);
      }
      const anon = await connect(app.url, { events: EVENTS });
      const r = await request(anon, 'get', '/note');
      assert.equal(r.jwr.statusCode, 401);
      anon.disconnect();
    });

    it('keeps private notes, accounts and password hashes from everyone else', async () => {
      // Both read their notes (watching notes, and through the populated
      // owner, accounts).
      for (const s of [annSocket, boSocket]) assert.equal((await request(s, 'get', '/note')).jwr.statusCode, 200);
      const secret = await request(annSocket, 'post', '/note', { title: 'ann-secret', body: 'diary', owner: bo.body.id });
      assert.equal(secret.jwr.statusCode, 200);
      assert.equal(secret.body.owner.id, ann.body.id, 'a note is its creator\'s, whatever owner is sent');
      const shared = await request(annSocket, 'post', '/note', { title: 'ann-shared', shared: true });
      // A new account (watching accounts must not show it to Bo).
      const cy = await post(app.url, '/signup', { name: 'Cy', email: 'cy@example.com', password: 'cy-secret-pw' });
      assert.equal(cy.status, 200);
      await request(annSocket, 'patch', `/note/${secret.body.id}`, { body: 'diary 2' });
      await request(annSocket, 'patch', `/note/${shared.body.id}`, { body: 'edited' });
      let [heard] = await settle([boSocket], 300);
      assert.ok(!said(heard).includes('ann-secret') && !said(heard).includes('diary'), said(heard));
      assert.ok(!said(heard).includes('cy@example.com') && !heard.some(([e]) => e === 'account'), 'no account but his own: ' + said(heard));
      const created = heard.find(([e, m]) => e === 'note' && m.verb === 'created' && m.data.title === 'ann-shared');
      assert.ok(created, 'Bo hears the shared note: ' + said(heard));
      assert.ok(typeof created[1].data.owner !== 'object' || created[1].data.owner === null, 'not Ann\'s account');
      const updated = heard.find(([e, m]) => e === 'note' && m.verb === 'updated' && m.id === shared.body.id);
      assert.ok(updated, said(heard));
      assert.equal(updated[1].previous.owner, null, '`previous` populates Ann\'s account: hidden from Bo');
      assert.ok(!said(heard).includes('argon2') && !said(heard).includes('passwordHash'));

      // Answers: the shared note, its owner null; Ann's account not found.
      const list = await request(boSocket, 'get', '/note');
      assert.deepEqual(list.body.map((n) => n.title), ['ann-shared']);
      assert.equal(list.body[0].owner, null);
      for (const path of [`/note/${secret.body.id}`, `/account/${ann.body.id}`, `/note/${shared.body.id}/owner`, `/account/${ann.body.id}/notes`]) {
        assert.equal((await request(boSocket, 'get', path)).jwr.statusCode, 404, path);
        assert.equal((await http(app.url, 'GET', path, bo.cookie)).status, 404, path);
      }
      // A private attribute is no oracle: filtering or sorting on it is refused.
      for (const path of ['/account?passwordHash[startsWith]=%24', '/account?sort=passwordHash%20ASC', '/account?where=' + encodeURIComponent(JSON.stringify({ passwordHash: { contains: 'a' } }))]) {
        const r = await http(app.url, 'GET', path, bo.cookie);
        assert.equal(r.status, 400, path + ' ' + JSON.stringify(r.body));
      }
      // Changing or destroying Ann's notes: 403 when Bo may read it, 404 when not.
      assert.equal((await request(boSocket, 'patch', `/note/${shared.body.id}`, { title: 'mine now' })).jwr.statusCode, 403);
      assert.equal((await request(boSocket, 'delete', `/note/${secret.body.id}`)).jwr.statusCode, 404);
      assert.equal((await http(app.url, 'DELETE', `/note/${shared.body.id}`, bo.cookie)).status, 403);

      // Turned private: Bo hears nothing of it from then on.
      await request(annSocket, 'patch', `/note/${shared.body.id}`, { shared: false, title: 'now-private' });
      await request(annSocket, 'patch', `/note/${shared.body.id}`, { body: 'later' });
      await request(annSocket, 'delete', `/note/${secret.body.id}`);
      [heard] = await settle([boSocket], 300);
      assert.deepEqual(heard, [], 'nothing of a note turned private, nor of a private one destroyed');
      // Ann heard none of her own changes (a socket is not sent its own), and
      // reads her notes in full.
      const mine = await request(annSocket, 'get', '/note');
      assert.deepEqual(mine.body.map((n) => n.title).sort(), ['now-private']);
      assert.equal(mine.body[0].owner.name, 'Ann');
    });

    it('tells Bo of a shared note destroyed, without its owner', async () => {
      const n = await request(annSocket, 'post', '/note', { title: 'short-lived', shared: true });
      await request(boSocket, 'get', '/note');
      await request(annSocket, 'delete', `/note/${n.body.id}`);
      const [heard] = await settle([boSocket], 300);
      const gone = heard.find(([e, m]) => e === 'note' && m.verb === 'destroyed' && m.id === n.body.id);
      assert.ok(gone, said(heard));
      assert.equal(gone[1].previous.owner, null);
    });

    it('signs in and out over a socket, and a sign-out reaches the socket at once', async () => {
      const s = await connect(app.url, { events: EVENTS });
      assert.equal((await request(s, 'get', '/me')).jwr.statusCode, 401);
      const signin = await request(s, 'post', '/signin', { email: 'bo@example.com', password: 'bo-secret-pw1' });
      assert.equal(signin.jwr.statusCode, 200);
      assert.equal((await request(s, 'get', '/me')).body.name, 'Bo', 'the socket keeps its session cookie');
      assert.equal((await request(s, 'get', '/note')).jwr.statusCode, 200);
      const out = await request(s, 'post', '/signout', {});
      assert.equal(out.jwr.statusCode, 200);
      await request(annSocket, 'post', '/note', { title: 'after-sign-out', shared: true });
      const [heard] = await settle([s], 300);
      assert.deepEqual(heard, [], 'a signed-out socket hears nothing');
      assert.equal((await request(s, 'get', '/note')).jwr.statusCode, 401);
      s.disconnect();
    });

    it('refuses a foreign origin\'s handshake with the victim\'s cookie, accepts its own', async () => {
      const attempt = (headers) => new Promise((resolve) => {
        const s = io.sails.connect(app.url, { url: app.url, initialConnectionHeaders: headers, reconnection: false });
        const done = (outcome) => { clearTimeout(t); if (s.isConnected()) s.disconnect(); resolve(outcome); };
        const t = setTimeout(() => done('timeout'), 5000);
        s.on('connect', () => done('connected'));
        s._raw.on('connect_error', () => done('refused'));
        s._raw.on('error', () => done('refused'));
      });
      assert.equal(await attempt({ origin: 'http://evil.example', cookie: ann.cookie }), 'refused');
      assert.equal(await attempt({ origin: `http://127.0.0.1:${app.port}`, cookie: ann.cookie }), 'connected');
      await sleep(10);
    });
  });
}
