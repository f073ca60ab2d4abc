// The herd's live view: one WebSocket to /v1/events on the node that served this page.
// The first message draws the herd and the clients; each tick moves the points that were
// updated and refreshes this node's link states and rates. Nothing is fetched from anywhere
// but this node.
"use strict";

const NS = "http://www.w3.org/2000/svg";
const MAX_POINTS = 10000;
const MAX_UPDATES = 8;
const $ = (id) => document.getElementById(id);

const state = {
  herd: null,
  peers: [],
  links: new Map(), // node -> Map(neighbor -> its state as that node sees it)
  reachable: new Map(), // node -> true (its feed is open) | false (it cannot be reached)
  points: new Map(), // client -> circle
  hist: [], // { at, counts, updates } of recent ticks
  updates: 0, // records received since the page opened
};

function x(lng) {
  return (lng + 180) * 2;
}
function y(lat) {
  return (90 - lat) * 2;
}

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// Nodes around a ring in the order of a walk along the links from this node, so that a
// ring-shaped herd (the default) is drawn without crossing lines.
function ringOrder(herd) {
  const byName = new Map(herd.nodes.map((n) => [n.name, n]));
  const order = [];
  const seen = new Set();
  let at = byName.get(herd.node) ?? herd.nodes[0];
  while (at) {
    order.push(at);
    seen.add(at.name);
    const next = at.neighbors.find((m) => !seen.has(m));
    at = next !== undefined
      ? byName.get(next)
      : herd.nodes.find((n) => !seen.has(n.name));
  }
  return order;
}

function drawHerd() {
  const svg = $("herd");
  svg.replaceChildren();
  const nodes = ringOrder(state.herd);
  const pos = new Map();
  nodes.forEach((n, i) => {
    const a = (2 * Math.PI * i) / nodes.length - Math.PI / 2;
    pos.set(n.name, [Math.cos(a) * 88, Math.sin(a) * 82]);
  });
  const self = state.herd.node;
  state.links.set(self, new Map(state.peers.map((p) => [p.name, p.state])));
  for (const n of nodes) {
    for (const m of n.neighbors) {
      if (n.name > m) continue;
      // Each end says how it sees the link; the worse of the two is drawn.
      const seen = [
        state.links.get(n.name)?.get(m),
        state.links.get(m)?.get(n.name),
      ]
        .filter((v) => v !== undefined);
      let cls = "unknown";
      for (const v of ["down", "catching-up", "up"]) {
        if (seen.includes(v)) {
          cls = v;
          break;
        }
      }
      const [x1, y1] = pos.get(n.name);
      const [x2, y2] = pos.get(m);
      const line = el("line", {
        x1,
        y1,
        x2,
        y2,
        class: cls,
        "data-link": `${n.name}-${m}`,
      }, svg);
      el("title", {}, line).textContent = `${n.name} — ${m}: ${cls}`;
    }
  }
  for (const n of nodes) {
    const [cx, cy] = pos.get(n.name);
    el("circle", {
      cx,
      cy,
      r: 25,
      "data-node": n.name,
      class: n.name === self
        ? "self"
        : state.reachable.get(n.name) === false
        ? "down"
        : state.reachable.get(n.name)
        ? ""
        : "unknown",
    }, svg);
    const t = el("text", { x: cx, y: cy }, svg);
    t.textContent = n.name;
    t.setAttribute("class", "node-label");
  }
  const list = $("peers");
  list.replaceChildren();
  for (const p of state.peers) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = `${self} → ${p.name}`;
    const st = document.createElement("span");
    st.className = `state ${p.state}`;
    st.textContent = p.state;
    li.append(name, st);
    list.appendChild(li);
  }
}

function place(rec, fresh) {
  if (!Number.isFinite(rec.latitude) || !Number.isFinite(rec.longitude)) return;
  let c = state.points.get(rec.client);
  if (!c) {
    if (state.points.size >= MAX_POINTS) {
      const [oldest, circle] = state.points.entries().next().value;
      circle.remove();
      state.points.delete(oldest);
    }
    c = el("circle", { r: 3.4 }, $("points"));
    el("title", {}, c);
  } else {
    state.points.delete(rec.client); // re-insert: newest last
  }
  state.points.set(rec.client, c);
  c.setAttribute("cx", x(rec.longitude).toFixed(2));
  c.setAttribute("cy", y(rec.latitude).toFixed(2));
  c.setAttribute("data-client", rec.client);
  c.firstChild.textContent = `${rec.client} ${rec.location} via ${rec.server}`;
  if (fresh) {
    c.classList.remove("fresh");
    void c.getBoundingClientRect();
    c.classList.add("fresh");
  }
  $("clients").textContent = String(state.points.size);
}

function addUpdate(rec) {
  const li = document.createElement("li");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = rec.client;
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = ` ${rec.location} via ${rec.server}`;
  li.append(who, where);
  const list = $("updates");
  list.prepend(li);
  while (list.children.length > MAX_UPDATES) list.lastChild.remove();
}

// Rates over the last few seconds of ticks, so a quiet second does not read as zero.
const RATE_WINDOW_MS = 5000;
function rates(counts, records) {
  const now = performance.now();
  const prev = state.hist.at(-1);
  state.updates += records;
  state.hist.push({ at: now, counts, updates: state.updates });
  while (state.hist.length > 2 && now - state.hist[1].at > RATE_WINDOW_MS) {
    state.hist.shift();
  }
  const first = state.hist[0];
  if (prev && first !== state.hist.at(-1)) {
    const s = Math.max(0.001, (now - first.at) / 1000);
    const per = (a, b) => String(Math.round((a - b) / s));
    $("rate-iamat").textContent = per(counts.iamat, first.counts.iamat);
    $("rate-whatsat").textContent = per(counts.whatsat, first.counts.whatsat);
    $("rate-updates").textContent = per(state.updates, first.updates);
  }
  $("clients").textContent = String(counts.clients);
}

function onMessage(ev) {
  const msg = JSON.parse(ev.data);
  if (msg.type === "hello") {
    state.herd = msg.herd;
    state.peers = msg.peers;
    $("node").textContent = msg.herd.node;
    document.title = `herd · ${msg.herd.node}`;
    drawHerd();
    for (const n of msg.herd.nodes) {
      if (n.name !== msg.herd.node) watchNode(n);
    }
    for (const rec of msg.clients) place(rec, false);
    rates(msg.counts, 0);
  } else if (msg.type === "tick") {
    state.peers = msg.peers;
    drawHerd();
    for (const rec of msg.records) {
      place(rec, true);
      addUpdate(rec);
    }
    rates(msg.counts, msg.records.length);
  }
}

// Every other node that serves HTTP is asked for its own links only (`?only=peers`), so
// the whole herd's link states show; a node that cannot be reached is drawn as down.
const watching = new Set();
function watchNode(node) {
  if (!node.http || watching.has(node.name)) return;
  watching.add(node.name);
  let wait = 500;
  const open = () => {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${node.http}/v1/events?only=peers`);
    ws.onopen = () => (wait = 500);
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      state.links.set(
        node.name,
        new Map(msg.peers.map((p) => [p.name, p.state])),
      );
      state.reachable.set(node.name, true);
      if (state.herd) drawHerd();
    };
    ws.onclose = () => {
      state.links.delete(node.name);
      state.reachable.set(node.name, false);
      if (state.herd) drawHerd();
      setTimeout(open, wait);
      wait = Math.min(wait * 2, 10000);
    };
  };
  open();
}

let backoff = 500;
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/v1/events`);
  ws.onopen = () => {
    backoff = 500;
    $("live").classList.add("on");
  };
  ws.onmessage = onMessage;
  ws.onclose = () => {
    $("live").classList.remove("on");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}
connect();
