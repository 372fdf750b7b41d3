// The dashboard's script: reads the admin API as JSON and builds the page from it. No
// framework and no build step. Text from the server only ever goes into textContent or an
// attribute, never into HTML, and the charts are SVG drawn here.
'use strict';

(function () {
  const REFRESH_MS = 10000;
  const SEARCH_DELAY_MS = 200;
  const PAGE_ROWS = 50;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#1f5fa8', '#2e7d32', '#c62828', '#a15c00', '#6a1b9a', '#00838f',
    '#ad1457', '#558b2f', '#4e342e', '#37474f', '#f9a825'];

  const $ = (id) => document.getElementById(id);

  // An element with attributes and children (strings become text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
    }
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  class SignedOut extends Error {}

  async function getJSON(path) {
    const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401) throw new SignedOut();
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }

  function notice(text) {
    const n = $('notice');
    n.textContent = text;
    n.hidden = !text;
  }

  function failed(e) {
    if (e instanceof SignedOut) {
      notice('Signed out (the token changed, or the session ended): open the sign-in URL ' +
        'that portico serve printed on stderr, http://ADDRESS/?token=...');
    } else {
      notice('The admin API did not answer: ' + e.message);
    }
  }

  const day = (t) => (t ? t.slice(0, 10) : '');
  const time = (t) => (t ? t.replace('T', ' ').replace('Z', ' UTC') : '');

  function timeEl(t) {
    return t ? el('time', { datetime: t, title: time(t) }, day(t)) : '';
  }

  // ---- status: the header and the listeners ----

  async function loadStatus() {
    const s = await getJSON('/api/v1/status');
    $('summary').textContent = `${s.sites} sites, ${s.certificates} certificates, ` +
      `${s.listeners.length} listeners; version ${s.version}, up ${uptime(s.uptime_seconds)}`;
    const body = $('listeners').tBodies[0];
    clear(body);
    for (const l of s.listeners) {
      body.append(el('tr', null, el('td', null, l.name), el('td', { class: 'mono' }, l.address),
        el('td', null, l.kind), el('td', { class: 'num' }, l.hosts)));
    }
  }

  function uptime(secs) {
    if (secs < 120) return `${secs} s`;
    if (secs < 7200) return `${Math.floor(secs / 60)} min`;
    if (secs < 172800) return `${Math.floor(secs / 3600)} h`;
    return `${Math.floor(secs / 86400)} days`;
  }

  // ---- paged, searched lists ----

  // One list searched and paged on the server: its query state, and the newest request's
  // number so an older answer arriving late is dropped.
  function pagedList(name, path, render) {
    const state = { q: '', offset: 0, seq: 0, total: 0 };
    const pager = $(name + '-pager');
    pager.append(el('button', { type: 'button', 'data-step': -1 }, 'Previous'), el('span'),
      el('button', { type: 'button', 'data-step': 1 }, 'Next'));
    async function load() {
      const seq = ++state.seq;
      const params = new URLSearchParams({ q: state.q, offset: state.offset, limit: PAGE_ROWS });
      const data = await getJSON(`${path}?${params}`);
      if (seq !== state.seq) return;
      state.total = data.total;
      render(data);
      const last = Math.min(data.offset + data.limit, data.total);
      pager.querySelector('span').textContent = data.total === 0 ? 'none' :
        `${data.offset + 1}–${last} of ${data.total}`;
      pager.querySelector('[data-step="-1"]').disabled = data.offset === 0;
      pager.querySelector('[data-step="1"]').disabled = last >= data.total;
      $(name + '-count').textContent = state.q ? `(${data.total} matching)` : `(${data.total})`;
    }
    let timer = null;
    $(name + '-search').addEventListener('input', (ev) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        state.q = ev.target.value.trim();
        state.offset = 0;
        load().catch(failed);
      }, SEARCH_DELAY_MS);
    });
    pager.addEventListener('click', (ev) => {
      const step = Number(ev.target.getAttribute('data-step'));
      if (!step) return;
      state.offset = Math.max(0, state.offset + step * PAGE_ROWS);
      load().catch(failed);
    });
    return load;
  }

  function expiryCell(cert) {
    if (!cert) return el('td', null, el('span', { class: 'badge' }, 'pending'));
    const td = el('td', { class: 'expires' }, timeEl(cert.not_after));
    if (cert.days_left < 0) td.append(' ', el('span', { class: 'badge bad' }, 'expired'));
    else if (cert.days_left < 14) td.append(' ', el('span', { class: 'badge' }, `${cert.days_left} days`));
    return td;
  }

  function renderSites(data) {
    const body = $('sites').tBodies[0];
    clear(body);
    for (const s of data.sites) {
      const bindings = el('td');
      let soonest = null;
      for (const b of s.bindings) {
        const cert = b.certificate;
        if (cert && (!soonest || cert.not_after < soonest.not_after)) soonest = cert;
        const what = cert ? ` → ${cert.subject} (${b.how})` : (b.kind === 'http' ? ' (http)' : ' (no certificate)');
        bindings.append(el('div', { class: 'binding' }, el('span', { class: 'mono' }, `${b.listener}: ${b.host}`), what));
      }
      const expires = s.bindings.some((b) => b.kind === 'https') ? expiryCell(soonest) : el('td');
      const row = el('tr', { 'data-site': s.name }, el('td', null, s.name),
        el('td', { class: 'mono' }, s.hosts.join(', ')), el('td', null, `${s.action} (tls ${s.tls})`),
        bindings, expires);
      if (soonest && soonest.days_left < 0) row.classList.add('expired');
      else if (soonest && soonest.days_left < 14) row.classList.add('soon');
      body.append(row);
    }
  }

  function renderCerts(data) {
    drawTimeline($('expiry-chart'), data);
    const body = $('certs').tBodies[0];
    clear(body);
    for (const c of data.certificates) {
      const cert = c.certificate;
      const row = el('tr', { 'data-sites': c.sites.join(' ') }, expiryCell(cert),
        el('td', { class: 'num' }, cert ? cert.days_left : ''),
        el('td', { class: 'mono' }, c.names.join(', ')), el('td', null, c.sites.join(', ')),
        el('td', null, c.source), el('td', null, cert ? cert.issuer : (c.pending || '')),
        el('td', { title: c.renewal_rule || '' }, c.next_renewal ? timeEl(c.next_renewal) : (c.source === 'file' ? 'by you' : '')));
      if (cert && cert.days_left < 0) row.classList.add('expired');
      else if (cert && cert.days_left < data.soon_days) row.classList.add('soon');
      body.append(row);
    }
  }

  // ---- ACME and reloads ----

  async function loadAcme() {
    const data = await getJSON('/api/v1/expiry?source=acme&limit=500');
    $('acme-count').textContent = data.total ? `(${data.total} sites)` : '(no site uses ACME)';
    const body = $('acme').tBodies[0];
    clear(body);
    for (const c of data.certificates) {
      const a = c.acme || {};
      const err = a.last_error;
      const detail = err ? [err.message, err.problem && err.problem.detail].filter(Boolean).join(': ') : '';
      body.append(el('tr', null, el('td', null, c.sites.join(', ')), el('td', { class: 'mono' }, c.names.join(', ')),
        el('td', null, a.state || (c.pending ? 'pending' : 'no status yet')), el('td', { class: 'num' }, a.attempts || 0),
        el('td', null, timeEl(a.last_success)), el('td', null, timeEl(c.next_renewal)),
        el('td', { class: 'error-text' }, err ? `${time(err.at)}: ${detail}` : '')));
    }
  }

  async function loadReloads() {
    const data = await getJSON('/api/v1/reloads');
    const list = $('reloads');
    clear(list);
    if (data.reloads.length === 0) list.append(el('li', { class: 'quiet none' }, 'No reload since the server started.'));
    for (const r of data.reloads) {
      const item = el('li', null, el('span', { class: r.ok ? 'badge good' : 'badge bad' }, r.ok ? 'OK' : 'FAILED'),
        ' ', timeEl(r.at), ` ${time(r.at).slice(11)} — ${r.reason}: ${r.summary}`);
      if (r.diagnostics.length) {
        const d = el('details', null, el('summary', null, `${r.diagnostics.length} diagnostics`));
        for (const x of r.diagnostics) {
          d.append(el('div', { class: 'diag' }, `${x.severity}: ${x.path ? x.path + ': ' : ''}${x.message}`,
            x.fix ? el('div', { class: 'quiet' }, `fix: ${x.fix}`) : null));
        }
        item.append(d);
      }
      list.append(item);
    }
  }

  // ---- charts ----

  // Margins inside a chart's viewBox, in its units (about pixels).
  const LEFT = 44, RIGHT = 8, TOP = 10, BOTTOM = 22;

  // Lines over the last 15 minutes. `series`: [{name, points: [[unixSeconds, value]]}].
  function drawLines(node, legend, series, now, unit) {
    const { width: W, height: H } = node.viewBox.baseVal;
    clear(node);
    clear(legend);
    const from = now - 900;
    const max = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1])));
    const top = niceCeiling(max);
    const x = (t) => LEFT + (W - LEFT - RIGHT) * Math.max(0, t - from) / 900;
    const y = (v) => H - BOTTOM - (H - TOP - BOTTOM) * v / top;
    for (const v of [0, top / 2, top]) {
      node.append(svg('line', { class: 'axis', x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v) }));
      const label = svg('text', { x: LEFT - 4, y: y(v) + 4, 'text-anchor': 'end' });
      label.textContent = fmt(v);
      node.append(label);
    }
    for (const [t, text] of [[from, '−15 min'], [now - 450, '−7.5 min'], [now, 'now']]) {
      const label = svg('text', { x: x(t), y: H - 6, 'text-anchor': t === from ? 'start' : (t === now ? 'end' : 'middle') });
      label.textContent = text;
      node.append(label);
    }
    if (series.length === 0) {
      const label = svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' });
      label.textContent = 'nothing yet';
      node.append(label);
    }
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
      const peak = Math.max(...s.points.map((p) => p[1]));
      node.append(svg('path', { class: 'series', d, stroke: color, 'data-series': s.name, 'data-peak': peak }));
      const last = s.points[s.points.length - 1];
      node.append(svg('circle', { cx: x(last[0]), cy: y(last[1]), r: 3, fill: color }));
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = color;
      legend.append(el('li', null, swatch, `${s.name} ${fmt(last[1])}${unit}`));
    });
  }

  function niceCeiling(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function fmt(v) {
    if (v === 0) return '0';
    if (v >= 100) return String(Math.round(v));
    if (v >= 1) return v.toFixed(1).replace(/\.0$/, '');
    return v.toPrecision(2);
  }

  async function loadSeries() {
    const data = await getJSON('/api/v1/series');
    // The intervals kept, then the one under way; the first one kept has no length (it
    // only marks the start) and draws no point.
    const all = data.samples.concat([data.current]).filter((s) => s.milliseconds > 0);
    const at = (s) => Date.parse(s.at) / 1000;
    const now = at(data.current);
    const rate = (n, s) => n * 1000 / s.milliseconds;

    const outcomes = data.outcomes.map((name, i) => ({
      name,
      points: all.map((s) => [at(s), rate(s.handshakes.reduce((sum, l) => sum + l.counts[i], 0), s)]),
    })).filter((s) => s.points.some((p) => p[1] > 0));
    drawLines($('handshakes-chart'), $('handshakes-legend'), outcomes, now, '/s');

    // The sites named in any interval, the ten busiest drawn, the rest added to "other".
    const totals = new Map();
    for (const s of all) for (const r of s.requests) totals.set(r.site, (totals.get(r.site) || 0) + r.count);
    const drawn = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10).map((e) => e[0]);
    const sites = drawn.map((name) => ({
      name,
      points: all.map((s) => [at(s), rate((s.requests.find((r) => r.site === name) || { count: 0 }).count, s)]),
    }));
    const other = all.map((s) => [at(s), rate(s.other_requests +
      s.requests.filter((r) => !drawn.includes(r.site)).reduce((sum, r) => sum + r.count, 0), s)]);
    if (other.some((p) => p[1] > 0)) sites.push({ name: 'other sites', points: other });
    drawLines($('requests-chart'), $('requests-legend'), sites, now, '/s');
  }

  // Bars: expired, then one per week from now, then later; red under 14 days.
  function drawTimeline(node, data) {
    const { width: W, height: h } = node.viewBox.baseVal;
    clear(node);
    const t = data.timeline;
    const bars = [{ label: 'expired', count: data.expired, bad: true }];
    t.bars.forEach((count, i) => bars.push({ label: `${i * t.bar_days}d`, count, bad: (i + 1) * t.bar_days <= data.soon_days }));
    if (t.later) bars.push({ label: 'later', count: t.later, bad: false });
    const max = Math.max(1, ...bars.map((b) => b.count));
    const width = (W - LEFT - RIGHT) / bars.length;
    const y = (v) => h - BOTTOM - (h - TOP - BOTTOM) * v / max;
    node.append(svg('line', { class: 'axis', x1: LEFT, x2: W - RIGHT, y1: y(0), y2: y(0) }));
    const topLabel = svg('text', { x: LEFT - 4, y: y(max) + 4, 'text-anchor': 'end' });
    topLabel.textContent = String(max);
    node.append(topLabel);
    bars.forEach((b, i) => {
      const x = LEFT + i * width;
      const rect = svg('rect', {
        x: x + 1, y: y(b.count), width: Math.max(1, width - 2), height: y(0) - y(b.count),
        fill: b.bad ? '#c62828' : '#1f5fa8', 'data-count': b.count, 'data-label': b.label,
      });
      const tip = svg('title', {});
      tip.textContent = `${b.label}: ${b.count}`;
      rect.append(tip);
      node.append(rect);
      if (bars.length <= 16 || i % Math.ceil(bars.length / 16) === 0) {
        const label = svg('text', { x: x + width / 2, y: h - 6, 'text-anchor': 'middle' });
        label.textContent = b.label;
        node.append(label);
      }
    });
  }

  // ---- start and refresh ----

  const loadSites = pagedList('sites', '/api/v1/sites', renderSites);
  const loadCerts = pagedList('certs', '/api/v1/expiry', renderCerts);

  async function refresh() {
    try {
      await Promise.all([loadStatus(), loadSeries(), loadSites(), loadCerts(), loadAcme(), loadReloads()]);
      notice('');
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      failed(e);
    }
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
}());
