// The zoo demo page: three live lists over one sails.io.js socket.
//
// Relationships are kept one way (a pet's owner and tags); counts are
// derived. This page's own changes come back as responses (a socket never
// receives the messages its requests cause); everyone else's come as events.
'use strict';

const socket = io.socket;
const state = { user: new Map(), pet: new Map(), tag: new Map() };
const $ = (sel) => document.querySelector(sel);

const idOf = (v) => (v && typeof v === 'object' ? v.id : v);

function keep(model, record) {
  const r = { ...record };
  if (model === 'pet') {
    r.owner = idOf(r.owner) ?? null;
    r.tags = Array.isArray(r.tags) ? r.tags.map(idOf) : (state.pet.get(r.id)?.tags || []);
  }
  delete r.pets;
  state[model].set(r.id, { ...(state[model].get(r.id) || {}), ...r });
}

function call(method, url, data) {
  return new Promise((resolve, reject) => {
    socket.request({ method, url, data }, (body, jwr) => {
      if (jwr.statusCode >= 400) reject(new Error(body && body.details ? body.details : (body && body.message) || String(body)));
      else resolve(body);
    });
  });
}

function showError(model, error) {
  const el = $(`#${model}-error`);
  el.textContent = error ? error.message : '';
  el.hidden = !error;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const byName = (a, b) => String(a.name || a.label).localeCompare(String(b.name || b.label));

function render() {
  const users = [...state.user.values()].sort(byName);
  const pets = [...state.pet.values()].sort(byName);
  const tags = [...state.tag.values()].sort(byName);
  $('#user-count').textContent = `(${users.length})`;
  $('#pet-count').textContent = `(${pets.length})`;
  $('#tag-count').textContent = `(${tags.length})`;

  const ownerSelect = $('#pet-form select[name=owner]');
  const chosen = ownerSelect.value;
  ownerSelect.replaceChildren(el('option', { value: '' }, 'No owner'), ...users.map((u) => el('option', { value: u.id }, u.name)));
  ownerSelect.value = chosen;

  $('#user-list').replaceChildren(...(users.length ? users.map((u) => {
    const owned = pets.filter((p) => p.owner === u.id).map((p) => p.name);
    return el('li', { class: 'item', 'data-id': u.id },
      el('div', { class: 'row' },
        el('span', { class: 'title' }, u.name),
        el('button', { class: 'quiet', title: 'Delete', onclick: () => act('user', () => call('delete', `/user/${u.id}`), () => state.user.delete(u.id)) }, 'Delete')),
      el('div', { class: 'meta' }, `${u.email}${u.age ? ` · ${u.age}` : ''}`),
      el('div', { class: 'meta' }, owned.length ? `Owns ${owned.join(', ')}` : 'No pets'));
  }) : [el('li', { class: 'empty' }, 'No users yet')]));

  $('#pet-list').replaceChildren(...(pets.length ? pets.map((p) => {
    const owner = state.user.get(p.owner);
    const tagSelect = el('select', { name: 'tag', 'aria-label': `Tag ${p.name}` }, el('option', { value: '' }, 'Add tag…'),
      ...tags.filter((t) => !p.tags.includes(t.id)).map((t) => el('option', { value: t.id }, t.label)));
    const rename = el('input', { name: 'rename', value: p.name, 'aria-label': `Rename ${p.name}` });
    return el('li', { class: 'item', 'data-id': p.id },
      el('div', { class: 'row' },
        el('span', { class: 'title' }, p.name),
        el('button', { class: 'quiet', title: 'Delete', onclick: () => act('pet', () => call('delete', `/pet/${p.id}`), () => state.pet.delete(p.id)) }, 'Delete')),
      el('div', { class: 'meta' }, `${p.species || 'unknown species'} · ${owner ? `owned by ${owner.name}` : 'no owner'}`),
      el('div', { class: 'chips' }, ...p.tags.map((id) => state.tag.get(id)).filter(Boolean).map((t) =>
        el('span', { class: 'chip' }, t.label,
          el('button', { title: `Remove ${t.label}`, onclick: () => act('pet', () => call('delete', `/pet/${p.id}/tags/${t.id}`), (r) => keep('pet', r)) }, '×')))),
      el('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); if (rename.value.trim()) act('pet', () => call('patch', `/pet/${p.id}`, { name: rename.value.trim() }), (r) => keep('pet', r)); } },
        rename, el('button', {}, 'Rename')),
      el('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); if (tagSelect.value) act('pet', () => call('put', `/pet/${p.id}/tags/${tagSelect.value}`), (r) => keep('pet', r)); } },
        tagSelect, el('button', {}, 'Tag')));
  }) : [el('li', { class: 'empty' }, 'No pets yet')]));

  $('#tag-list').replaceChildren(...(tags.length ? tags.map((t) => {
    const tagged = pets.filter((p) => p.tags.includes(t.id)).length;
    return el('li', { class: 'item', 'data-id': t.id },
      el('div', { class: 'row' },
        el('span', { class: 'title' }, t.label),
        el('button', { class: 'quiet', title: 'Delete', onclick: () => act('tag', () => call('delete', `/tag/${t.id}`), () => { state.tag.delete(t.id); for (const p of state.pet.values()) p.tags = p.tags.filter((x) => x !== t.id); }) }, 'Delete')),
      el('div', { class: 'meta' }, `${tagged} ${tagged === 1 ? 'pet' : 'pets'}`));
  }) : [el('li', { class: 'empty' }, 'No tags yet')]));
}

async function act(model, request, apply) {
  try {
    const result = await request();
    apply(result);
    showError(model, null);
    render();
  } catch (e) {
    showError(model, e);
  }
}

function form(id, model, toValues) {
  const f = $(id);
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    const values = toValues(new FormData(f));
    act(model, () => call('post', `/${model}`, values), (r) => { keep(model, r); f.reset(); });
  });
}

form('#user-form', 'user', (d) => ({ name: d.get('name'), email: d.get('email'), ...(d.get('age') ? { age: Number(d.get('age')) } : {}) }));
form('#pet-form', 'pet', (d) => ({ name: d.get('name'), species: d.get('species'), ...(d.get('owner') ? { owner: Number(d.get('owner')) } : {}) }));
form('#tag-form', 'tag', (d) => ({ label: d.get('label') }));

// Events from other sockets.
function onEvent(model, msg) {
  logEvent(model, msg);
  const pet = (id) => state.pet.get(id);
  switch (msg.verb) {
    case 'created': keep(model, msg.data); break;
    case 'updated': if (state[model].has(msg.id)) keep(model, { ...msg.data, id: msg.id }); break;
    case 'destroyed':
      state[model].delete(msg.id);
      if (model === 'user') for (const p of state.pet.values()) { if (p.owner === msg.id) p.owner = null; }
      if (model === 'tag') for (const p of state.pet.values()) p.tags = p.tags.filter((t) => t !== msg.id);
      break;
    case 'addedTo':
      if (model === 'pet' && pet(msg.id) && !pet(msg.id).tags.includes(msg.addedId)) pet(msg.id).tags.push(msg.addedId);
      if (model === 'tag' && pet(msg.addedId) && !pet(msg.addedId).tags.includes(msg.id)) pet(msg.addedId).tags.push(msg.id);
      if (model === 'user' && pet(msg.addedId)) pet(msg.addedId).owner = msg.id;
      break;
    case 'removedFrom':
      if (model === 'pet' && pet(msg.id)) pet(msg.id).tags = pet(msg.id).tags.filter((t) => t !== msg.removedId);
      if (model === 'tag' && pet(msg.removedId)) pet(msg.removedId).tags = pet(msg.removedId).tags.filter((t) => t !== msg.id);
      if (model === 'user' && pet(msg.removedId) && pet(msg.removedId).owner === msg.id) pet(msg.removedId).owner = null;
      break;
    default: break;
  }
  render();
}

function logEvent(model, msg) {
  const list = $('#event-list');
  $('#no-events')?.remove();
  const { verb, id } = msg;
  const detail = { ...msg };
  delete detail.verb;
  delete detail.id;
  list.prepend(el('li', {},
    el('span', { class: `what verb-${verb}` }, `${model} ${verb} #${id}`), ' ',
    el('span', { class: 'meta' }, new Date().toLocaleTimeString()),
    el('code', {}, JSON.stringify(detail))));
  while (list.children.length > 50) list.lastChild.remove();
}

for (const model of ['user', 'pet', 'tag']) socket.on(model, (msg) => onEvent(model, msg));

async function load() {
  // Reading subscribes this socket to the records and watches each model.
  const [users, pets, tags] = await Promise.all(['user', 'pet', 'tag'].map((m) => call('get', `/${m}?limit=200`)));
  for (const m of ['user', 'pet', 'tag']) state[m].clear();
  users.forEach((u) => keep('user', u));
  pets.forEach((p) => keep('pet', { ...p, tags: p.tags || [] }));
  tags.forEach((t) => keep('tag', t));
  render();
}

function online() {
  const s = $('#status');
  s.textContent = 'live';
  s.className = 'status online';
  load().catch((e) => showError('user', e));
}
socket.on('connect', online);
// sails.io.js connects once the page's first scripts have run, but a
// script still downloading does not hold it back: when this one arrived
// after the socket's handshake, `connect` has fired already.
if (socket.isConnected()) online();
socket.on('disconnect', () => {
  const s = $('#status');
  s.textContent = 'offline';
  s.className = 'status offline';
});
render();
