// The status page's script: fetch status.json every two seconds and draw it.
// Plain DOM calls only (text is set with textContent, never parsed as HTML:
// resource names come from callers), nothing loaded from elsewhere.
'use strict';

const REFRESH_MS = 2000;
const SVG = 'http://www.w3.org/2000/svg';

function $(id) {
  return document.getElementById(id);
}

// An element with attributes (class, data-*, title, ...) and children
// (strings become text).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    tbody.append(el('tr', {}, el('td', { class: 'empty', colspan: String(columns) }, emptyText)));
  }
}

function ms(value) {
  if (value === null || value === undefined) return '–';
  if (value < 1) return value.toFixed(2) + ' ms';
  if (value < 10) return value.toFixed(1) + ' ms';
  if (value < 1000) return Math.round(value) + ' ms';
  return (value / 1000).toFixed(value < 10000 ? 2 : 1) + ' s';
}

function seconds(milliseconds) {
  const s = milliseconds / 1000;
  if (s < 10) return s.toFixed(1) + ' s';
  if (s < 120) return Math.round(s) + ' s';
  return Math.round(s / 60) + ' min';
}

// An axis label: a power of ten, in ms or s.
function decade(value) {
  if (value >= 1000) return value / 1000 + ' s';
  return (value < 1 ? value.toFixed(-Math.round(Math.log10(value))) : String(value)) + ' ms';
}

function ago(milliseconds) {
  const s = milliseconds / 1000;
  if (s < 1) return 'just now';
  if (s < 60) return Math.round(s) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

function duration(seconds) {
  if (seconds < 60) return seconds + ' s';
  if (seconds < 3600) return Math.floor(seconds / 60) + ' min';
  if (seconds < 86400) return Math.floor(seconds / 3600) + ' h ' + Math.floor((seconds % 3600) / 60) + ' min';
  return Math.floor(seconds / 86400) + ' d ' + Math.floor((seconds % 86400) / 3600) + ' h';
}

function pill(kind, text) {
  return el('span', { class: 'pill pill-' + kind }, text);
}

function renderRegions(regions) {
  const rows = regions.map((region) => {
    const chips = region.shards.map((shard) =>
      el('span', {
        class: 'chip ' + (shard.healthy ? 'chip-up' : 'chip-down'),
        title: shard.name + (shard.healthy ? ': healthy' : ': unreachable or failing'),
      }, shard.name));
    const stats = region.probe
      ? ms(region.probe.last_ms) + ' · ' + ms(region.probe.p50_ms) + ' · ' + ms(region.probe.max_ms)
      : null;
    let probe;
    if (region.unanswered_ms !== null && region.unanswered_ms !== undefined) {
      probe = el('td', { class: 'num bad', title: stats ? 'before: ' + stats : 'no answer in 15 s' },
        'no answer for ' + seconds(region.unanswered_ms));
    } else if (stats) {
      probe = el('td', { class: 'num', title: region.probe.samples + ' probes in 15 s' }, stats);
    } else {
      probe = el('td', { class: 'num muted' }, 'no answer in 15 s');
    }
    return el('tr', { 'data-region': region.name, 'data-health': region.health },
      el('td', { class: 'region-name' }, region.name),
      el('td', {}, pill(region.health, region.health)),
      el('td', {}, ...chips),
      probe);
  });
  fill($('regions').tBodies[0], rows, 4, 'no regions configured');
}

function renderShards(shards) {
  const rows = shards.map((shard) =>
    el('tr', { 'data-shard': shard.name },
      el('td', { class: 'resource' }, shard.name),
      el('td', { class: 'num' }, shard.healthy_regions + ' of ' + shard.regions),
      el('td', {}, shard.quorum ? pill('yes', 'majority') : pill('no', 'no majority'))));
  fill($('shards').tBodies[0], rows, 3, 'no shards');
}

function renderHeld(held) {
  const big = $('held');
  const note = $('held-note');
  if (held.count === null || held.count === undefined) {
    big.textContent = 'unknown';
    big.className = 'big unknown';
    note.textContent = 'The read failed: ' + (held.error || 'no answer');
    return;
  }
  big.className = 'big';
  big.textContent = held.more ? held.count + '+' : String(held.count);
  note.textContent = 'Held by a majority of regions, by a ' + held.source + '; the first ' +
    held.limit + ' in resource order' + (held.more ? ' (there are more)' : '') + ' · counted ' +
    ago(held.age_ms);
}

function renderContended(contended) {
  const rows = contended.map((entry) =>
    el('tr', {},
      el('td', { class: 'resource' }, entry.resource),
      el('td', { class: 'num' }, String(entry.refused_acquires) +
        (entry.max_overcount > 0 ? ' (≤ +' + entry.max_overcount + ')' : ''))));
  fill($('contended').tBodies[0], rows, 2, 'no refused acquires yet');
}

function renderRejections(rejections) {
  const rows = rejections.by_reason.map((reason) =>
    el('tr', { 'data-reason': reason.reason },
      el('td', {}, reason.reason),
      el('td', { class: 'num' }, String(reason.recent)),
      el('td', { class: 'num' }, String(reason.total))));
  fill($('rejections').tBodies[0], rows, 3, 'none since start');
  const latest = rejections.latest.map((r) =>
    el('li', {}, el('span', { class: 'muted' }, ago(r.ago_ms) + ' · '), r.op + ' · ',
      el('span', { class: 'reason' }, r.reason)));
  if (latest.length === 0) latest.push(el('li', { class: 'muted' }, 'none'));
  $('latest-rejections').replaceChildren(...latest);
}

function renderLatency(latency) {
  const stats = $('latency-stats');
  stats.replaceChildren(
    el('b', {}, String(latency.acquires)), ' acquires in ' + Math.round(latency.window_s / 60) + ' min · ',
    el('b', {}, String(latency.refused)), ' refused · median ', el('b', {}, ms(latency.p50_ms)),
    ' · p99 ', el('b', {}, ms(latency.p99_ms)), ' · max ', el('b', {}, ms(latency.max_ms)));
  drawChart($('chart'), latency);
}

// Per-second median and p99 on a log scale, acquires per second as bars.
function drawChart(chart, latency) {
  const width = 720;
  const height = 210;
  const left = 58;
  const right = 12;
  const top = 10;
  const bottom = 26;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const window = latency.window_s;
  const seconds = latency.seconds;
  const nodes = [];
  const x = (agoS) => left + plotW * (1 - agoS / window);

  const values = [];
  for (const s of seconds) {
    for (const v of [s.p50_ms, s.p99_ms]) if (v !== null && v > 0) values.push(v);
  }
  let lo = -1;
  let hi = 2;
  if (values.length > 0) {
    lo = Math.floor(Math.log10(Math.min(...values)));
    hi = Math.ceil(Math.log10(Math.max(...values)));
    if (hi - lo < 2) hi = lo + 2;
  }
  const y = (v) => top + plotH * (1 - (Math.log10(v) - lo) / (hi - lo));

  // Grid and axes.
  for (let d = lo; d <= hi; d++) {
    const yy = y(Math.pow(10, d)).toFixed(1);
    nodes.push(svg('line', { class: 'grid', x1: left, x2: width - right, y1: yy, y2: yy }));
    nodes.push(svg('text', { class: 'axis-label', x: left - 6, y: Number(yy) + 4, 'text-anchor': 'end' },
      decade(Math.pow(10, d))));
  }
  for (let t = 0; t <= window; t += 30) {
    const xx = x(t).toFixed(1);
    nodes.push(svg('text', {
      class: 'axis-label', x: xx, y: height - 8,
      'text-anchor': t === 0 ? 'end' : (t === window ? 'start' : 'middle'),
    }, t === 0 ? 'now' : '−' + t + ' s'));
  }

  // Acquires per second, scaled to the busiest second (bottom third).
  const busiest = Math.max(1, ...seconds.map((s) => s.acquires));
  const barW = Math.max(1, plotW / window - 1);
  for (const s of seconds) {
    const h = (plotH / 3) * (s.acquires / busiest);
    nodes.push(svg('rect', {
      class: 'count', x: (x(s.ago_s) - barW).toFixed(1), y: (top + plotH - h).toFixed(1),
      width: barW.toFixed(1), height: h.toFixed(1),
    }));
  }

  // Lines, broken where a second had no acquires.
  for (const [key, cls] of [['p99_ms', 'p99'], ['p50_ms', 'p50']]) {
    let path = '';
    let previous = null;
    for (const s of seconds) {
      const v = s[key];
      if (v === null || v <= 0) { previous = null; continue; }
      const point = x(s.ago_s - 0.5).toFixed(1) + ',' + y(v).toFixed(1);
      path += (previous !== null && previous === s.ago_s + 1 ? ' L' : ' M') + point;
      previous = s.ago_s;
      nodes.push(svg('circle', { class: 'dot-' + cls, cx: x(s.ago_s - 0.5).toFixed(1), cy: y(v).toFixed(1), r: 2 }));
    }
    if (path) nodes.push(svg('path', { class: cls, d: path.trim() }));
  }

  if (seconds.length === 0) {
    nodes.push(svg('text', { class: 'empty', x: left + plotW / 2, y: top + plotH / 2, 'text-anchor': 'middle' },
      'no acquires in the last ' + Math.round(window / 60) + ' minutes'));
  }
  chart.replaceChildren(...nodes);
}

function render(status) {
  const ready = $('ready');
  ready.className = 'pill ' + (status.ready ? 'pill-ready' : 'pill-not-ready');
  ready.textContent = status.ready ? 'ready' : 'not ready: a shard lacks a majority';
  renderRegions(status.regions);
  renderShards(status.shards);
  renderHeld(status.locks_held);
  renderContended(status.contended);
  renderRejections(status.rejections);
  renderLatency(status.acquire_latency);
  const c = status.coordinator;
  $('about').textContent = ' · globallock ' + c.version + ' · up ' + duration(c.uptime_s) +
    ' · access control ' + (c.access_control ? 'on' : 'off (open access)');
}

let lastUpdate = null;

function setUpdated(problem) {
  const updated = $('updated');
  if (problem) {
    document.body.classList.add('stale');
    updated.textContent = 'update failed (' + problem + ')' +
      (lastUpdate ? '; showing ' + lastUpdate.toLocaleTimeString() : '');
  } else {
    document.body.classList.remove('stale');
    updated.textContent = 'updated ' + lastUpdate.toLocaleTimeString();
  }
}

async function refresh() {
  try {
    const response = await fetch('status.json', {
      cache: 'no-store',
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
    });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      throw new Error(response.status + ' ' + detail);
    }
    render(await response.json());
    lastUpdate = new Date();
    setUpdated(null);
    document.body.dataset.loaded = 'true';
  } catch (error) {
    setUpdated(error.message || String(error));
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
