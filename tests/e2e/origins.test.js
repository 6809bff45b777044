// Who may open a socket, with the stock sails.io.js: a page of another
// origin may not, even with its visitor's cookie; the zoo's own origin, an
// origin listed in ALLOWED_ORIGINS, and a client that sends no Origin may.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { freshDatabase, startZoo, request, io } = require('./helpers');

/** Opens a socket with `headers`; resolves 'connected' or 'refused'. */
function attempt(url, headers) {
  return new Promise((resolve) => {
    const s = io.sails.connect(url, { url, initialConnectionHeaders: headers, reconnection: false });
    const done = (outcome) => { clearTimeout(t); resolve({ outcome, socket: s }); };
    const t = setTimeout(() => done('timeout'), 5000);
    s.on('connect', () => done('connected'));
    s._raw.on('connect_error', () => done('refused'));
    s._raw.on('error', () => done('refused'));
  });
}

describe('socket handshakes and origins', () => {
  let db, zoo, cookie;
  before(async () => {
    db = freshDatabase('sqlite');
    zoo = await startZoo(db.url, { ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:5173' });
    // The visitor's cookie, as the zoo's own page would get it.
    const r = await fetch(zoo.url + '/__getcookie');
    cookie = r.headers.get('set-cookie').split(';')[0];
  });
  after(async () => {
    await zoo?.stop();
    db?.drop();
  });

  it('refuses a page of another origin, even with the visitor\'s cookie', async () => {
    const { outcome, socket } = await attempt(zoo.url, { origin: 'http://evil.example', cookie });
    assert.equal(outcome, 'refused');
    assert.equal(socket.isConnected(), false);
    const page = await fetch(zoo.url + '/socket.io/?EIO=3&transport=polling&__sails_io_sdk_version=1.2.1', { headers: { origin: 'http://evil.example', cookie } });
    assert.equal(page.status, 403, 'the handshake itself is 403');
  });

  it('accepts the zoo\'s own origin, an allowed one and a client with no Origin', async () => {
    const own = `http://127.0.0.1:${zoo.port}`;
    for (const headers of [{ origin: own, cookie }, { origin: 'https://app.example.com' }, { origin: 'http://localhost:5173/' }, {}]) {
      const { outcome, socket } = await attempt(zoo.url, headers);
      assert.equal(outcome, 'connected', JSON.stringify(headers));
      const r = await request(socket, 'get', '/user');
      assert.equal(r.jwr.statusCode, 200);
      socket.disconnect();
    }
  });
});
