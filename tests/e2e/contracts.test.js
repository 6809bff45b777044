// The zoo's contracts, checked by tools that are not topsail's: the OpenAPI
// 3.1 document by swagger-parser, the AsyncAPI 3.0 document by the AsyncAPI
// parser, and the TypeScript module by tsc over an example that uses it,
// which then runs against the zoo with the stock sails.io.js client.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const SwaggerParser = require('@apidevtools/swagger-parser');
const { Parser } = require('@asyncapi/parser');
const { startZoo, freshDatabase, connect } = require('./helpers');

describe('the contracts', () => {
  let zoo;
  let db;
  before(async () => {
    db = freshDatabase('sqlite');
    zoo = await startZoo(db.url);
  });
  after(async () => {
    await zoo.stop();
    db.drop();
  });

  it('the OpenAPI document is valid OpenAPI 3.1 and describes every model', async () => {
    const doc = await (await fetch(zoo.url + '/openapi.json')).json();
    assert.equal(doc.openapi, '3.1.0');
    // validate() checks the document against the OpenAPI 3.1 schema and
    // resolves every $ref.
    await SwaggerParser.validate(structuredClone(doc));
    // (The validator is not lenient: a dangling reference fails it.)
    const broken = structuredClone(doc);
    broken.paths['/pet'].get.responses['200'].content['application/json'].schema.items.$ref = '#/components/schemas/Nope';
    await assert.rejects(SwaggerParser.validate(broken));
    for (const name of ['User', 'Pet', 'Tag', 'PetCreate', 'PetUpdate', 'UsageError', 'UniqueError']) {
      assert.ok(doc.components.schemas[name], name);
    }
    assert.equal(doc.paths['/pet/{id}'].get.responses['200'].headers.ETag.schema.type, 'string');
    assert.ok(doc.paths['/pet/{id}'].patch.responses['412']);
  });

  it('the AsyncAPI document is valid AsyncAPI 3.0 with every model message', async () => {
    const doc = await (await fetch(zoo.url + '/asyncapi.json')).json();
    assert.equal(doc.asyncapi, '3.0.0');
    const { document, diagnostics } = await new Parser().parse(doc);
    const errors = diagnostics.filter((d) => d.severity === 0);
    assert.deepEqual(errors.map((d) => `${d.path.join('.')}: ${d.message}`), []);
    assert.ok(document, 'the parser built the document');
    // (Nor is this one: an operation without its channel is an error.)
    const broken = structuredClone(doc);
    delete broken.operations['send.pet'].channel;
    const refused = await new Parser().validate(broken);
    assert.ok(refused.some((d) => d.severity === 0), 'a broken document is refused');
    const pet = document.channels().get('model.pet');
    assert.equal(pet.address(), 'pet');
    const verbs = pet.messages().all().map((m) => m.name()).sort();
    assert.deepEqual(verbs, ['addedTo', 'created', 'destroyed', 'removedFrom', 'updated']);
  });

  it('the TypeScript module type-checks an example, which runs against the zoo', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'topsail-ts-'));
    try {
      fs.writeFileSync(path.join(dir, 'topsail.ts'), await (await fetch(zoo.url + '/topsail.ts')).text());
      fs.copyFileSync(path.join(__dirname, '..', '..', 'examples', 'zoo', 'typed', 'example.ts'), path.join(dir, 'example.ts'));
      const tsc = path.join(__dirname, 'node_modules', '.bin', 'tsc');
      const common = ['--strict', '--target', 'es2022', '--module', 'commonjs', '--lib', 'es2022,dom'];
      const check = spawnSync(tsc, ['--noEmit', ...common, path.join(dir, 'example.ts')], { encoding: 'utf8' });
      assert.equal(check.status, 0, `tsc --noEmit:\n${check.stdout}${check.stderr}`);
      // A mistake the types must catch: a value of the wrong type.
      fs.writeFileSync(path.join(dir, 'wrong.ts'), "import { typed, type SailsSocket } from './topsail';\ndeclare const s: SailsSocket;\ntyped(s).create('pet', { name: 42 });\n");
      const wrong = spawnSync(tsc, ['--noEmit', ...common, path.join(dir, 'wrong.ts')], { encoding: 'utf8' });
      assert.notEqual(wrong.status, 0, 'tsc accepted a number for a string attribute');

      const out = path.join(dir, 'out');
      const emit = spawnSync(tsc, [...common, '--outDir', out, path.join(dir, 'example.ts')], { encoding: 'utf8' });
      assert.equal(emit.status, 0, `tsc:\n${emit.stdout}${emit.stderr}`);
      const { tour } = require(path.join(out, 'example.js'));
      const [watcher, writer] = [await connect(zoo.url), await connect(zoo.url)];
      try {
        const seen = await tour(watcher, writer);
        assert.equal(seen.created.species, 'dog');
        assert.equal(seen.renamed.name, 'Max');
        assert.equal(seen.stale, 412, 'the stale tag is refused');
        assert.deepEqual(seen.messages.map((m) => m.verb), ['created', 'updated']);
        const tag = (await fetch(`${zoo.url}/pet/${seen.created.id}`)).headers.get('etag');
        assert.equal(seen.messages[1].etag, tag, 'the updated message carries the new tag');
      } finally {
        watcher.disconnect();
        writer.disconnect();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
