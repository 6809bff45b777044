// The demo page in a real browser (Debian's Chromium, driven by
// playwright-core): two windows, a change in one appears in the other
// without reloading, and neither console shows an error. Screenshots go to
// tests/artifacts/.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { freshDatabase, startZoo, launchChromium, sleep } = require('./helpers');

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');

describe('the demo page', () => {
  let db, zoo, browser, one, two;
  const errors = [];
  before(async () => {
    db = freshDatabase('sqlite');
    zoo = await startZoo(db.url);
    browser = await launchChromium();
    const open = async (name) => {
      const page = await (await browser.newContext({ viewport: { width: 1400, height: 820 } })).newPage();
      page.on('console', (m) => { if (m.type() === 'error') errors.push(`${name}: ${m.text()}`); });
      page.on('pageerror', (e) => errors.push(`${name}: ${e}`));
      await page.goto(zoo.url + '/');
      await page.waitForSelector('.status.online');
      return page;
    };
    one = await open('one');
    two = await open('two');
  });
  after(async () => {
    await browser?.close();
    await zoo?.stop();
    db?.drop();
  });

  const pet = (page, name) => page.locator('#pet-list li[data-id]', { hasText: name });

  it('shows a change made in one window in the other, without reloading', async () => {
    await one.fill('#user-form input[name=name]', 'Ann');
    await one.fill('#user-form input[name=email]', 'ann@example.com');
    await one.click('#user-form button');
    await one.fill('#tag-form input[name=label]', 'good boy');
    await one.click('#tag-form button');
    await two.waitForSelector('#user-list li[data-id]:has-text("Ann")');
    await two.waitForSelector('#tag-list li[data-id]:has-text("good boy")');

    await one.fill('#pet-form input[name=name]', 'Rex');
    await one.fill('#pet-form input[name=species]', 'dog');
    await one.selectOption('#pet-form select[name=owner]', { label: 'Ann' });
    await one.click('#pet-form button');
    await pet(two, 'Rex').waitFor();
    assert.match(await pet(two, 'Rex').innerText(), /owned by Ann/);
    assert.match(await two.locator('#user-list li', { hasText: 'Ann' }).innerText(), /Owns Rex/);
  });

  it('edits and tags in either window', async () => {
    await pet(two, 'Rex').locator('input[name=rename]').fill('Max');
    await pet(two, 'Rex').locator('form', { hasText: 'Rename' }).locator('button').click();
    await pet(one, 'Max').waitFor();
    await pet(one, 'Max').locator('select[name=tag]').selectOption({ label: 'good boy' });
    await pet(one, 'Max').locator('button', { hasText: 'Tag' }).click();
    await pet(two, 'Max').locator('.chip', { hasText: 'good boy' }).waitFor();
    await two.waitForSelector('#tag-list li:has-text("1 pet")');
  });

  it('goes live when its script arrives after the socket connected', async () => {
    // sails.io.js connects as soon as the page's first scripts have run; a
    // page script that comes later finds `connect` already fired.
    const context = await browser.newContext();
    await context.route('**/app.js', async (route) => { await sleep(1500); await route.continue(); });
    const late = await context.newPage();
    late.on('pageerror', (e) => errors.push(`late: ${e}`));
    const connected = late.waitForEvent('websocket');
    await late.goto(zoo.url + '/');
    await connected;
    await late.waitForSelector('.status.online', { timeout: 5000 });
    await late.locator('#pet-list li[data-id]').first().waitFor({ timeout: 5000 });
    await context.close();
  });

  it('deletes in one window and the other follows; both logged the events', async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await one.screenshot({ path: path.join(ARTIFACTS, 'demo-before-delete.png') });
    await pet(two, 'Max').locator('button[title=Delete]').click();
    await one.waitForSelector('#pet-list li.empty');
    assert.match(await one.locator('#user-list li', { hasText: 'Ann' }).innerText(), /No pets/);
    const events = async (page) => (await page.locator('#event-list li .what').allInnerTexts());
    assert.ok((await events(one)).some((e) => e.startsWith('pet destroyed')), 'window one saw the destroy');
    assert.ok((await events(two)).some((e) => e.startsWith('pet created')), 'window two saw the create');
    await two.screenshot({ path: path.join(ARTIFACTS, 'demo.png') });
    assert.deepEqual(errors, [], 'no console errors');
  });
});
