// The notes page: sign up or in (over HTTP, so the browser keeps the
// session cookie; the page then reloads and its socket connects with it),
// then the notes this account may read, live over one sails.io.js socket.
// The server decides what each socket hears: another account's private
// notes never arrive here.
'use strict';

const $ = (sel) => document.querySelector(sel);
const notes = new Map();
let me = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showError(where, message) {
  const p = $(`#${where}-error`);
  p.textContent = message || '';
  p.hidden = !message;
}

async function post(url, data) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(data || {}) });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error((body && (body.message || body.details)) || res.statusText);
  return body;
}

function call(method, url, data) {
  return new Promise((resolve, reject) => {
    io.socket.request({ method, url, data }, (body, jwr) => {
      if (jwr.statusCode >= 400) reject(new Error((body && (body.details || body.message)) || String(body)));
      else resolve(body);
    });
  });
}

const ownerOf = (n) => (n.owner && typeof n.owner === 'object' ? n.owner.id : n.owner);

function render() {
  const list = [...notes.values()].sort((a, b) => b.id - a.id);
  $('#note-count').textContent = `(${list.length})`;
  const ul = $('#note-list');
  ul.replaceChildren(...(list.length ? list.map((n) => {
    const mine = ownerOf(n) === me.id;
    return el('li', { class: 'note', 'data-id': n.id, 'data-shared': n.shared },
      el('div', {}, el('span', { class: 'title' }, n.title),
        el('span', { class: n.shared ? 'badge' : 'badge private' }, n.shared ? 'shared' : 'private'),
        el('span', { class: 'meta' }, mine ? ' · mine' : ' · shared with me')),
      el('div', { class: 'body' }, n.body || ''),
      mine ? el('div', { class: 'actions' },
        el('button', { class: 'quiet', title: n.shared ? 'Make private' : 'Share', onclick: () => change(n.id, { shared: !n.shared }) }, n.shared ? 'Unshare' : 'Share'),
        el('button', { class: 'quiet', title: 'Delete', onclick: () => remove(n.id) }, 'Delete')) : el('div'));
  }) : [el('li', { class: 'empty' }, 'No notes yet.')]));
}

async function change(id, values) {
  try { notes.set(id, { ...notes.get(id), ...(await call('patch', `/note/${id}`, values)) }); render(); } catch (e) { showError('note', e.message); }
}

async function remove(id) {
  try { await call('delete', `/note/${id}`); notes.delete(id); render(); } catch (e) { showError('note', e.message); }
}

// Another socket's change, as the server lets this account see it. A page
// reloaded within the replay window is taken back as a reconnect, so
// messages can come before this page knows who it is: it reads the list
// afresh then, and they are not needed.
io.socket.on('note', (msg) => {
  if (!me) return;
  if (msg.verb === 'created') notes.set(msg.id, msg.data);
  else if (msg.verb === 'updated') notes.set(msg.id, { ...(notes.get(msg.id) || msg.previous || {}), ...msg.data });
  else if (msg.verb === 'destroyed') notes.delete(msg.id);
  render();
});

// Reading the notes subscribes this socket to them and to new ones; once
// signed in and connected (in either order), and again after a reconnect.
async function load() {
  if (!me || !io.socket.isConnected()) return;
  const list = await call('get', '/note?limit=500');
  notes.clear();
  for (const n of list) notes.set(n.id, n);
  render();
}

function online() {
  $('#status').textContent = 'online';
  $('#status').className = 'status online';
  load();
}
io.socket.on('connect', online);
// sails.io.js connects once the page's first scripts have run, but a
// script still downloading does not hold it back: when this one arrived
// after the socket's handshake, `connect` has fired already.
if (io.socket.isConnected()) online();
io.socket.on('disconnect', () => { $('#status').textContent = 'offline'; $('#status').className = 'status'; });

async function start() {
  const res = await fetch('/me');
  if (res.status === 401) {
    $('#auth').hidden = false;
    return;
  }
  me = await res.json();
  $('#me').textContent = `${me.name} <${me.email}>`;
  $('#who').hidden = false;
  $('#notes').hidden = false;
  load();
}

function submit(form, run) {
  $(form).addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(e.target));
    try { await run(data, e.target); } catch (err) { showError(form === '#note-form' ? 'note' : 'auth', err.message); }
  });
}

submit('#signup-form', async (data) => { await post('/signup', data); location.reload(); });
submit('#signin-form', async (data) => { await post('/signin', data); location.reload(); });
submit('#note-form', async (data, form) => {
  const note = await call('post', '/note', { title: data.title, body: data.body, shared: data.shared === 'on' });
  notes.set(note.id, note);
  render();
  form.reset();
  showError('note', '');
});
$('#signout').addEventListener('click', async () => { await post('/signout'); location.reload(); });

start();
