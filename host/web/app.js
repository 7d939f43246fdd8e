// Komoku's web page: the keys with live values, and a page per key with charts chosen by the
// key's type. It is a client like any other: the JSON API (/api/v1/) for lists and history,
// the v2 websocket for live values. With auth on, the token the user types is kept in this
// browser's localStorage and sent as an Authorization header and as the websocket's first
// `auth` message, never in a URL.
(() => {
  'use strict';

  const TOKEN = 'komoku.token';
  const state = {
    token: localStorage.getItem(TOKEN) || '',
    ws: null,
    keys: new Map(), // name -> {name, type, value, time, options}
    subscribed: new Set(),
    view: null, // {kind: 'list'} or {kind: 'key', name, range, since, until}
  };
  // What the page drew, for tests and the curious: per chart, the API URL and the series.
  const exposed = { charts: {}, draws: 0, listed: 0 };
  window.komoku = exposed;

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  };
  const enc = encodeURIComponent;

  // ---- the API -------------------------------------------------------------------------

  class Unauthorized extends Error {}

  async function api(path, options = {}) {
    const headers = {};
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    const response = await fetch('/api/v1/' + path, { ...options, headers });
    if (response.status === 401) {
      showLogin();
      throw new Unauthorized('unauthorized');
    }
    const body = await response.json();
    if (!response.ok) {
      const e = new Error(body.message || body.error);
      e.code = body.error;
      throw e;
    }
    return body;
  }

  // ---- login ---------------------------------------------------------------------------

  function showLogin(wrong) {
    $('#login').hidden = false;
    $('#login-error').hidden = !wrong;
    $('#token').focus();
  }

  $('#login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = $('#token').value.trim();
    const response = await fetch('/api/v1/keys?limit=1', {
      headers: { Authorization: 'Bearer ' + token },
    });
    if (response.status === 401) {
      showLogin(true);
      return;
    }
    state.token = token;
    localStorage.setItem(TOKEN, token);
    $('#login').hidden = true;
    $('#token').value = '';
    if (state.ws) state.ws.close();
    else connect();
    route();
  });

  // ---- live values over the websocket ----------------------------------------------------

  function setStatus(text, live) {
    const s = $('#status');
    s.textContent = text;
    s.classList.toggle('live', !!live);
  }

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const ws = new WebSocket(scheme + location.host + '/v2');
    state.ws = ws;
    ws.onopen = () => {
      if (state.token) ws.send(JSON.stringify({ auth: { token: state.token }, query_id: 'auth' }));
      const keys = [...state.subscribed];
      state.subscribed.clear();
      subscribe(keys);
      setStatus('live', true);
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.pub) onPush(message.pub);
      else if (message.query_id === 'auth' && message.error) showLogin(true);
    };
    ws.onclose = () => {
      state.ws = null;
      setStatus('reconnecting…');
      setTimeout(connect, 1500);
    };
  }

  function subscribe(keys) {
    const fresh = keys.filter((k) => !state.subscribed.has(k));
    fresh.forEach((k) => state.subscribed.add(k));
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return; // sent on open
    for (let i = 0; i < fresh.length; i += 1000) {
      const batch = fresh.slice(i, i + 1000).map((key) => ({ sub: { key } }));
      ws.send(JSON.stringify(batch));
    }
  }

  function onPush(p) {
    const known = state.keys.get(p.key) || { name: p.key };
    known.value = p.value;
    known.time = p.time;
    state.keys.set(p.key, known);
    for (const row of document.querySelectorAll('[data-key]')) {
      if (row.dataset.key !== p.key) continue;
      const value = $('.value', row);
      showValue(value, p.value);
      $('.ago', row).dataset.time = p.time;
      row.classList.remove('flash');
      void row.offsetWidth; // restart the animation
      row.classList.add('flash');
    }
    tick();
    const v = state.view;
    if (v && v.kind === 'key' && v.name === p.key && v.relative) scheduleRedraw();
  }

  function showValue(node, value) {
    node.textContent = value === null || value === undefined ? '—' : typeof value === 'string' ? value : JSON.stringify(value);
    node.classList.toggle('true', value === true);
    node.classList.toggle('false', value === false);
  }

  function ago(time) {
    if (time === null || time === undefined || time === '') return '';
    const s = Math.max(0, Date.now() / 1000 - Number(time));
    if (s < 60) return Math.floor(s) + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  function tick() {
    for (const node of document.querySelectorAll('.ago')) node.textContent = ago(node.dataset.time);
  }
  setInterval(tick, 1000);

  // ---- the list of keys -------------------------------------------------------------------

  async function allKeys() {
    const out = [];
    let after = null;
    do {
      const page = await api('keys?limit=1000' + (after ? '&after=' + enc(after) : ''));
      out.push(...page.keys);
      after = page.next;
    } while (after);
    return out;
  }

  function groupOf(name) {
    const dot = name.lastIndexOf('.');
    return dot < 0 ? '' : name.slice(0, dot);
  }

  async function showList() {
    state.view = { kind: 'list' };
    document.title = 'Komoku';
    const main = $('#main');
    const keys = await allKeys();
    keys.forEach((k) => state.keys.set(k.name, k));
    const search = el('input', { id: 'search', type: 'search', placeholder: `Search ${keys.length} keys`, autocomplete: 'off' });
    const list = el('div', { id: 'keys' });
    const groups = new Map();
    for (const k of keys) {
      const g = groupOf(k.name);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(k);
    }
    for (const g of [...groups.keys()].sort()) {
      const box = el('section', { class: 'group', 'data-group': g }, el('h3', {}, g || '(no prefix)'));
      for (const k of groups.get(g)) {
        const value = el('span', { class: 'value' });
        showValue(value, k.value);
        const short = g ? k.name.slice(g.length + 1) : k.name;
        box.append(
          el('a', { class: 'row', href: '/ui/key/' + enc(k.name), 'data-key': k.name },
            el('span', { class: 'name' }, short, el('span', { class: 'type' }, k.type)),
            value,
            el('span', { class: 'ago', 'data-time': k.time ?? '' })));
      }
      list.append(box);
    }
    if (!keys.length) list.append(el('p', { class: 'note' }, 'No keys yet. Put one: curl -X PUT --data 21.5 ' + location.origin + '/api/v1/keys/room.temp'));
    search.addEventListener('input', () => {
      const q = search.value.trim().toLowerCase();
      for (const box of list.querySelectorAll('.group')) {
        let shown = 0;
        for (const row of box.querySelectorAll('.row')) {
          const hit = !q || row.dataset.key.toLowerCase().includes(q);
          row.hidden = !hit;
          shown += hit;
        }
        box.hidden = shown === 0;
      }
    });
    main.replaceChildren(search, list);
    tick();
    subscribe(keys.map((k) => k.name));
    exposed.listed += 1;
  }

  // ---- a key's page ---------------------------------------------------------------------

  const RANGES = [['1h', 3600], ['24h', 86400], ['7d', 7 * 86400], ['30d', 30 * 86400], ['1y', 365 * 86400]];
  // Steps the server takes, shortest first; a range gets the shortest giving ≤ 400 buckets.
  const STEPS = [[10, '10S'], [30, '30S'], [60, '1M'], [300, '5M'], [900, '15M'], [1800, '30M'],
    [3600, '1H'], [7200, '2H'], [21600, '6H'], [43200, '12H'], [86400, '1d'], [7 * 86400, '1w']];
  const tz = (() => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch (_) { return 'UTC'; } })();
  const COLORS = ['#1570ef', '#12b76a', '#f79009', '#9e77ed', '#f04438', '#06aed4', '#ee46bc', '#667085', '#84cc16', '#b54708'];

  function stepFor(seconds) {
    for (const [s, name] of STEPS) if (seconds / s <= 400) return [s, name];
    return STEPS[STEPS.length - 1];
  }

  function kindOf(info) {
    switch (info.type) {
      case 'boolean': case 'uptime': return 'bool';
      case 'counter': case 'meter': return 'counter';
      case 'string': return (info.options && info.options.mode === 'log') ? 'log' : 'state';
      default: return 'number';
    }
  }

  async function showKey(name) {
    const info = await api('keys/' + enc(name));
    state.keys.set(name, info);
    document.title = name + ' · Komoku';
    const value = el('span', { class: 'value' });
    showValue(value, info.value);
    const head = el('div', { class: 'keyhead', 'data-key': name },
      el('h1', {}, name), value, el('span', { class: 'ago', 'data-time': info.time ?? '' }),
      el('span', { class: 'note' }, info.type));
    const ranges = el('div', { class: 'ranges' });
    for (const [label] of RANGES) {
      ranges.append(el('button', { type: 'button', 'data-range': label, onclick: () => setRange(label) }, label));
    }
    const from = el('input', { type: 'datetime-local', id: 'from' });
    const to = el('input', { type: 'datetime-local', id: 'to' });
    ranges.append(el('span', { class: 'custom' }, from, '–', to,
      el('button', { type: 'button', 'data-range': 'custom', onclick: () => {
        const since = Date.parse(from.value) / 1000;
        const until = Date.parse(to.value) / 1000;
        if (since < until) setWindow(since, until);
      } }, 'custom')));
    const charts = el('div', { id: 'charts' });
    $('#main').replaceChildren(head, ranges, charts);
    tick();
    state.view = { kind: 'key', name, info, kindOf: kindOf(info) };
    subscribe([name]);
    // A deep link may carry a window: /ui/key/NAME?since=T&until=T (seconds since the epoch).
    const q = new URLSearchParams(location.search);
    const since = Number(q.get('since'));
    const until = Number(q.get('until'));
    if (q.has('since') && q.has('until') && since < until) setWindow(since, until);
    else setRange(q.get('range') && RANGES.some(([l]) => l === q.get('range')) ? q.get('range') : '24h');
  }

  // The address shows the range, so that a reload or a shared link shows the same.
  function keepInAddress(query) {
    history.replaceState(null, '', location.pathname + (query ? '?' + query : ''));
  }

  function localInput(t) {
    const d = new Date(t * 1000 - new Date(t * 1000).getTimezoneOffset() * 60000);
    return d.toISOString().slice(0, 16);
  }

  function setRange(label) {
    const seconds = RANGES.find(([l]) => l === label)[1];
    const until = Math.ceil(Date.now() / 1000);
    Object.assign(state.view, { range: label, relative: true, since: until - seconds, until });
    keepInAddress(label === '24h' ? '' : 'range=' + label);
    draw();
  }

  function setWindow(since, until) {
    Object.assign(state.view, { range: 'custom', relative: false, since: Math.floor(since), until: Math.ceil(until) });
    keepInAddress(`since=${state.view.since}&until=${state.view.until}`);
    draw();
  }

  let redrawTimer = null;
  function scheduleRedraw() {
    if (redrawTimer) return;
    redrawTimer = setTimeout(() => {
      redrawTimer = null;
      const v = state.view;
      if (v && v.kind === 'key' && v.relative) setRange(v.range);
    }, 5000);
  }

  function card(title, id) {
    return el('div', { class: 'card', id }, el('h2', {}, title));
  }

  function width(node) {
    return Math.max(260, (node.clientWidth || $('#main').clientWidth) - 24);
  }

  const fmtTime = (t) => new Date(t * 1000).toLocaleString();
  const fmtDuration = (s) => s >= 86400 ? (s / 86400).toFixed(1) + ' d' : s >= 3600 ? (s / 3600).toFixed(1) + ' h' : s >= 60 ? (s / 60).toFixed(1) + ' min' : Math.round(s) + ' s';

  async function draw() {
    const v = state.view;
    for (const b of document.querySelectorAll('.ranges button')) b.classList.toggle('on', b.dataset.range === v.range);
    $('#from').value = localInput(v.since);
    $('#to').value = localInput(v.until);
    const charts = $('#charts');
    const [stepSeconds, step] = stepFor(v.until - v.since);
    const base = `keys/${enc(v.name)}/summary?since=${v.since}&until=${v.until}&step=${step}&tz=${enc(tz)}`;
    const started = performance.now();
    try {
      const parts = [];
      if (v.kindOf === 'number') parts.push(numberChart(base, stepSeconds), typicalDay(v, 'mean'));
      else if (v.kindOf === 'counter') parts.push(counterChart(base, stepSeconds));
      else if (v.kindOf === 'bool') parts.push(boolChart(base, stepSeconds), typicalDay(v, 'fraction_true'));
      else if (v.kindOf === 'state') parts.push(stateChart(base, stepSeconds));
      else parts.push(logList(v));
      const cards = await Promise.all(parts);
      charts.replaceChildren(...cards.flat());
      for (const f of pendingCharts.splice(0)) f();
    } catch (e) {
      if (e instanceof Unauthorized) return;
      charts.replaceChildren(el('div', { class: 'card error' }, String(e.message || e)));
    }
    exposed.draws += 1;
    exposed.lastDrawMs = performance.now() - started;
    exposed.drawnAt = performance.now(); // ms since the page began to load
    exposed.resolution = lastResolution;
  }

  // Charts are made once their cards are in the page (uPlot measures its container).
  const pendingCharts = [];

  function chart(id, container, opts, data, url, series) {
    exposed.charts[id] = { url, x: data[0], series };
    pendingCharts.push(() => {
      const plot = new uPlot({ width: width(container), height: window.innerWidth < 600 ? 200 : 280, ...opts }, data, container);
      window.addEventListener('resize', () => plot.setSize({ width: width(container), height: plot.height }));
      exposed.charts[id].plot = plot;
    });
  }

  // Drag across a time chart to zoom into that window.
  const zoom = {
    drag: { x: true, y: false, setScale: false },
  };
  const zoomHooks = {
    setSelect: [(u) => {
      if (u.select.width < 5) return;
      const since = u.posToVal(u.select.left, 'x');
      const until = u.posToVal(u.select.left + u.select.width, 'x');
      u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
      setWindow(since, until);
    }],
  };

  let lastResolution = null;

  async function numberChart(base, stepSeconds) {
    const url = base + '&figures=mean,min,max';
    const s = await api(url);
    lastResolution = s.resolution;
    const b = s.buckets;
    const x = b.map((r) => r.start);
    const mean = b.map((r) => r.mean ?? null);
    const min = b.map((r) => r.min ?? null);
    const max = b.map((r) => r.max ?? null);
    const c = card(`Mean with min–max per ${fmtDuration(stepSeconds)}`, 'chart-main');
    c.append(el('p', { class: 'note' }, `resolution: ${s.resolution}; mean ${fmt(s.total.mean)}, min ${fmt(s.total.min)}, max ${fmt(s.total.max)}`));
    chart('main', c, {
      cursor: zoom, hooks: zoomHooks,
      series: [{}, { label: 'min', stroke: 'rgba(21,112,239,.35)' }, { label: 'max', stroke: 'rgba(21,112,239,.35)' },
        { label: 'mean', stroke: '#1570ef', width: 2 }],
      bands: [{ series: [2, 1], fill: 'rgba(21,112,239,.12)' }],
    }, [x, min, max, mean], url, { mean, min, max });
    return c;
  }

  function fmt(n) {
    return n === null || n === undefined ? '—' : Math.abs(n) >= 1000 || Number.isInteger(n) ? String(Math.round(n * 100) / 100) : n.toPrecision(4);
  }

  async function counterChart(base, stepSeconds) {
    const url = base + '&figures=increase,last';
    const s = await api(url);
    const x = s.buckets.map((r) => r.start);
    const increase = s.buckets.map((r) => r.increase ?? null);
    const c = card(`Increase per ${fmtDuration(stepSeconds)}`, 'chart-main');
    c.append(el('p', { class: 'note' }, `total increase ${fmt(s.total.increase)} (resolution: ${s.resolution})`));
    chart('main', c, {
      cursor: zoom, hooks: zoomHooks,
      series: [{}, { label: 'increase', stroke: '#1570ef', fill: 'rgba(21,112,239,.35)', paths: uPlot.paths.bars({ size: [0.8, 60] }) }],
    }, [x, increase], url, { increase });
    return c;
  }

  async function boolChart(base, stepSeconds) {
    const url = base + '&figures=fraction_true,time_false,coverage_seconds';
    const s = await api(url);
    const b = s.buckets;
    const x = b.map((r) => r.start);
    const on = b.map((r) => r.fraction_true ?? null);
    const known = b.map((r) => (r.coverage_seconds > 0 ? 1 : null));
    const bars = uPlot.paths.bars({ size: [0.95, 80] });
    const pct = s.total.fraction_true === null || s.total.fraction_true === undefined ? '—' : (s.total.fraction_true * 100).toFixed(2) + ' %';
    const c = card(`On/off per ${fmtDuration(stepSeconds)}`, 'chart-main');
    c.append(el('p', {}, 'uptime ', el('strong', { id: 'uptime' }, pct), el('span', { class: 'note' }, ` (time true of time known; resolution: ${s.resolution})`)));
    chart('main', c, {
      cursor: zoom, hooks: zoomHooks,
      scales: { y: { range: [0, 1] } },
      series: [{}, { label: 'off', stroke: '#f04438', fill: 'rgba(240,68,56,.75)', paths: bars },
        { label: 'on (share)', stroke: '#12b76a', fill: 'rgba(18,183,106,.9)', paths: bars }],
    }, [x, known, on], url, { fraction_true: on });
    // Outages: runs of buckets with time off, merged.
    const outages = [];
    for (const r of b) {
      if (!(r.time_false > 0)) continue;
      const last = outages[outages.length - 1];
      if (last && last.end === r.start) { last.end = r.end; last.off += r.time_false; } else outages.push({ start: r.start, end: r.end, off: r.time_false });
    }
    const list = card(`Outages (${outages.length})`, 'outages');
    const table = el('table', {}, el('tr', {}, el('th', {}, 'from'), el('th', {}, 'to'), el('th', {}, 'time off')));
    for (const o of outages.slice(-50).reverse()) table.append(el('tr', {}, el('td', {}, fmtTime(o.start)), el('td', {}, fmtTime(o.end)), el('td', {}, fmtDuration(o.off))));
    list.append(outages.length ? table : el('p', { class: 'note' }, 'none in this range'));
    return [c, list];
  }

  async function stateChart(base, stepSeconds) {
    const url = base + '&figures=time_per_state,coverage_seconds';
    const s = await api(url);
    const b = s.buckets;
    const x = b.map((r) => r.start);
    const totals = s.total.time_per_state || {};
    const states = Object.keys(totals).sort((p, q) => totals[q] - totals[p]);
    // Stacked shares: each state's bar reaches the sum of the shares up to it; the taller
    // bars are drawn first so each state shows as its own band.
    const shares = states.map((st) => b.map((r) => {
      const t = r.time_per_state || {};
      const all = Object.values(t).reduce((p, q) => p + q, 0);
      return all > 0 ? (t[st] || 0) / all : null;
    }));
    const stacked = shares.map((_, i) => b.map((__, j) => shares[i][j] === null ? null : shares.slice(0, i + 1).reduce((p, q) => p + (q[j] || 0), 0)));
    const bars = uPlot.paths.bars({ size: [0.95, 80] });
    const series = [{}];
    const data = [x];
    for (let i = states.length - 1; i >= 0; i--) {
      const color = COLORS[i % COLORS.length];
      series.push({ label: states[i], stroke: color, fill: color, paths: bars });
      data.push(stacked[i]);
    }
    const c = card(`State per ${fmtDuration(stepSeconds)}`, 'chart-main');
    const perState = {};
    states.forEach((st, i) => { perState[st] = shares[i]; });
    chart('main', c, { cursor: zoom, hooks: zoomHooks, scales: { y: { range: [0, 1] } }, series }, data, url, perState);
    const all = Object.values(totals).reduce((p, q) => p + q, 0);
    const table = el('table', { id: 'time-per-state' }, el('tr', {}, el('th', {}, 'state'), el('th', {}, 'time'), el('th', {}, 'share')));
    states.forEach((st, i) => table.append(el('tr', {},
      el('td', {}, el('span', { class: 'swatch', style: `background:${COLORS[i % COLORS.length]}` }), st),
      el('td', {}, fmtDuration(totals[st])), el('td', {}, (100 * totals[st] / all).toFixed(1) + ' %'))));
    const t = card('Time per state', 'states');
    t.append(states.length ? table : el('p', { class: 'note' }, 'no data in this range'));
    return [c, t];
  }

  async function typicalDay(v, figure) {
    // At least a week of days, so that the hours average over several.
    const since = Math.min(v.since, v.until - 7 * 86400);
    const url = `keys/${enc(v.name)}/summary?since=${since}&until=${v.until}&step=1H&group=hour&tz=${enc(tz)}&figures=${figure}`;
    const s = await api(url);
    const groups = s.groups || [];
    const x = groups.map((g) => g.hour);
    const y = groups.map((g) => g[figure] ?? null);
    const c = card('Typical day (by hour, ' + tz + ')', 'chart-typical');
    chart('typical', c, {
      scales: { x: { time: false } },
      axes: [{ values: (u, ticks) => ticks.map((t) => t + ':00') }, {}],
      series: [{ label: 'hour' }, { label: figure, stroke: '#9e77ed', fill: 'rgba(158,119,237,.35)', paths: uPlot.paths.bars({ size: [0.8, 40] }) }],
    }, [x, y], url, { [figure]: y });
    return c;
  }

  async function logList(v) {
    const url = `keys/${enc(v.name)}/points?since=${v.since}&until=${v.until}&limit=500`;
    const c = card('Entries', 'entries');
    try {
      const points = await api(url);
      exposed.charts.main = { url, x: points.map((p) => p[0]), series: { value: points.map((p) => p[1]) } };
      const table = el('table', {}, el('tr', {}, el('th', {}, 'time'), el('th', {}, 'entry')));
      for (const [t, value] of points.slice().reverse()) table.append(el('tr', {}, el('td', {}, fmtTime(t)), el('td', {}, String(value))));
      c.append(points.length ? table : el('p', { class: 'note' }, 'no entries in this range'));
    } catch (e) {
      if (e.code !== 'compacted') throw e;
      c.append(el('p', { class: 'note' }, 'These entries are compacted into summaries; choose a more recent range.'));
    }
    return c;
  }

  // ---- routing --------------------------------------------------------------------------

  function route() {
    const path = location.pathname;
    const shown = path.startsWith('/ui/key/') ? showKey(decodeURIComponent(path.slice('/ui/key/'.length))) : showList();
    shown.catch((e) => {
      if (e instanceof Unauthorized) return;
      $('#main').replaceChildren(el('p', { class: 'error' }, String(e.message || e)));
    });
  }

  document.addEventListener('click', (event) => {
    const a = event.target.closest('a');
    if (!a || a.origin !== location.origin || event.ctrlKey || event.metaKey || a.target) return;
    if (!(a.pathname === '/' || a.pathname.startsWith('/ui/key/'))) return;
    event.preventDefault();
    history.pushState(null, '', a.pathname + a.search);
    route();
  });
  window.addEventListener('popstate', route);

  connect();
  route();
})();
