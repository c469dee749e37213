/* cdnlab live dashboard: plain JavaScript, no build step, nothing loaded from outside the testbed.
 *
 * Reads the server-sent-events stream GET /api/events (events `topology`, `state`, `event`) and posts
 * actions to POST /api/action with the X-Cdnlab-Token header. The wire format is contract/dashboard.py
 * (SCHEMA_VERSION 1): TopologyMsg, StateMsg, TimelineEvent, Action, ActionResult.
 *
 * For tests: window.cdnlab = {cy, lastState, lastTopology, events, method, connection, layout}.
 */
(() => {
  'use strict';

  const SCHEMA_VERSION = 1;
  const MAX_EVENTS = 200;
  const HEALTHS = ['up', 'failed', 'down', 'drained', 'unknown'];
  const METHODS = ['anycast', 'dns', 'redirect'];
  const ROLES = ['origin', 'edge', 'dns', 'resolver', 'redirector', 'client', 'router'];
  const ROLE_ORDER = ['origin', 'redirector', 'dns', 'resolver', 'edge', 'router', 'client'];
  const SERVE_COLOURS = 8;
  const STALE_AFTER_S = 5;

  const $ = (sel, root = document) => root.querySelector(sel);

  /** A DOM element; attribute values are set as text (never parsed as HTML). */
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  const cdnlab = {
    cy: null,
    lastState: null,
    lastTopology: null,
    events: [],
    method: 'anycast',
    connection: 'connecting',
    layout: null,
  };
  window.cdnlab = cdnlab;

  const tokenMeta = document.querySelector('meta[name="cdnlab-token"]');
  let token = tokenMeta ? tokenMeta.content : '';
  if (token.includes('{{')) token = ''; // the page was opened without the server filling it in

  let nodeIndex = new Map(); // id -> NodeView
  let linkIndex = new Map(); // id -> LinkInfo
  let edgeColour = new Map(); // edge name -> palette index for the serves arrows
  let lastStateAt = 0; // Date.now() when the last state arrived
  let versionWarned = false;

  // ---------------------------------------------------------------- formatting

  function fmtNum(x, digits = 1) {
    if (x === null || x === undefined || Number.isNaN(x)) return '—';
    return String(Number(Number(x).toFixed(digits)));
  }
  function fmtRps(x) {
    if (x === null || x === undefined) return '—';
    return x >= 100 ? String(Math.round(x)) : Number(x).toFixed(1);
  }
  function fmtPct(ratio) {
    if (ratio === null || ratio === undefined) return '—';
    return `${Math.round(ratio * 100)} %`;
  }
  function fmtBytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
  }
  function fmtTime(unix) {
    return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
  }
  function linkText(l, down) {
    let t = `${l.a}–${l.b}: ${fmtNum(l.delay_ms, 2)} ms one-way`;
    if (l.bw_mbit) t += `, ${fmtNum(l.bw_mbit, 2)} Mbit/s`;
    if (l.loss_pct) t += `, ${fmtNum(l.loss_pct, 2)} % loss`;
    if (down) t += ' — DOWN';
    return t;
  }

  // ---------------------------------------------------------------- status lines

  const connEl = $('#conn');
  const lastStateEl = $('#last-state');
  const actionStatusEl = $('#action-status');

  function setConn(state) {
    cdnlab.connection = state;
    renderStatus();
  }

  function renderStatus() {
    const st = cdnlab.lastState;
    let state = cdnlab.connection;
    let text = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' }[state] || state;
    const age = lastStateAt ? (Date.now() - lastStateAt) / 1000 : null;
    if (state === 'live' && age !== null && age > STALE_AFTER_S) {
      state = 'stale';
      text = `live, no state for ${Math.round(age)} s`;
    }
    connEl.dataset.state = state;
    if (connEl.textContent !== text) connEl.textContent = text;
    lastStateEl.textContent = st ? `last state ${fmtTime(st.time)} (seq ${st.seq})` : 'no state yet';
    if (!token) lastStateEl.textContent += ' · no action token: actions will be refused';
  }
  setInterval(renderStatus, 1000);

  function showActionStatus(text, ok) {
    actionStatusEl.textContent = text;
    actionStatusEl.className = `action-status ${ok ? 'ok' : 'error'}`;
  }

  // ---------------------------------------------------------------- timeline

  const timelineEl = $('#timeline');
  const seenEvents = new Set();
  const eventKey = (ev) => `${ev.seq}|${ev.time}|${ev.kind}|${ev.host}|${ev.text}`;

  function addTimeline(ev, local = false) {
    const key = eventKey(ev);
    if (!local && seenEvents.has(key)) return; // replayed after a reconnect
    seenEvents.add(key);
    cdnlab.events.unshift(ev);
    while (cdnlab.events.length > MAX_EVENTS) seenEvents.delete(eventKey(cdnlab.events.pop()));
    const li = el(
      'li',
      { class: `kind-${ev.kind}${local ? ' local' : ''}`, 'data-kind': ev.kind, 'data-seq': ev.seq },
      el('time', { datetime: new Date(ev.time * 1000).toISOString(), text: fmtTime(ev.time) }),
      el('span', { class: 'kind', text: ev.kind }),
      ev.host ? el('span', { class: 'host', text: ev.host }) : null,
      el('span', { class: 'text', text: ev.text }),
    );
    timelineEl.prepend(li);
    while (timelineEl.children.length > MAX_EVENTS) timelineEl.lastElementChild.remove();
  }

  /** An error seen by the page itself (not from the server): timeline and status line. */
  function localError(text, host = null) {
    addTimeline({ seq: null, time: Date.now() / 1000, kind: 'error', text, host }, true);
    showActionStatus(text, false);
  }

  // ---------------------------------------------------------------- actions

  async function postAction(body, button) {
    const buttons = button ? [button] : [];
    for (const b of buttons) {
      b.disabled = true;
      b.setAttribute('aria-busy', 'true');
    }
    const what = [body.action, body.host || body.link || body.path].filter(Boolean).join(' ');
    try {
      const resp = await fetch('/api/action', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Cdnlab-Token': token },
        body: JSON.stringify(body),
      });
      let data = null;
      try {
        data = await resp.json();
      } catch (_) {
        data = null;
      }
      if (!resp.ok || !data || data.error !== undefined) {
        const reason = (data && data.error) || resp.statusText || 'no answer';
        localError(`${what}: refused (${resp.status}): ${reason}`, body.host || null);
        return false;
      }
      if (data.ok === false) {
        localError(`${what}: ${data.message}`, body.host || null);
        return false;
      }
      showActionStatus(`${what}: ${data.message || 'done'}`, true);
      return true;
    } catch (err) {
      localError(`${what}: the server could not be reached (${err.message})`, body.host || null);
      return false;
    } finally {
      for (const b of buttons) {
        b.disabled = false;
        b.removeAttribute('aria-busy');
      }
    }
  }

  // ---------------------------------------------------------------- the graph

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function cyStyle() {
    const v = cssVar;
    const style = [
      {
        selector: 'node',
        style: {
          label: 'data(label)',
          color: v('--fg'),
          'font-size': 20,
          'font-family': 'system-ui, DejaVu Sans, sans-serif',
          'text-valign': 'bottom',
          'text-halign': 'center',
          'text-margin-y': 5,
          'text-wrap': 'wrap',
          'text-outline-color': v('--bg'),
          'text-outline-width': 3,
          'border-width': 2,
          'border-color': v('--node-border'),
        },
      },
      {
        selector: 'node.switch',
        style: {
          shape: 'round-rectangle',
          width: 'data(w)',
          height: 40,
          'background-color': v('--switch'),
          color: v('--switch-fg'),
          'text-valign': 'center',
          'text-margin-y': 0,
          'text-outline-width': 0,
          'font-weight': 'bold',
        },
      },
      { selector: 'node.host', style: { shape: 'ellipse', width: 32, height: 32, 'background-color': v('--role-other') } },
      // host labels on the side away from their switch (classes set after each layout)
      { selector: 'node.lbl-top', style: { 'text-valign': 'top', 'text-margin-y': -5 } },
      { selector: 'node.lbl-left', style: { 'text-valign': 'center', 'text-halign': 'left', 'text-margin-x': -6, 'text-margin-y': 0 } },
      { selector: 'node.lbl-right', style: { 'text-valign': 'center', 'text-halign': 'right', 'text-margin-x': 6, 'text-margin-y': 0 } },
    ];
    for (const r of ROLES) style.push({ selector: `node.role-${r}`, style: { 'background-color': v(`--role-${r}`) } });
    style.push({ selector: 'node.role-edge', style: { width: 50, height: 50, 'border-width': 5, 'font-weight': 'bold' } });
    for (const h of HEALTHS) {
      style.push({ selector: `node.role-edge.${h}`, style: { 'background-color': v(`--health-${h}`) } });
    }
    style.push(
      { selector: 'node.role-edge.failed', style: { 'border-color': v('--health-failed'), 'border-style': 'double', 'border-width': 8 } },
      { selector: 'node.no-answer', style: { 'border-color': v('--health-failed'), 'border-style': 'dashed', 'border-width': 4 } },
      {
        selector: 'edge',
        style: { width: 3, 'line-color': v('--link'), 'curve-style': 'bezier' },
      },
      {
        selector: 'edge.backbone',
        style: {
          width: 5,
          label: 'data(label)',
          'font-size': 18,
          color: v('--fg'),
          'text-rotation': 'autorotate',
          'text-background-color': v('--bg'),
          'text-background-opacity': 0.9,
          'text-background-padding': 2,
        },
      },
      {
        selector: 'edge.link.down',
        style: { 'line-color': v('--health-failed'), 'line-style': 'dashed', 'line-dash-pattern': [12, 7], width: 5 },
      },
      {
        selector: 'edge.serves',
        style: {
          width: 3,
          'line-color': 'data(color)',
          'target-arrow-color': 'data(color)',
          'target-arrow-shape': 'triangle',
          'arrow-scale': 1.5,
          'line-style': 'dashed',
          'line-dash-pattern': [8, 5],
          'curve-style': 'unbundled-bezier',
          'control-point-distances': [40],
          'control-point-weights': [0.5],
          'z-index': 10,
        },
      },
      { selector: '.hover', style: { 'overlay-color': v('--focus'), 'overlay-opacity': 0.3, 'overlay-padding': 6 } },
      { selector: ':selected', style: { 'overlay-color': v('--focus'), 'overlay-opacity': 0.2, 'overlay-padding': 8 } },
    );
    return style;
  }

  const cyEl = $('#cy');
  const tooltipEl = $('#tooltip');
  const hoverInfoEl = $('#hover-info');
  const linkMenuEl = $('#link-menu');

  function initCy() {
    if (typeof window.cytoscape !== 'function') {
      localError('the graph library (/static/vendor/cytoscape.min.js) did not load; tables still work');
      return;
    }
    const cy = window.cytoscape({
      container: cyEl,
      style: cyStyle(),
      elements: [],
      minZoom: 0.1,
      maxZoom: 4,
      boxSelectionEnabled: false,
    });
    cdnlab.cy = cy;

    cy.on('mouseover', 'node, edge', (evt) => {
      const t = describe(evt.target);
      evt.target.addClass('hover');
      hoverInfoEl.textContent = t;
      showTip(t, evt.renderedPosition || elementPosition(evt.target));
    });
    cy.on('mouseout', 'node, edge', (evt) => {
      evt.target.removeClass('hover');
      hideTip();
    });
    cy.on('tap', 'edge.link', (evt) => openLinkMenu(evt.target.id(), evt.renderedPosition || elementPosition(evt.target)));
    cy.on('tap', 'node.role-edge', (evt) => flashRow(evt.target.id()));
    cy.on('tap', (evt) => {
      if (evt.target === cy) closeLinkMenu();
    });
    cy.on('pan zoom', hideTip);
    if (window.ResizeObserver) new ResizeObserver(() => cy.resize()).observe(cyEl);
  }

  function elementPosition(ele) {
    return ele.isNode() ? ele.renderedPosition() : ele.renderedMidpoint();
  }

  function showTip(text, pos) {
    tooltipEl.textContent = text;
    tooltipEl.hidden = false;
    const maxX = cyEl.clientWidth - tooltipEl.offsetWidth - 4;
    tooltipEl.style.left = `${Math.max(4, Math.min(pos.x + 14, maxX))}px`;
    tooltipEl.style.top = `${Math.max(4, pos.y + 14)}px`;
  }
  function hideTip() {
    tooltipEl.hidden = true;
  }

  function stateOfEdge(name) {
    const st = cdnlab.lastState;
    return st ? st.edges.find((e) => e.name === name) : undefined;
  }
  function stateOfClient(name) {
    const st = cdnlab.lastState;
    return st ? st.clients.find((c) => c.name === name) : undefined;
  }
  function linksDown() {
    return new Set(cdnlab.lastState ? cdnlab.lastState.links_down : []);
  }

  function clientAnswer(c, method) {
    const target = c[method];
    if (target) return method === 'dns' && c.dns_ttl !== null && c.dns_ttl !== undefined ? `${target} (ttl ${c.dns_ttl} s)` : target;
    return `no answer${c.errors && c.errors[method] ? `: ${c.errors[method]}` : ''}`;
  }

  /** The hover text of a graph element. */
  function describe(ele) {
    const id = ele.id();
    if (ele.isEdge()) {
      if (ele.hasClass('serves')) {
        const c = stateOfClient(ele.data('source'));
        return `${ele.data('source')} → ${ele.data('target')} by ${ele.data('method')}${c ? ` (${clientAnswer(c, ele.data('method'))})` : ''}`;
      }
      const l = linkIndex.get(id);
      return l ? linkText(l, linksDown().has(id)) : id;
    }
    const n = nodeIndex.get(id);
    if (!n) return id;
    if (n.kind === 'switch') {
      const hosts = [...nodeIndex.values()].filter((h) => h.switch === id).length;
      let t = `${id}: switch`;
      if (n.region) t += `, region ${n.region}`;
      if (n.lat !== null && n.lat !== undefined) t += `, ${fmtNum(n.lat, 2)}°, ${fmtNum(n.lon, 2)}°`;
      return `${t}, ${hosts} host${hosts === 1 ? '' : 's'}`;
    }
    let t = `${id}: ${n.role || 'host'}`;
    if (n.region) t += `, region ${n.region}`;
    if (n.ip) t += `, ${n.ip}`;
    if (n.switch) t += ` (on ${n.switch})`;
    const es = stateOfEdge(id);
    if (es) {
      t += `\n${healthText(es)}, ${fmtRps(es.rps)} req/s, hit ${fmtPct(es.hit_ratio)}`;
    }
    const cs = stateOfClient(id);
    if (cs) t += `\n${cdnlab.method}: ${clientAnswer(cs, cdnlab.method)}`;
    return t;
  }

  function healthText(es) {
    let t = es.health;
    if (es.failed) t += ` (${es.failed})`;
    if (es.reason) t += `: ${es.reason}`;
    return t;
  }

  function nodeLabel(n) {
    const es = stateOfEdge(n.id);
    if (!es) return n.id;
    const head = es.health === 'up' ? n.id : `${n.id} · ${es.health}`;
    return `${head}\n${fmtRps(es.rps)} rps · ${es.hit_ratio === null || es.hit_ratio === undefined ? '— hit' : `${Math.round(es.hit_ratio * 100)}% hit`}`;
  }

  /** The switch a host hangs off: its own field, else the first switch it has a link to. */
  function switchOf(n, topo) {
    if (n.switch && nodeIndex.has(n.switch)) return n.switch;
    for (const l of topo.links) {
      const other = l.a === n.id ? l.b : l.b === n.id ? l.a : null;
      if (other && nodeIndex.get(other) && nodeIndex.get(other).kind === 'switch') return other;
    }
    return null;
  }

  function hostOrder(a, b) {
    const ra = ROLE_ORDER.indexOf(a.role);
    const rb = ROLE_ORDER.indexOf(b.role);
    return (ra < 0 ? 99 : ra) - (rb < 0 ? 99 : rb) || a.id.localeCompare(b.id, undefined, { numeric: true });
  }

  /** Map positions: switches by longitude/latitude (equirectangular, x = lon, y = -lat, one scale for
   * both), each switch's hosts on a circle around it whose radius grows with their number. */
  function geoPositions(topo) {
    const pos = new Map();
    const switches = topo.nodes.filter((n) => n.kind === 'switch' && n.lat !== null && n.lat !== undefined);
    const hostsOf = new Map(switches.map((s) => [s.id, []]));
    const loose = [];
    for (const n of topo.nodes) {
      if (n.kind === 'switch') {
        if (!hostsOf.has(n.id)) loose.push(n);
        continue;
      }
      const sw = switchOf(n, topo);
      if (sw && hostsOf.has(sw)) hostsOf.get(sw).push(n);
      else loose.push(n);
    }
    const radius = (id) => Math.max(70, 28 * hostsOf.get(id).length);
    const lons = switches.map((s) => s.lon);
    const lats = switches.map((s) => s.lat);
    const span = Math.max(Math.max(...lons) - Math.min(...lons), Math.max(...lats) - Math.min(...lats));
    let scale = span > 0 ? 800 / span : 1;
    for (let i = 0; i < switches.length; i += 1) {
      for (let j = i + 1; j < switches.length; j += 1) {
        const d = Math.hypot(switches[i].lon - switches[j].lon, switches[i].lat - switches[j].lat);
        if (d > 0) scale = Math.max(scale, (radius(switches[i].id) + radius(switches[j].id) + 80) / d);
      }
    }
    if (span > 0) scale = Math.min(scale, 5000 / span);
    const taken = new Set();
    for (const s of switches) {
      let p = { x: s.lon * scale, y: -s.lat * scale };
      while (taken.has(`${Math.round(p.x)},${Math.round(p.y)}`)) p = { x: p.x + 2 * radius(s.id) + 80, y: p.y };
      taken.add(`${Math.round(p.x)},${Math.round(p.y)}`);
      pos.set(s.id, p);
      const hosts = hostsOf.get(s.id).sort(hostOrder);
      const r = radius(s.id);
      hosts.forEach((h, k) => {
        const a = -Math.PI / 2 + (2 * Math.PI * k) / hosts.length;
        pos.set(h.id, { x: p.x + r * Math.cos(a), y: p.y + r * Math.sin(a) });
      });
    }
    // nodes with no place on the map: a row under it
    const ys = [...pos.values()].map((p) => p.y);
    const xs = [...pos.values()].map((p) => p.x);
    const y0 = (ys.length ? Math.max(...ys) : 0) + 150;
    const x0 = xs.length ? Math.min(...xs) : 0;
    loose.forEach((n, k) => pos.set(n.id, { x: x0 + 90 * k, y: y0 }));
    return pos;
  }

  function buildGraph(topo) {
    const cy = cdnlab.cy;
    if (!cy) return;
    closeLinkMenu();
    hideTip();
    const elements = [];
    for (const n of topo.nodes) {
      const classes = n.kind === 'switch' ? ['switch'] : ['host', `role-${n.role || 'other'}`];
      if (n.role === 'edge') classes.push('unknown');
      elements.push({
        group: 'nodes',
        data: { id: n.id, label: n.id, w: Math.max(64, 12 * n.id.length + 24), role: n.role || null, kind: n.kind },
        classes: classes.join(' '),
      });
    }
    for (const l of topo.links) {
      if (!nodeIndex.has(l.a) || !nodeIndex.has(l.b)) {
        console.warn(`link ${l.id}: an end is not a node`);
        continue;
      }
      const backbone = nodeIndex.get(l.a).kind === 'switch' && nodeIndex.get(l.b).kind === 'switch';
      elements.push({
        group: 'edges',
        data: { id: l.id, source: l.a, target: l.b, label: backbone ? `${fmtNum(l.delay_ms, 2)} ms` : '' },
        classes: backbone ? 'link backbone' : 'link',
      });
    }
    cy.batch(() => {
      cy.elements().remove();
      cy.add(elements);
    });
    if (topo.geo) {
      const pos = geoPositions(topo);
      cdnlab.layout = 'geo';
      const layout = cy.layout({ name: 'preset', positions: (node) => pos.get(node.id()) || { x: 0, y: 0 }, fit: true, padding: 40 });
      layout.one('layoutstop', placeLabels);
      layout.run();
    } else {
      // start from a circle so that the force layout comes out the same on every load
      const nodes = cy.nodes();
      nodes.forEach((node, k) => {
        const a = (2 * Math.PI * k) / nodes.length;
        node.position({ x: 300 * Math.cos(a), y: 300 * Math.sin(a) });
      });
      cdnlab.layout = 'cose';
      const layout = cy.layout({
        name: 'cose',
        animate: false,
        randomize: false,
        fit: true,
        padding: 40,
        nodeRepulsion: () => 9000,
        idealEdgeLength: (edge) => (edge.hasClass('backbone') ? 140 : 60),
      });
      layout.one('layoutstop', placeLabels);
      layout.run();
    }
    cyEl.setAttribute(
      'aria-label',
      `Network graph of ${topo.name}: ${topo.nodes.filter((n) => n.kind === 'switch').length} switches, ` +
        `${topo.nodes.filter((n) => n.kind === 'host').length} hosts, ${topo.links.length} links. ` +
        'The tables below give the same information.',
    );
  }

  /** Each host's label on the side away from its switch, so that it does not cover the switch or its links. */
  function placeLabels() {
    const cy = cdnlab.cy;
    cy.batch(() => {
      cy.nodes('.host').forEach((node) => {
        node.removeClass('lbl-top lbl-left lbl-right');
        const n = nodeIndex.get(node.id());
        const sw = n && n.switch ? cy.getElementById(n.switch) : null;
        if (!sw || sw.empty()) return;
        const p = node.position();
        const q = sw.position();
        const a = Math.atan2(p.y - q.y, p.x - q.x);
        if (Math.sin(a) < -0.5) node.addClass('lbl-top');
        else if (Math.sin(a) <= 0.5) node.addClass(Math.cos(a) > 0 ? 'lbl-right' : 'lbl-left');
      });
    });
  }

  function updateGraph(st) {
    const down = new Set(st.links_down);
    for (const opt of linkSelect.options) {
      const l = linkIndex.get(opt.value);
      if (l) setText(opt, linkText(l, down.has(opt.value)));
    }
    const cy = cdnlab.cy;
    if (!cy) return;
    cy.batch(() => {
      cy.edges('.link').forEach((e) => {
        if (down.has(e.id())) e.addClass('down');
        else e.removeClass('down');
      });
      for (const es of st.edges) {
        const node = cy.getElementById(es.name);
        if (node.empty()) continue;
        for (const h of HEALTHS) if (h !== es.health) node.removeClass(h);
        node.addClass(es.health);
        const n = nodeIndex.get(es.name);
        if (n) node.data('label', nodeLabel(n));
      }
    });
    drawServes();
  }

  /** The dashed arrows client -> serving edge of the selected method (cytoscape edges of class serves). */
  function drawServes() {
    const cy = cdnlab.cy;
    if (!cy) return;
    const st = cdnlab.lastState;
    const method = cdnlab.method;
    const want = new Map();
    const noAnswer = new Set();
    if (st) {
      for (const c of st.clients) {
        if (cy.getElementById(c.name).empty()) continue;
        const target = c[method];
        if (target && cy.getElementById(target).nonempty()) want.set(`serves:${c.name}`, { source: c.name, target });
        else noAnswer.add(c.name);
      }
    }
    cy.batch(() => {
      cy.edges('.serves').forEach((e) => {
        const w = want.get(e.id());
        if (w && w.target === e.data('target') && e.data('method') === method) want.delete(e.id());
        else e.remove();
      });
      for (const [id, w] of want) {
        const idx = edgeColour.has(w.target) ? edgeColour.get(w.target) : SERVE_COLOURS - 1;
        cy.add({
          group: 'edges',
          data: { id, source: w.source, target: w.target, method, color: cssVar(`--serve-${idx % SERVE_COLOURS}`) },
          classes: 'serves',
        });
      }
      cy.nodes('.no-answer').forEach((n) => {
        if (!noAnswer.has(n.id())) n.removeClass('no-answer');
      });
      for (const id of noAnswer) cy.getElementById(id).addClass('no-answer');
    });
  }

  function recolourServes() {
    const cy = cdnlab.cy;
    if (!cy) return;
    cy.edges('.serves').remove();
    drawServes();
  }

  // link menu (click on a link)
  function openLinkMenu(linkId, pos) {
    const l = linkIndex.get(linkId);
    if (!l) return;
    $('#link-menu-title').textContent = linkText(l, linksDown().has(linkId));
    for (const b of linkMenuEl.querySelectorAll('button[data-action]')) b.dataset.link = linkId;
    linkMenuEl.hidden = false;
    const maxX = cyEl.clientWidth - linkMenuEl.offsetWidth - 4;
    const maxY = cyEl.clientHeight - linkMenuEl.offsetHeight - 4;
    linkMenuEl.style.left = `${Math.max(4, Math.min(pos.x + 10, maxX))}px`;
    linkMenuEl.style.top = `${Math.max(4, Math.min(pos.y + 10, maxY))}px`;
    linkMenuEl.querySelector('button[data-action]').focus();
  }
  function closeLinkMenu() {
    linkMenuEl.hidden = true;
  }
  linkMenuEl.addEventListener('click', async (e) => {
    const b = e.target.closest('button');
    if (!b) return;
    if (b.classList.contains('close')) {
      closeLinkMenu();
      return;
    }
    if (b.dataset.action && b.dataset.link) {
      if (await postAction({ action: b.dataset.action, link: b.dataset.link }, b)) closeLinkMenu();
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      closeLinkMenu();
      hideTip();
    }
  });

  function flashRow(name) {
    const row = document.getElementById(`edge-row-${name}`);
    if (!row) return;
    row.scrollIntoView({ block: 'nearest' });
    row.classList.add('flash');
    setTimeout(() => row.classList.remove('flash'), 1500);
  }

  // ---------------------------------------------------------------- tables and panels

  const edgesBody = $('#edges-body');
  const clientsBody = $('#clients-body');

  function removePlaceholder(tbody) {
    const p = tbody.querySelector('tr.placeholder');
    if (p) p.remove();
  }

  function edgeRow(name) {
    const kind = el(
      'select',
      { class: 'fail-kind', 'data-host': name, 'aria-label': `failure kind for ${name}` },
      el('option', { value: 'process', text: 'process' }),
      el('option', { value: 'host', text: 'host' }),
      el('option', { value: 'link', text: 'link' }),
    );
    const button = (action, label) =>
      el('button', { type: 'button', 'data-action': action, 'data-host': name, 'aria-label': `${label} ${name}`, text: label });
    return el(
      'tr',
      { id: `edge-row-${name}`, 'data-host': name },
      el('th', { scope: 'row', class: 'name', text: name }),
      el('td', { class: 'health' }),
      el('td', { class: 'rps num' }),
      el('td', { class: 'hit num' }),
      el('td', { class: 'bytes num' }),
      el('td', { class: 'cache num' }),
      el('td', { class: 'load num' }),
      el('td', { class: 'catchment' }),
      el(
        'td',
        { class: 'actions' },
        button('fail', 'fail'),
        kind,
        button('recover', 'recover'),
        button('drain', 'drain'),
        button('restore', 'restore'),
      ),
    );
  }

  function setText(cell, text) {
    if (cell.textContent !== text) cell.textContent = text;
  }

  function renderEdges(st) {
    removePlaceholder(edgesBody);
    const names = new Set(st.edges.map((e) => e.name));
    for (const row of [...edgesBody.querySelectorAll('tr[data-host]')]) if (!names.has(row.dataset.host)) row.remove();
    let prev = null;
    for (const es of st.edges) {
      let row = document.getElementById(`edge-row-${es.name}`);
      if (!row) row = edgeRow(es.name);
      // keep the server's order without re-inserting rows that are already in place (keeps focus)
      const want = prev ? prev.nextElementSibling : edgesBody.firstElementChild;
      if (want !== row) edgesBody.insertBefore(row, want);
      prev = row;
      row.className = `health-${es.health}`;
      row.dataset.health = es.health;
      const health = row.querySelector('td.health');
      const detail = [es.failed, es.reason].filter(Boolean).join(': ');
      if (health.dataset.health !== es.health || health.dataset.detail !== detail) {
        health.className = `health health-${es.health}`;
        health.dataset.health = es.health;
        health.dataset.detail = detail;
        health.replaceChildren(
          el('span', { class: `badge health-${es.health}`, text: es.health }),
          detail ? el('span', { class: 'detail', text: ` (${detail})` }) : '',
        );
      }
      setText(row.querySelector('td.rps'), fmtRps(es.rps));
      setText(row.querySelector('td.hit'), fmtPct(es.hit_ratio));
      setText(row.querySelector('td.bytes'), fmtBytes(es.bytes_served));
      setText(row.querySelector('td.cache'), fmtBytes(es.cache_bytes));
      setText(row.querySelector('td.load'), es.load === null || es.load === undefined ? '—' : fmtNum(es.load, 2));
      setText(row.querySelector('td.catchment'), es.catchment.length ? es.catchment.join(', ') : '—');
      row.querySelector('button[data-action="recover"]').classList.toggle('suggested', es.health === 'failed');
    }
  }

  edgesBody.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (!b || b.disabled) return;
    const host = b.dataset.host;
    const body = { action: b.dataset.action, host };
    if (body.action === 'fail') {
      const kind = edgesBody.querySelector(`select.fail-kind[data-host="${CSS.escape(host)}"]`);
      body.kind = kind ? kind.value : 'process';
    }
    if ((body.action === 'drain' || body.action === 'restore') && $('#service').value) body.service = $('#service').value;
    postAction(body, b);
  });

  function clientCell(c, method) {
    const target = c[method];
    const td = el('td', { class: `${method}${target ? '' : ' no-answer'}`, 'data-method': method, 'data-edge': target || '' });
    if (target) {
      td.append(target);
      if (method === 'dns' && c.dns_ttl !== null && c.dns_ttl !== undefined) {
        td.append(el('span', { class: 'muted ttl', text: ` (${c.dns_ttl} s)` }));
      }
    } else {
      td.append('—');
      const err = c.errors && c.errors[method];
      if (err) {
        td.title = err;
        td.append(el('span', { class: 'err', text: err }));
      }
    }
    if (method === cdnlab.method) td.classList.add('current');
    return td;
  }

  function renderClients(st) {
    removePlaceholder(clientsBody);
    // rows hold no controls, so they are rebuilt whenever a client's answers or the method change
    const sig = JSON.stringify([st.clients, cdnlab.method]);
    if (clientsBody.dataset.sig === sig) return;
    clientsBody.dataset.sig = sig;
    const rows = st.clients.map((c) =>
      el(
        'tr',
        { id: `client-row-${c.name}`, 'data-client': c.name },
        el('th', { scope: 'row', class: 'name', text: c.name }),
        el('td', { class: 'region', text: c.region || '—' }),
        ...METHODS.map((m) => clientCell(c, m)),
      ),
    );
    clientsBody.replaceChildren(...rows);
  }

  function markMethodColumn() {
    for (const th of document.querySelectorAll('#clients thead th[data-method]')) {
      th.classList.toggle('current', th.dataset.method === cdnlab.method);
    }
  }

  function renderExperiment(exp) {
    const panel = $('#experiment');
    if (!exp) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    $('#exp-name').textContent = exp.name;
    $('#exp-progress').value = exp.progress;
    $('#exp-pct').textContent = `${Math.round(exp.progress * 100)} %`;
    $('#exp-phase').textContent = exp.phase || '—';
    const rows = Object.entries(exp.figures).map(([k, val]) =>
      el(
        'tr',
        { 'data-figure': k },
        el('th', { scope: 'row', text: k }),
        el('td', { class: 'num', text: val === null ? '—' : typeof val === 'number' ? fmtNum(val, 3) : String(val) }),
      ),
    );
    $('#exp-figures tbody').replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- controls

  const methodEl = $('#method');
  try {
    const saved = localStorage.getItem('cdnlab.method');
    if (METHODS.includes(saved)) cdnlab.method = saved;
  } catch (_) {
    /* storage may be disabled */
  }
  methodEl.value = cdnlab.method;
  methodEl.addEventListener('change', () => {
    cdnlab.method = methodEl.value;
    try {
      localStorage.setItem('cdnlab.method', cdnlab.method);
    } catch (_) {
      /* storage may be disabled */
    }
    markMethodColumn();
    if (cdnlab.lastState) renderClients(cdnlab.lastState);
    drawServes();
  });
  markMethodColumn();

  function setupMethods(methods) {
    for (const opt of methodEl.options) {
      const off = methods.length > 0 && !methods.includes(opt.value);
      opt.disabled = off;
      opt.textContent = off ? `${opt.value} (not in this topology)` : opt.value;
    }
    if (methods.length && !methods.includes(cdnlab.method)) {
      cdnlab.method = methods[0];
      methodEl.value = cdnlab.method;
      markMethodColumn();
    }
  }

  function setupService(anycast) {
    const sel = $('#service');
    sel.replaceChildren(...anycast.map((a) => el('option', { value: a, text: a })));
    $('#service-row').hidden = anycast.length < 2;
  }

  const linkSelect = $('#link-select');
  function setupLinks(links) {
    const current = linkSelect.value;
    linkSelect.replaceChildren(...links.map((l) => el('option', { value: l.id, text: linkText(l, false) })));
    if (linkIndex.has(current)) linkSelect.value = current;
  }
  $('#link-form').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (!b || !linkSelect.value) return;
    b.dataset.link = linkSelect.value;
    postAction({ action: b.dataset.action, link: linkSelect.value }, b);
  });

  const purgeHosts = $('#purge-hosts');
  function setupPurgeHosts(edges) {
    const checked = new Set([...purgeHosts.querySelectorAll('input:checked')].map((i) => i.value));
    purgeHosts.replaceChildren(
      ...edges.map((name) =>
        el(
          'label',
          {},
          el('input', { type: 'checkbox', class: 'purge-host', value: name, checked: checked.has(name) }),
          name,
        ),
      ),
    );
  }
  $('#purge-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('#purge-path');
    const path = input.value.trim();
    if (!path.startsWith('/')) {
      input.setAttribute('aria-invalid', 'true');
      showActionStatus('purge: the path must start with /', false);
      input.focus();
      return;
    }
    input.removeAttribute('aria-invalid');
    const hosts = [...purgeHosts.querySelectorAll('input:checked')].map((i) => i.value);
    const body = { action: 'purge', path };
    if (hosts.length) body.hosts = hosts;
    postAction(body, e.target.querySelector('button[data-action="purge"]'));
  });

  const themeBtn = $('#theme');
  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
    themeBtn.setAttribute('aria-pressed', String(theme === 'light'));
    themeBtn.textContent = theme === 'light' ? 'Dark theme' : 'Light theme';
    if (cdnlab.cy) {
      cdnlab.cy.style(cyStyle());
      recolourServes();
    }
  }
  themeBtn.addEventListener('click', () => {
    const theme = document.documentElement.dataset.theme === 'light' ? 'dark' : 'light';
    try {
      localStorage.setItem('cdnlab.theme', theme);
    } catch (_) {
      /* storage may be disabled */
    }
    applyTheme(theme);
  });
  $('#fit').addEventListener('click', () => cdnlab.cy && cdnlab.cy.fit(undefined, 40));

  // ---------------------------------------------------------------- messages

  function checkVersion(msg, what) {
    if (msg.version !== undefined && msg.version !== SCHEMA_VERSION && !versionWarned) {
      versionWarned = true;
      localError(`the server speaks dashboard schema ${msg.version} (${what}); this page knows ${SCHEMA_VERSION}`);
    }
  }

  function onTopology(topo) {
    checkVersion(topo, 'topology');
    const same = cdnlab.lastTopology && JSON.stringify(cdnlab.lastTopology) === JSON.stringify(topo);
    cdnlab.lastTopology = topo;
    nodeIndex = new Map(topo.nodes.map((n) => [n.id, n]));
    linkIndex = new Map(topo.links.map((l) => [l.id, l]));
    const edges = topo.nodes.filter((n) => n.role === 'edge').map((n) => n.id);
    edgeColour = new Map(edges.map((name, i) => [name, i]));
    // the server's title may already name the topology
    $('#topo-name').textContent = $('#title').textContent.includes(topo.name) ? '' : `· ${topo.name}`;
    setupMethods(topo.methods || []);
    setupService(topo.anycast || []);
    setupLinks(topo.links);
    setupPurgeHosts(edges);
    // a read-only view (during `cdnlab run --web`: the experiment owns the network) has no buttons
    document.body.classList.toggle('read-only', topo.actions === false);
    if (!same) buildGraph(topo); // a reconnect sends the same topology again: keep the user's pan and zoom
    if (cdnlab.lastState) onState(cdnlab.lastState, true);
  }

  function onState(st, replay = false) {
    checkVersion(st, 'state');
    cdnlab.lastState = st;
    if (!replay) lastStateAt = Date.now();
    updateGraph(st);
    renderEdges(st);
    renderClients(st);
    renderExperiment(st.experiment);
    renderStatus();
  }

  function handle(evt, fn) {
    let msg;
    try {
      msg = JSON.parse(evt.data);
    } catch (err) {
      localError(`a ${evt.type} message that is not JSON: ${err.message}`);
      return;
    }
    try {
      fn(msg);
    } catch (err) {
      console.error(err);
      localError(`could not show a ${evt.type} message: ${err.message}`);
    }
  }

  let source = null;
  let retryMs = 1000;
  let retryTimer = null;

  function connect() {
    if (source) source.close();
    source = new EventSource('/api/events');
    source.onopen = () => {
      retryMs = 1000;
      setConn('live');
    };
    source.onerror = () => {
      setConn('reconnecting');
      // the browser retries by itself unless the server answered with an error: then the stream is
      // CLOSED and the page reconnects, backing off up to 15 s
      if (source.readyState === EventSource.CLOSED && !retryTimer) {
        retryTimer = setTimeout(() => {
          retryTimer = null;
          connect();
        }, retryMs);
        retryMs = Math.min(retryMs * 2, 15000);
      }
    };
    source.addEventListener('topology', (e) => handle(e, onTopology));
    source.addEventListener('state', (e) => handle(e, (st) => onState(st)));
    source.addEventListener('event', (e) => handle(e, (ev) => addTimeline(ev)));
  }

  let savedTheme = null;
  try {
    savedTheme = localStorage.getItem('cdnlab.theme');
  } catch (_) {
    /* storage may be disabled */
  }
  if (savedTheme === 'light' || savedTheme === 'dark') document.documentElement.dataset.theme = savedTheme;
  applyTheme(document.documentElement.dataset.theme || 'dark');
  initCy();
  renderStatus();
  connect();
})();
