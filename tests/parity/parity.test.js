// Sails parity: one sequence of requests against Sails 1.5.18 (sails-disk,
// in memory) and against the topsail zoo (SQLite, then PostgreSQL), both
// starting empty. Every answer must match (status, and the body without
// timestamps or key order; for a 400, its `code`), except the deviations
// listed in DEVIATIONS, which docs/COMPATIBILITY.md explains.
'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { strip, startBoth } = require('./common');

const PG = process.env.TOPSAIL_PARITY_PG || 'postgres://postgres@127.0.0.1:5432';
const J = 'application/json';

const steps = [
  ['POST', '/user', { name: 'Ann', email: 'ann@example.com' }],
  ['POST', '/user', { name: 'Bob', email: 'bob@example.com', age: '41' }],
  ['POST', '/user', { name: 'Carol', email: 'carol@example.com', age: 25, bogus: 1 }],
  ['POST', '/pet', { name: 'Rex', owner: 1 }],
  ['POST', '/pet', { name: 'Ace', owner: 1, species: 'dog' }],
  ['POST', '/pet', { name: 'Stray' }],
  ['POST', '/tag', { label: 'good' }],
  ['POST', '/tag', { label: 'fluffy' }],
  ['PUT', '/pet/1/tags/1'],
  ['PUT', '/pet/1/tags/2'],
  ['PUT', '/tag/1/pets/2'],
  ['GET', '/user'],
  ['GET', '/user/1'],
  ['GET', '/user/1/'],
  ['GET', '/USER/2'],
  ['GET', '/user/1?name=whatever'],
  ['GET', '/pet'],
  ['GET', '/pet/1'],
  ['GET', '/tag/1'],
  ['GET', '/user?name=Bob'],
  ['GET', '/user?age=41'],
  ['GET', '/user?name[contains]=o'],
  ['GET', '/user?where=' + encodeURIComponent('{"age":{">":30}}')],
  ['GET', '/user?where=' + encodeURIComponent('{"age":{">=":25,"<":41}}')],
  ['GET', '/user?where=' + encodeURIComponent('{"name":{"in":["Ann","Bob"]}}')],
  ['GET', '/user?where=' + encodeURIComponent('{"name":{"nin":["Ann","Bob"]}}')],
  ['GET', '/user?where=' + encodeURIComponent('{"name":{"!=":"Ann"}}')],
  ['GET', '/user?where=' + encodeURIComponent('{"name":{"startsWith":"C"}}')],
  ['GET', '/user?where=' + encodeURIComponent('{"name":{"endsWith":"b"}}')],
  ['GET', '/user?where=' + encodeURIComponent('{"or":[{"name":"Ann"},{"age":41}]}')],
  ['GET', '/user?where=' + encodeURIComponent('{"or":[]}')],
  ['GET', '/user?where=' + encodeURIComponent('{"and":[]}')],
  ['GET', '/user?where=' + encodeURIComponent('[1,2]')],
  ['GET', '/user?where=' + encodeURIComponent('{"name":"Bob"}') + '&age=99'],
  ['GET', '/user?where=' + encodeURIComponent('{"id":{"in":[]}}')],
  ['GET', '/pet?where=' + encodeURIComponent('{"owner":null}')],
  ['GET', '/user?limit=2&sort=name%20DESC'],
  ['GET', '/user?limit=0'],
  ['GET', '/user?skip=1&sort=name%20ASC'],
  ['GET', '/user?sort=age'],
  ['GET', '/user?sort=' + encodeURIComponent('[{"age":"DESC"}]')],
  ['GET', '/user?sort[]=' + encodeURIComponent('age DESC')],
  ['GET', '/user?select=name'],
  ['GET', '/user?omit=email,age'],
  ['GET', '/user/1?select=name'],
  ['GET', '/pet?populate=false'],
  ['GET', '/pet?populate=owner'],
  ['GET', '/pet?populate=tags,%20owner'],
  ['GET', '/user/1/pets'],
  ['GET', '/user/1/pets?name=Rex'],
  ['GET', '/pet/1/owner'],
  ['GET', '/pet/3/owner'],
  ['GET', '/pet/1/tags'],
  ['GET', '/user/find'],
  ['GET', '/user/find/1'],
  ['GET', '/user/1.json'],
  ['GET', '/user/999'],
  ['GET', '/user/abc'],
  ['GET', '/user/1/bogus'],
  // mutations
  ['PATCH', '/user/2', { age: '7', id: 999 }],
  ['PUT', '/user/2', { name: 'Robert' }],
  ['PATCH', '/pet/1', { owner: 2 }],
  ['GET', '/user/1'],
  ['PUT', '/user/2/pets/2'],
  ['PUT', '/user/2/pets/2'],
  ['DELETE', '/user/1/pets/1'],
  ['DELETE', '/user/2/pets/1'],
  ['PUT', '/user/1/pets', [1, 2, 999]],
  ['PUT', '/pet/1/tags', [2]],
  ['GET', '/user/create?name=Sam&email=sam%40example.com&age=3'],
  ['GET', '/user/update/4?name=Samuel'],
  ['GET', '/user/1/pets/add/3'],
  ['GET', '/user/1/pets/remove/3'],
  ['GET', '/user/1/pets/replace?pets=' + encodeURIComponent('[3]')],
  ['GET', '/user/destroy/4'],
  ['POST', '/user', { name: 'Dan', email: 'dan@example.com', pets: [1] }],
  ['DELETE', '/tag/2'],
  ['GET', '/pet/1'],
  ['DELETE', '/user/5'],
  ['GET', '/pet'],
  ['DELETE', '/pet/999'],
  ['PUT', '/user/999/pets', [1]],
  ['PUT', '/user/1/pets?pets=abc'],
  // client mistakes
  ['POST', '/user', { email: 'x@example.com' }],
  ['POST', '/user', { name: 'X', email: 'not-an-email' }],
  ['POST', '/user', { name: 'X', email: 'ann@example.com' }],
  ['POST', '/user', { name: 'X', email: 'y@example.com', age: 'old' }],
  ['POST', '/user', { name: null, email: 'z@example.com' }],
  ['POST', '/user', [{ name: 'X', email: 'w@example.com' }]],
  ['GET', '/user?where=' + encodeURIComponent('{"bogus":1}')],
  ['GET', '/user?where=' + encodeURIComponent('{"name":{"bogusop":1}}')],
  ['GET', '/user?where=' + encodeURIComponent('{"pets":1}')],
  ['GET', '/user?where=' + encodeURIComponent('"abc"')],
  ['GET', '/user?limit=abc'],
  ['GET', '/user?limit=1.5'],
  ['GET', '/user?skip=-1'],
  ['GET', '/user?sort=' + encodeURIComponent('{"age":"DESC"}')],
  ['GET', '/user?sort=' + encodeURIComponent('age DESC, name ASC')],
  ['GET', '/user?sort=bogus'],
  ['GET', '/user?select=pets'],
  ['GET', '/user?populate=true'],
  ['GET', '/user?populate=%5Bpets%5D'],
  ['GET', '/user?where=' + encodeURIComponent('{bad')],
  ['DELETE', '/user'],
  ['PUT', '/user/1/pets', { pets: [1] }],
  ['PATCH', '/user/2', { age: 'x' }],
];


// Where topsail answers a client mistake with a 4xx and Sails with a 500.
const DEVIATIONS = {
  'GET /user?where=%7Bbad': { sails: 500, topsail: { status: 400, body: { code: 'E_INVALID_CRITERIA' } } },
  'PUT /user/999/pets': { sails: 500, topsail: { status: 404, body: 'Not Found' } },
  'PUT /user/1/pets?pets=abc': { sails: 500, topsail: { status: 400, body: { code: 'E_INVALID_ASSOCIATED_IDS' } } },
};

async function send(base, [method, p, body]) {
  const init = { method, headers: {} };
  if (body !== undefined) { init.headers['content-type'] = J; init.body = JSON.stringify(body); }
  const res = await fetch(base + p, init);
  const text = await res.text();
  let parsed; try { parsed = JSON.parse(text); } catch { parsed = text; }
  const shown = res.status === 400 && parsed && parsed.code ? { code: parsed.code } : strip(parsed);
  return { status: res.status, body: shown };
}

const children = [];
after(() => { for (const c of children) c.kill('SIGTERM'); });

async function compare(databaseUrl) {
  const both = await startBoth(databaseUrl);
  const { sails, zoo } = both;
  children.push(sails.child, zoo.child);
  const problems = [];
  for (const step of steps) {
    const key = step[0] + ' ' + step[1];
    const a = await send(sails.base, step);
    const b = await send(zoo.base, step);
    const dev = DEVIATIONS[key];
    if (dev) {
      if (a.status !== dev.sails) problems.push(`${key}: Sails now answers ${a.status}; update DEVIATIONS`);
      if (JSON.stringify(b) !== JSON.stringify(dev.topsail)) problems.push(`${key}: topsail ${JSON.stringify(b)}, expected ${JSON.stringify(dev.topsail)}`);
    } else if (JSON.stringify(a) !== JSON.stringify(b)) {
      problems.push(`${key}\n  sails:   ${JSON.stringify(a).slice(0, 500)}\n  topsail: ${JSON.stringify(b).slice(0, 500)}`);
    }
  }
  both.stop();
  assert.deepEqual(problems, [], `${problems.length} of ${steps.length} answers differ from Sails`);
}

test('the zoo on SQLite answers like Sails', async () => {
  await compare('sqlite::memory:');
});

test('the zoo on PostgreSQL answers like Sails', async () => {
  const db = 'topsail_parity';
  for (const sql of [`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`, `CREATE DATABASE ${db}`]) {
    const r = spawnSync('psql', [`${PG}/postgres`, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' });
    assert.equal(r.status, 0, `psql failed (is PostgreSQL reachable at ${PG}?): ${r.stderr}`);
  }
  await compare(`${PG}/${db}`);
});
