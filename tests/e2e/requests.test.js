// Virtual requests with the stock sails.io.js client: every verb,
// the JWR, parse errors, the handshake rules, concurrency, EIO4 clients.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { freshDatabase, startZoo, connect, request, sleep, SocketIoClient } = require('./helpers');

for (const dialect of ['sqlite', 'postgres']) {
  describe(`virtual requests (${dialect})`, () => {
    let db, zoo, a;
    before(async () => {
      db = freshDatabase(dialect);
      // A page of http://good.example may open sockets (see origins.test.js).
      zoo = await startZoo(db.url, { ALLOWED_ORIGINS: 'http://good.example' });
      a = await connect(zoo.url);
    });
    after(async () => {
      a?.disconnect();
      await zoo?.stop();
      db?.drop();
    });

    it('runs every verb through the blueprints and answers with the JWR', async () => {
      let r = await request(a, 'post', '/user', { name: 'Ann', email: 'ann@example.com' });
      assert.equal(r.jwr.statusCode, 200);
      assert.deepEqual(r.jwr.headers, {}, 'only headers the handler set; none here');
      assert.equal(r.body.name, 'Ann');
      assert.deepEqual(r.body.pets, []);
      const id = r.body.id;
      r = await request(a, 'get', `/user/${id}`);
      assert.equal(r.body.email, 'ann@example.com');
      r = await request(a, 'patch', `/user/${id}`, { age: '30' });
      assert.equal(r.body.age, 30);
      r = await request(a, 'put', `/user/${id}`, { name: 'Annie' });
      assert.equal(r.body.name, 'Annie');
      r = await request(a, 'head', '/user');
      assert.equal(r.jwr.statusCode, 200);
      assert.equal(r.body.length, 1, 'a socket HEAD keeps its body, as in Sails');
      r = await request(a, 'delete', `/user/${id}`);
      assert.equal(r.body.name, 'Annie');
      r = await request(a, 'get', `/user/${id}`);
      assert.equal(r.jwr.statusCode, 404);
      assert.equal(r.body, 'Not Found');
      assert.ok(r.jwr.error, 'sails.io.js flags a 4xx as an error');
    });

    it('treats GET data as parameters, and parses raw query strings', async () => {
      await request(a, 'post', '/user', { name: 'Bob', email: 'bob@example.com', age: 41 });
      await request(a, 'post', '/user', { name: 'Cy', email: 'cy@example.com', age: 20 });
      let r = await request(a, 'get', '/user', { where: { age: { '>': 30 } } });
      assert.deepEqual(r.body.map((u) => u.name), ['Bob']);
      r = await request(a, 'get', '/user', { name: 'Cy' });
      assert.deepEqual(r.body.map((u) => u.name), ['Cy']);
      r = await request(a, 'get', '/user?where={"name":{"startsWith":"b"}}&sort=name ASC');
      assert.deepEqual(r.body.map((u) => u.name), ['Bob']);
      r = await request(a, 'get', '/user?name[contains]=y');
      assert.deepEqual(r.body.map((u) => u.name), ['Cy']);
      r = await request(a, 'delete', '/user/999', {});
      assert.equal(r.jwr.statusCode, 404);
    });

    it('answers client mistakes with 400 bodies, never a dropped callback', async () => {
      let r = await request(a, 'post', '/user', { name: 'No email' });
      assert.equal(r.jwr.statusCode, 400);
      assert.equal(r.body.code, 'E_INVALID_NEW_RECORD');
      r = await request(a, 'get', '/user', { where: '{bad' });
      assert.equal(r.body.code, 'E_INVALID_CRITERIA');
      r = await request(a, 'get', '/user', { populate: true });
      assert.equal(r.body.code, 'E_INVALID_POPULATES');
      r = await request(a, 'get', '/user', { select: ['name'] });
      assert.equal(r.jwr.statusCode, 200, 'a select array is accepted over sockets');
      assert.deepEqual(Object.keys(r.body[0]).sort(), ['id', 'name', 'pets']);
    });

    it('tells handlers the request came over a socket, with the handshake cookie winning', async () => {
      let r = await request(a, 'get', '/whoami');
      assert.equal(r.body.isSocket, true);
      assert.equal(typeof r.body.id, 'string');
      const http = await (await fetch(zoo.url + '/whoami')).json();
      assert.equal(http.isSocket, false);
      // A socket whose handshake carried a cookie keeps it, whatever a
      // message says (compared case-insensitively).
      const c = await connect(zoo.url, { headers: { cookie: 'sails.sid=handshake' } });
      r = await new Promise((res) => c.request({ method: 'get', url: '/whoami', headers: { Cookie: 'sails.sid=forged', Origin: 'http://evil' } }, (body, jwr) => res({ body, jwr })));
      assert.equal(r.body.cookie, 'sails.sid=handshake');
      assert.equal(r.body.origin, null, 'no origin at the handshake, none in the request');
      c.disconnect();
      const o = await connect(zoo.url, { headers: { origin: 'http://good.example' } });
      r = await new Promise((res) => o.request({ method: 'get', url: '/whoami', headers: { ORIGIN: 'http://evil.example' } }, (body, jwr) => res({ body, jwr })));
      assert.equal(r.body.origin, 'http://good.example', 'the handshake origin wins');
      o.disconnect();
    });

    it('runs one socket\'s requests concurrently', async () => {
      const started = Date.now();
      const slow = request(a, 'get', '/delay/800');
      const fast = await request(a, 'get', '/delay/0');
      const fastMs = Date.now() - started;
      assert.equal(fast.body.waited, 0);
      assert.ok(fastMs < 600, `the fast request waited ${fastMs} ms behind the slow one`);
      assert.equal((await slow).body.waited, 800);
    });

    it('answers malformed requests with the parse-error object', async () => {
      const raw = SocketIoClient(zoo.url, {
        transports: ['websocket'], forceNew: true, reconnection: false,
        query: '__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript',
      });
      await new Promise((res) => raw.on('connect', res));
      const ack = (event, payload) => new Promise((res) => raw.emit(event, payload, (reply) => res(reply)));
      for (const payload of [{}, { url: 5 }, { url: '' }, 'just a string', { url: '/user', data: 7 }]) {
        const reply = await ack('get', payload);
        assert.equal(reply.code, 'SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ', JSON.stringify(payload));
        assert.equal(reply.status, 400);
        assert.equal(reply.message, 'Failed to parse incoming socket.io request.');
        assert.equal(reply.stack, undefined, 'no stack trace');
        assert.equal(typeof reply.details, 'string');
      }
      // No ack asked for: the error comes as `sails:parseError`.
      const evt = new Promise((res) => raw.on('sails:parseError', res));
      raw.emit('post', { data: {} });
      assert.equal((await evt).code, 'SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ');
      // The server is fine afterwards.
      const ok = await ack('get', { url: '/user', data: {} });
      assert.equal(ok.statusCode, 200);
      raw.close();
    });

    it('refuses requests from a missing, old or invalid SDK version without crashing', async () => {
      for (const query of ['', '__sails_io_sdk_version=0.10.0', '__sails_io_sdk_version=abc']) {
        const raw = SocketIoClient(zoo.url, { transports: ['websocket'], forceNew: true, reconnection: false, query });
        await new Promise((res) => raw.on('connect', res));
        const reply = await new Promise((res) => raw.emit('get', { url: '/user' }, res));
        assert.equal(reply.code, 'SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ', query);
        assert.match(reply.details, /SDK version/);
        raw.close();
      }
      const r = await request(a, 'get', '/user?limit=1');
      assert.equal(r.jwr.statusCode, 200, 'the server survived');
    });

    it('serves /__getcookie for cross-origin pages', async () => {
      const res = await fetch(zoo.url + '/__getcookie');
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /application\/javascript/);
      assert.equal(await res.text(), '_sailsIoJSConnect();');
      const [sid, rid] = res.headers.getSetCookie();
      assert.match(sid, /^sails\.sid=[0-9a-f]+; Path=\/; HttpOnly$/);
      // The key a reconnecting socket is taken back by.
      assert.match(rid, /^topsail\.rid=[0-9a-f]{32}; Path=\/; HttpOnly; SameSite=Lax$/);
      const r = await request(a, 'get', '/__getcookie');
      assert.equal(r.body, '_sailsIoJSConnect();');
      assert.equal(r.jwr.headers['set-cookie'], undefined, 'a JWR never carries set-cookie');
    });

    it('lets EIO4 (socket.io v3+) clients connect and request', async () => {
      const ws = new WebSocket(`${zoo.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1`);
      const frames = [];
      ws.on('message', (m) => frames.push(String(m)));
      await new Promise((res, rej) => { ws.on('open', res); ws.on('error', rej); });
      const next = async (pred) => {
        for (let i = 0; i < 300; i++) {
          const idx = frames.findIndex(pred);
          if (idx >= 0) return frames.splice(idx, 1)[0];
          await sleep(10);
        }
        throw new Error('no matching frame in ' + JSON.stringify(frames));
      };
      const open = JSON.parse((await next((f) => f.startsWith('0{'))).slice(1));
      assert.ok(open.sid);
      ws.send('40');
      assert.match(await next((f) => f.startsWith('40')), /^40\{"sid":"[^"]+"\}$/);
      ws.send('421["get",{"method":"get","headers":{},"data":{},"url":"/user?limit=1"}]');
      const ack = JSON.parse((await next((f) => f.startsWith('431'))).slice(3));
      assert.equal(ack[0].statusCode, 200);
      assert.ok(Array.isArray(ack[0].body));
      ws.close();
    });
  });
}
