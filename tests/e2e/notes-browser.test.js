// The notes page in a real browser (Debian's Chromium, driven by
// playwright-core): two browser contexts (two cookie jars) signed up as two
// accounts. Each sees the other's shared notes appear live and never the
// private ones, and neither console shows an error. Screenshots go to
// tests/artifacts/.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { freshDatabase, startNotes, sleep, launchChromium } = require('./helpers');

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');

describe('the notes page, two accounts', () => {
  let db, app, browser, ann, bo;
  const errors = [];
  before(async () => {
    db = freshDatabase('sqlite');
    app = await startNotes(db.url);
    browser = await launchChromium();
    const signUp = async (name, email) => {
      const page = await (await browser.newContext({ viewport: { width: 1100, height: 800 } })).newPage();
      // A signed-out page's `GET /me` is a 401 by contract: the browser logs it.
      page.on('console', (m) => { if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(`${name}: ${m.text()}`); });
      page.on('pageerror', (e) => errors.push(`${name}: ${e}`));
      // What the page did on the wire, told if its socket never connects.
      const wire = [];
      const at = () => `${Date.now() % 100000} ms`;
      page.on('requestfailed', (r) => wire.push(`${at()} failed ${r.url()} ${r.failure()?.errorText}`));
      page.on('websocket', (ws) => {
        wire.push(`${at()} websocket ${ws.url()}`);
        ws.on('close', () => wire.push(`${at()} websocket closed`));
      });
      page.on('response', (r) => r.url().includes('/socket.io/') && wire.push(`${at()} ${r.status()} ${r.url()}`));
      await page.goto(app.url + '/');
      await page.fill('#signup-form input[name=name]', name);
      await page.fill('#signup-form input[name=email]', email);
      await page.fill('#signup-form input[name=password]', `${name}-password`);
      await page.click('#signup-form button');
      // The page reloads signed in; its socket connects with the cookie.
      await page.waitForSelector('#who:not([hidden])');
      await page.waitForSelector('.status.online').catch((e) => {
        throw new Error(`${name}'s socket never connected: ${e.message}\n${wire.join('\n')}\nserver log:\n${app.log.join('')}`);
      });
      await page.waitForSelector('#note-list li');
      return page;
    };
    ann = await signUp('Ann', 'ann@example.com');
    bo = await signUp('Bo', 'bo@example.com');
  });
  after(async () => {
    await browser?.close();
    await app?.stop();
    db?.drop();
  });

  const note = (page, title) => page.locator('#note-list li[data-id]', { hasText: title });
  const add = async (page, title, shared) => {
    await page.fill('#note-form input[name=title]', title);
    if (shared) await page.check('#note-form input[name=shared]');
    await page.click('#note-form button');
    await note(page, title).waitFor();
  };

  it('shows each account the other\'s shared notes live, never the private ones', async () => {
    assert.match(await ann.locator('#me').innerText(), /Ann/);
    await add(ann, 'Ann private', false);
    await add(ann, 'Ann shared', true);
    await add(bo, 'Bo private', false);
    await add(bo, 'Bo shared', true);
    await note(bo, 'Ann shared').waitFor();
    await note(ann, 'Bo shared').waitFor();
    assert.match(await note(bo, 'Ann shared').innerText(), /shared with me/);
    // The private ones were created before the shared ones: had they been
    // sent, they would be on the page by now.
    await sleep(300);
    assert.equal(await note(bo, 'Ann private').count(), 0);
    assert.equal(await note(ann, 'Bo private').count(), 0);
  });

  it('unsharing takes a note away from the other account; sharing brings it', async () => {
    await note(ann, 'Ann private').locator('button', { hasText: 'Share' }).click();
    await note(bo, 'Ann private').waitFor();
    await note(ann, 'Ann shared').locator('button', { hasText: 'Unshare' }).click();
    await note(ann, 'Ann shared').locator('.badge.private').waitFor();
    // Bo keeps what he saw (he is not told of a note he may no longer
    // read), but hears nothing more of it, and a reload drops it.
    await bo.reload();
    await bo.waitForSelector('.status.online');
    await note(bo, 'Ann private').waitFor();
    assert.equal(await note(bo, 'Ann shared').count(), 0);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await ann.screenshot({ path: path.join(ARTIFACTS, 'notes-ann.png') });
    await bo.screenshot({ path: path.join(ARTIFACTS, 'notes-bo.png') });
  });

  it('goes online when its script arrives after the socket connected', async () => {
    // sails.io.js connects as soon as the page's first scripts have run; a
    // page script that comes later finds `connect` already fired.
    await ann.context().route('**/app.js', async (route) => { await sleep(1500); await route.continue(); });
    const late = await ann.context().newPage();
    late.on('pageerror', (e) => errors.push(`late: ${e}`));
    const connected = late.waitForEvent('websocket');
    await late.goto(app.url + '/');
    await connected;
    await late.waitForSelector('.status.online', { timeout: 5000 });
    await note(late, 'Ann private').waitFor({ timeout: 5000 });
    await ann.context().unroute('**/app.js');
    await late.close();
  });

  it('a deletion reaches the other account; the consoles show no error', async () => {
    await note(ann, 'Ann private').locator('button[title=Delete]').click();
    await bo.locator('#note-list li[data-id]', { hasText: 'Ann private' }).waitFor({ state: 'detached' });
    assert.deepEqual(errors, []);
  });
});
