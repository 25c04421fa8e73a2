// The UCS web console (issue 14). Hand-written, no framework and no build
// step: the server compiles this file in and serves it under a policy that
// allows no inline script, so every handler is attached here.
//
// It talks to the server only through the gateway: POST api/login,
// POST api/call {method, params} (the same API methods `ucs` calls, their
// middleware and permission checks included) and GET api/events, the
// event stream as Server-Sent Events. The registration numbers are polled
// every 2 s (they are counters, not events); agents and the audit trail
// arrive on the event stream, never polled.
'use strict';

const STATUS_NAMES = ['AGENT_OFFLINE', 'AGENT_READY', 'AGENT_AUX', 'AGENT_BUSY'];
// Every event the server sends; EventSource delivers a named event only to
// a listener of that name.
const EVENT_NAMES = [
  'agent.status', 'shared.data',
  'audit.status_veto', 'audit.status_rewrite', 'audit.shared_rewrite',
  'audit.plugin_load', 'audit.plugin_reload', 'audit.plugin_unload',
  'audit.plugin_crash', 'audit.plugin_restart',
];
const POLL_MS = 2000;
// How many points each latency chart keeps, and how many rows the audit
// and events tables show.
const CHART_POINTS = 30;
const MAX_ROWS = 500;

const console_ = {
  sid: null,
  user: null,
  source: null,
  pollTimer: null,
  // registration key -> {calls, total_ns, points: [mean ns per interval]}
  history: new Map(),
  audit: [],
  auditPlugins: new Set(),
  events: [],
  agents: new Map(),
  // agent id -> the hook's last rewrite {asked, outcome}
  rewrites: new Map(),
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(id, text, kind) {
  const node = $(id);
  node.textContent = text;
  node.className = 'message ' + (kind || '');
}

// An API error as the CLI prints it: `CODE: message`.
function describe(error) {
  return error.code ? `${error.code}: ${error.message}` : String(error.message || error);
}

// ---- the gateway ----

async function post(path, body, sid) {
  const headers = {'Content-Type': 'application/json'};
  if (sid) headers.Authorization = 'Bearer ' + sid;
  const answer = await fetch(path, {method: 'POST', headers, body: JSON.stringify(body)});
  const text = await answer.text();
  let value;
  try {
    value = JSON.parse(text);
  } catch (_) {
    value = {code: 'INTERNAL', message: text || answer.statusText};
  }
  if (!answer.ok) {
    const error = new Error(value.message);
    error.code = value.code;
    error.status = answer.status;
    throw error;
  }
  return value;
}

async function call(method, params) {
  try {
    return await post('api/call', {method, params: params || []}, console_.sid);
  } catch (error) {
    if (error.status === 401) loggedOut('Your session ended; log in again.');
    throw error;
  }
}

// ---- session ----

function saveSession(sid, user) {
  console_.sid = sid;
  console_.user = user;
  sessionStorage.setItem('ucs.sid', sid);
  sessionStorage.setItem('ucs.user', JSON.stringify(user));
}

function loggedOut(why) {
  stopEverything();
  console_.sid = null;
  console_.user = null;
  sessionStorage.removeItem('ucs.sid');
  sessionStorage.removeItem('ucs.user');
  $('nav').hidden = true;
  $('who').hidden = true;
  $('login-error').textContent = why || '';
  show('login');
}

function stopEverything() {
  if (console_.source) console_.source.close();
  console_.source = null;
  if (console_.pollTimer) clearInterval(console_.pollTimer);
  console_.pollTimer = null;
  setLive(false);
}

async function login(event) {
  event.preventDefault();
  const button = $('login-button');
  button.disabled = true;
  $('login-error').textContent = '';
  try {
    const answer = await post('api/login', {username: $('username').value, password: $('password').value});
    $('password').value = '';
    saveSession(answer.sid, {id: answer.user_id, username: answer.username, superuser: answer.superuser});
    start();
  } catch (error) {
    $('login-error').textContent = describe(error);
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try {
    await post('api/logout', {}, console_.sid);
  } catch (_) {
    // Already closed: logged out either way.
  }
  loggedOut('Logged out.');
}

// ---- pages ----

const PAGES = ['login', 'plugins', 'audit', 'agents', 'events'];

function show(page) {
  for (const name of PAGES) {
    $(name + '-page').hidden = name !== page;
    const link = $('nav-' + name);
    if (link) link.classList.toggle('current', name === page);
  }
  document.body.dataset.page = page;
}

function route() {
  if (!console_.sid) {
    show('login');
    return;
  }
  let page = location.hash.replace('#', '');
  if (!PAGES.includes(page) || page === 'login') {
    page = console_.user.superuser ? 'plugins' : 'agents';
  }
  show(page);
  if (page === 'plugins') refreshPlugins();
}

function start() {
  $('nav').hidden = false;
  $('who').hidden = false;
  $('whoami').textContent = console_.user.username + (console_.user.superuser ? ' (superuser)' : '');
  route();
  openEvents();
  loadAgents();
  loadAudit();
  refreshPlugins();
  console_.pollTimer = setInterval(() => {
    if (document.body.dataset.page === 'plugins') refreshPlugins();
  }, POLL_MS);
}

// ---- plugins ----

function nanos(ns) {
  if (ns === null || ns === undefined) return '';
  if (ns < 1e3) return ns + ' ns';
  if (ns < 1e6) return (ns / 1e3).toFixed(1) + ' µs';
  if (ns < 1e9) return (ns / 1e6).toFixed(1) + ' ms';
  return (ns / 1e9).toFixed(2) + ' s';
}

// The row of `key` in `tbody`, created by `make` the first time, so the
// 2 s refresh updates cells in place and never replaces a button under
// the operator's pointer.
function keyedRow(tbody, key, make) {
  for (const row of tbody.rows) {
    if (row.dataset.key === key) return row;
  }
  const row = make();
  row.dataset.key = key;
  tbody.append(row);
  return row;
}

function setCells(row, values) {
  values.forEach((value, index) => {
    const cell = row.cells[index];
    if (cell.textContent !== String(value)) cell.textContent = value;
  });
}

function dropRowsExcept(tbody, keys) {
  for (const row of [...tbody.rows]) {
    if (!keys.has(row.dataset.key)) row.remove();
  }
}

async function pluginAction(method, name, verb) {
  say('plugins-message', `${verb} ${name}…`, 'busy');
  for (const button of document.querySelectorAll('#plugins-table button')) button.disabled = true;
  try {
    const info = await call(method, [name]);
    const error = info.error ? ` (${info.error.split('\n')[0]})` : '';
    say('plugins-message', `${name}: ${method} answered ${info.state}${error}`, 'ok');
  } catch (error) {
    say('plugins-message', `${name}: ${method} failed: ${describe(error)}`, 'error');
  }
  await refreshPlugins();
}

function pluginRow(name) {
  const reload = el('button', {type: 'button', id: 'reload-' + name, class: 'reload'});
  reload.addEventListener('click', () => {
    pluginAction('plugins.load', name, reload.textContent === 'Reload' ? 'Reloading' : 'Loading');
  });
  const unload = el('button', {type: 'button', id: 'unload-' + name, class: 'unload'}, 'Unload');
  unload.addEventListener('click', () => pluginAction('plugins.unload', name, 'Unloading'));
  const row = el('tr', {id: 'plugin-' + name, class: 'plugin'});
  for (let index = 0; index < 7; index++) row.append(el('td'));
  row.append(el('td', {class: 'actions'}, reload, ' ', unload));
  return row;
}

function errorRow(name) {
  return el('tr', {class: 'plugin-error'},
    el('td', {colspan: '8'}, el('pre', {id: 'error-' + name, class: 'traceback'})));
}

function renderPlugins(plugins) {
  const tbody = $('plugins-table').tBodies[0];
  const keys = new Set();
  for (const plugin of plugins) {
    keys.add('p:' + plugin.name);
    keys.add('e:' + plugin.name);
    const row = keyedRow(tbody, 'p:' + plugin.name, () => pluginRow(plugin.name));
    setCells(row, [
      plugin.name, plugin.state, plugin.isolation, plugin.class_name, plugin.path,
      plugin.host_pid === null ? '' : plugin.host_pid, plugin.restarts,
    ]);
    row.cells[1].className = 'state state-' + plugin.state;
    const running = plugin.state === 'running';
    $('reload-' + plugin.name).textContent = running ? 'Reload' : 'Load';
    $('unload-' + plugin.name).hidden = !running;
    for (const button of row.querySelectorAll('button')) button.disabled = false;
    const errors = keyedRow(tbody, 'e:' + plugin.name, () => errorRow(plugin.name));
    // Keep each error row right under its plugin.
    if (row.nextSibling !== errors) row.after(errors);
    errors.hidden = !plugin.error;
    const pre = $('error-' + plugin.name);
    if (pre.textContent !== plugin.error) pre.textContent = plugin.error;
  }
  dropRowsExcept(tbody, keys);
  renderRegistrations(plugins);
  noteAuditPlugins(plugins.map((plugin) => plugin.name));
}

function renderRegistrations(plugins) {
  const tbody = $('registrations-table').tBodies[0];
  const keys = new Set();
  for (const plugin of plugins) {
    for (const reg of plugin.registrations || []) {
      const key = [plugin.name, reg.kind, reg.target, reg.callable].join('|');
      keys.add(key);
      const row = keyedRow(tbody, key, () => {
        const tr = el('tr', {class: 'registration'});
        for (let index = 0; index < 12; index++) tr.append(el('td'));
        tr.append(el('td', {}, el('canvas', {width: '120', height: '32', class: 'sparkline'})));
        return tr;
      });
      setCells(row, [
        plugin.name, reg.kind, reg.target, reg.callable, reg.calls, reg.errors, reg.overruns,
        reg.skipped, reg.refused, reg.breaker_open ? 'open' : 'closed', nanos(reg.p50_ns), nanos(reg.p99_ns),
      ]);
      row.cells[9].className = reg.breaker_open ? 'breaker-open' : '';
      const seen = console_.history.get(key);
      const history = seen || {calls: reg.calls, total_ns: reg.total_ns, points: []};
      if (seen) {
        const calls = reg.calls - seen.calls;
        // After a reload the numbers start again from zero.
        const mean = calls > 0 ? (reg.total_ns - seen.total_ns) / calls : 0;
        history.points.push(Math.max(mean, 0));
        if (history.points.length > CHART_POINTS) history.points.shift();
        history.calls = reg.calls;
        history.total_ns = reg.total_ns;
      }
      console_.history.set(key, history);
      drawSparkline(row.querySelector('canvas'), history.points, reg.p99_ns);
    }
  }
  dropRowsExcept(tbody, keys);
  $('registrations-updated').textContent = 'updated ' + clock(Date.now());
}

// The mean latency of each 2 s interval as a line, with the p99 so far as
// a dashed reference; intervals without calls sit at the bottom.
function drawSparkline(canvas, points, p99) {
  const context = canvas.getContext('2d');
  const {width, height} = canvas;
  context.clearRect(0, 0, width, height);
  const top = Math.max(p99 || 0, ...points, 1);
  const y = (value) => height - 2 - (value / top) * (height - 4);
  if (p99) {
    context.strokeStyle = '#c77';
    context.setLineDash([3, 3]);
    context.beginPath();
    context.moveTo(0, y(p99));
    context.lineTo(width, y(p99));
    context.stroke();
    context.setLineDash([]);
  }
  if (points.length === 0) return;
  const step = width / (CHART_POINTS - 1);
  const left = width - step * (points.length - 1);
  context.strokeStyle = '#2a6fdb';
  context.lineWidth = 1.5;
  context.beginPath();
  points.forEach((value, index) => {
    const x = left + index * step;
    if (index === 0) context.moveTo(x, y(value));
    else context.lineTo(x, y(value));
  });
  context.stroke();
  canvas.title = 'last interval: ' + nanos(Math.round(points[points.length - 1]));
}

let refreshing = false;

async function refreshPlugins() {
  if (!console_.sid || refreshing) return;
  refreshing = true;
  try {
    renderPlugins(await call('plugins.list'));
    $('plugins-table').classList.remove('refused');
  } catch (error) {
    $('plugins-table').classList.add('refused');
    say('plugins-message', describe(error), 'error');
  } finally {
    refreshing = false;
  }
}

// ---- audit ----

function noteAuditPlugins(names) {
  const select = $('audit-plugin');
  for (const name of names) {
    if (!name || console_.auditPlugins.has(name)) continue;
    console_.auditPlugins.add(name);
    select.append(el('option', {value: name}, name));
  }
}

// A time of day, 24-hour, in the browser's zone.
function clock(ms) {
  return new Date(ms).toLocaleTimeString([], {hour12: false});
}

function short(value) {
  if (value === null || value === undefined) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function auditRow(record) {
  return el('tr', {class: 'audit ' + record.kind.replace('.', '-'), 'data-plugin': record.plugin},
    el('td', {class: 'time'}, clock(record.time_ms)),
    el('td', {}, record.kind.replace('audit.', '')),
    el('td', {}, record.plugin),
    el('td', {}, record.user_id === null ? '' : record.user_id),
    el('td', {}, short(record.asked)),
    el('td', {}, short(record.outcome)));
}

function addAudit(record) {
  noteAuditPlugins([record.plugin]);
  const row = auditRow(record);
  const filter = $('audit-plugin').value;
  row.hidden = filter !== '' && filter !== record.plugin;
  const tbody = $('audit-table').tBodies[0];
  tbody.prepend(row);
  while (tbody.rows.length > MAX_ROWS) tbody.lastChild.remove();
}

function filterAudit() {
  const filter = $('audit-plugin').value;
  for (const row of $('audit-table').tBodies[0].rows) {
    row.hidden = filter !== '' && filter !== row.dataset.plugin;
  }
}

async function loadAudit() {
  if (!console_.user.superuser) {
    say('audit-message', 'The audit trail is for superusers only (audit.list).', 'error');
    return;
  }
  try {
    const records = await call('audit.list');
    $('audit-table').tBodies[0].replaceChildren();
    for (const record of records) addAudit(record);
    say('audit-message', 'Live: new records appear at the top as they happen.', '');
  } catch (error) {
    say('audit-message', describe(error), 'error');
  }
}

// ---- agents ----

function statusName(code) {
  return STATUS_NAMES[code] || String(code);
}

function agentRow(agent) {
  const select = el('select', {id: 'set-status-' + agent.id});
  STATUS_NAMES.forEach((name, code) => select.append(el('option', {value: String(code)}, name)));
  const reason = el('input', {id: 'set-reason-' + agent.id, placeholder: 'reason', size: '12'});
  const button = el('button', {type: 'button', id: 'set-' + agent.id}, 'Set');
  button.addEventListener('click', async () => {
    say('agents-message', '', '');
    const asked = Number(select.value);
    try {
      const after = await call('agents.setStatus', [agent.id, asked, reason.value]);
      const rewritten = after.status !== asked || after.reason !== reason.value;
      say('agents-message', `${agent.username}: asked ${statusName(asked)}, now ${statusName(after.status)}` +
        (rewritten ? ` "${after.reason}" (rewritten by the status hook)` : ''), 'ok');
    } catch (error) {
      say('agents-message', `${agent.username}: ${describe(error)}`, 'error');
    }
  });
  const row = el('tr', {id: 'agent-' + agent.id, class: 'agent'});
  for (let index = 0; index < 6; index++) row.append(el('td'));
  row.append(el('td', {class: 'actions'}, select, ' ', reason, ' ', button));
  return row;
}

function renderAgent(agent, changed) {
  console_.agents.set(agent.id, agent);
  const tbody = $('agents-table').tBodies[0];
  const row = keyedRow(tbody, String(agent.id), () => agentRow(agent));
  const rewrite = console_.rewrites.get(agent.id);
  const rewriteText = rewrite
    ? `${statusName(rewrite.asked.status)} "${rewrite.asked.reason}" → ${statusName(rewrite.outcome.status)} "${rewrite.outcome.reason}"`
    : '';
  setCells(row, [agent.id, agent.username, agent.displayname, statusName(agent.status), agent.reason, rewriteText]);
  row.cells[3].className = 'status status-' + statusName(agent.status);
  row.dataset.status = statusName(agent.status);
  if (changed) {
    row.classList.remove('flash');
    // Restart the highlight of a row that just changed.
    void row.offsetWidth;
    row.classList.add('flash');
  }
}

async function loadAgents() {
  try {
    const agents = await call('agents.list');
    for (const agent of agents) renderAgent(agent, false);
    say('agents-message', '', '');
  } catch (error) {
    say('agents-message', describe(error), 'error');
  }
}

// ---- the event stream ----

function setLive(live) {
  const node = $('live');
  node.textContent = live ? 'live' : 'offline';
  node.className = live ? 'live' : 'offline';
}

function addEventRow(name, seq, data) {
  console_.events.push({name, seq, data});
  const tbody = $('events-table').tBodies[0];
  const row = el('tr', {class: 'event', 'data-name': name}, el('td', {}, seq), el('td', {}, name),
    el('td', {}, el('code', {}, data)));
  row.hidden = !eventShown(name);
  tbody.prepend(row);
  while (tbody.rows.length > MAX_ROWS) tbody.lastChild.remove();
}

function eventShown(name) {
  const wanted = $('events-filter').value.split(',').map((part) => part.trim()).filter(Boolean);
  return wanted.length === 0 || wanted.includes(name);
}

function filterEvents() {
  for (const row of $('events-table').tBodies[0].rows) row.hidden = !eventShown(row.dataset.name);
}

function onEvent(name, message) {
  let data;
  try {
    data = JSON.parse(message.data);
  } catch (_) {
    return;
  }
  addEventRow(name, message.lastEventId, message.data);
  if (name === 'agent.status') {
    renderAgent(data.agent, true);
  } else if (name === 'audit.status_rewrite') {
    const id = data.asked && data.asked.agent_id;
    console_.rewrites.set(id, {asked: data.asked, outcome: data.outcome});
    const agent = console_.agents.get(id);
    if (agent) renderAgent(agent, false);
  }
  if (name.startsWith('audit.')) {
    addAudit(data);
    // A lifecycle step changes what plugins.list says: show it now.
    if (name !== 'audit.status_veto' && name !== 'audit.status_rewrite' && name !== 'audit.shared_rewrite') {
      refreshPlugins();
    }
  }
}

function openEvents() {
  // Every event this session may see: audit ones too for a superuser, none
  // of them for anyone else (the server filters; it refuses to send them).
  const source = new EventSource('api/events?sid=' + encodeURIComponent(console_.sid));
  console_.source = source;
  source.addEventListener('open', () => setLive(true));
  source.addEventListener('error', () => {
    setLive(false);
    if (source.readyState === EventSource.CLOSED && console_.source === source) {
      // Refused outright (the session is gone): find out why by a call,
      // which logs out on 401.
      call('agents.list').catch(() => {});
    }
  });
  source.addEventListener('ucs.closed', (message) => {
    source.close();
    setLive(false);
    let why = {};
    try {
      why = JSON.parse(message.data);
    } catch (_) {
      // Unreadable: reconnect below all the same.
    }
    if (why.code === 'UNAUTHENTICATED') {
      loggedOut('Your session ended; log in again.');
    } else if (console_.source === source) {
      // Fell behind: reload what the stream would have told, then listen again.
      setTimeout(() => {
        if (console_.source !== source) return;
        loadAgents();
        loadAudit();
        openEvents();
      }, 1000);
    }
  });
  for (const name of EVENT_NAMES) {
    source.addEventListener(name, (message) => onEvent(name, message));
  }
}

// ---- start ----

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('load-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = $('load-name').value.trim().replace(/\.py$/, '');
    if (name) pluginAction('plugins.load', name, 'Loading');
  });
  $('audit-plugin').addEventListener('change', filterAudit);
  $('events-filter').addEventListener('input', filterEvents);
  $('events-form').addEventListener('submit', (event) => event.preventDefault());
  window.addEventListener('hashchange', route);
  const sid = sessionStorage.getItem('ucs.sid');
  const user = sessionStorage.getItem('ucs.user');
  if (sid && user) {
    try {
      console_.sid = sid;
      console_.user = JSON.parse(user);
      start();
      return;
    } catch (_) {
      // A damaged entry: log in again.
    }
  }
  loggedOut('');
});
