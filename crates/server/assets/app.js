// lemming's dashboard: reads the org through /api, and keeps itself up to date
// from the event stream (/api/events). No framework, no build step.
// Everything that comes from the org (names, bodies, errors) is inserted as
// text (textContent), never as HTML.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);

  // What the page's policy blocked (nothing, when the page is right), kept for the console and the tests.
  const violations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    violations.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`);
    console.warn("blocked by the Content-Security-Policy:", e.effectiveDirective, e.blockedURI);
  });

  // ------------------------------------------------------------ helpers --

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "style") for (const [p, val] of Object.entries(v)) e.style.setProperty(p, val);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  /** A list from an answer that is a list, or an object holding one. */
  function listOf(v, ...keys) {
    if (Array.isArray(v)) return v;
    if (v && typeof v === "object") {
      for (const k of keys) if (Array.isArray(v[k])) return v[k];
    }
    return [];
  }

  /** A message from a list entry that is a message or wraps one. */
  const msgOf = (m) => (m && m.message && typeof m.message === "object" ? m.message : m);
  const recipients = (to) => (Array.isArray(to) ? to.join(", ") : String(to ?? ""));
  const fmtCredits = (x) => (typeof x === "number" ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(2)) : "–");
  const fmtTime = (t) => {
    const d = new Date(t);
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  };

  class HttpError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  /** Calls the API (the cookie authenticates); a 401 shows the login banner. */
  async function api(path, opts = {}) {
    const r = await fetch(path, { credentials: "same-origin", ...opts });
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = text; }
    if (r.status === 401) showLoggedOut();
    if (!r.ok) throw new HttpError(r.status, body);
    return body;
  }

  function showLoggedOut() {
    const b = $("#banner");
    b.replaceChildren(
      "Not signed in. Open the login link printed by ",
      el("code", { text: "lemming serve" }), " (or ", el("code", { text: "lemming run --http" }),
      ") in this browser: it looks like ", el("code", { text: "http://127.0.0.1:7878/login?code=…" }), ".");
    b.hidden = false;
    setConn("down", "signed out");
  }

  function showError(what, e) {
    if (e && e.status === 401) return;
    const b = $("#banner");
    b.replaceChildren(`${what}: ${e && e.message ? e.message : e}`);
    b.hidden = false;
    clearTimeout(showError.t);
    showError.t = setTimeout(() => { if (!b.textContent.startsWith("Not signed in")) b.hidden = true; }, 8000);
  }

  /** Runs `f` at most once per `ms`, at the end of a burst. */
  function debounce(f, ms) {
    let t = null;
    return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
  }

  // -------------------------------------------------------------- state --

  const S = {
    status: null,
    agents: [],              // names, from status
    chart: { nodes: [], edges: [] },
    ledger: [],
    runs: new Map(),         // "agent|turn" -> "ran" | "failed"
    feedIds: new Set(),
    cy: null,
    open: null,              // the agent whose page is open
    resumeText: "",
  };

  const STATES = {
    human: "--st-human", idle: "--st-idle", ready: "--st-ready", failing: "--st-failing",
    out_of_credits: "--st-bad", prompt_over_credits: "--st-failing", org_budget_spent: "--st-bad",
    invalid: "--st-bad", io_error: "--st-bad", provider_down: "--st-off", provider_error: "--st-off",
  };
  const stateVar = (s) => STATES[s] || "--st-idle";
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const stateColor = (s) => cssVar(stateVar(s)) || "#888";
  const LEGEND = [["human", "human"], ["idle", "idle"], ["ready", "ready"], ["failing", "failing"], ["out_of_credits", "no credits / invalid"], ["provider_down", "provider down"]];

  // --------------------------------------------------------------- tabs --

  const tabs = [...document.querySelectorAll(".tabs [role=tab]")];
  function selectTab(id, focus) {
    for (const t of tabs) {
      const on = t.id === id;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      if (on && focus) t.focus();
    }
    if (id === "tab-overview" && S.cy) { S.cy.resize(); S.cy.fit(undefined, 30); }
    if (id === "tab-usage") drawUsage();
    if (id === "tab-messages" && !$("#results").children.length) search();
    if (id === "tab-dead") loadDead();
  }
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => selectTab(t.id));
    t.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        const n = tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
        selectTab(n.id, true);
        e.preventDefault();
      }
    });
  });
  selectTab("tab-overview");

  // --------------------------------------------------------------- theme --

  function theme() {
    const t = document.documentElement.dataset.theme;
    if (t) return t;
    return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function setTheme(t) {
    document.documentElement.dataset.theme = t;
    try { localStorage.setItem("lemming-theme", t); } catch { /* private mode */ }
    restyle();
  }
  try {
    const saved = localStorage.getItem("lemming-theme");
    if (saved === "dark" || saved === "light") document.documentElement.dataset.theme = saved;
  } catch { /* private mode */ }
  $("#theme").addEventListener("click", () => setTheme(theme() === "dark" ? "light" : "dark"));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => restyle());

  /** Colours drawn by script follow the theme. */
  function restyle() {
    $("#theme").setAttribute("aria-pressed", String(theme() === "dark"));
    if (S.cy) { S.cy.style(cyStyle()).update(); colourNodes(); }
    renderLegend();
    if (!$("#view-usage").hidden) drawUsage();
  }

  function renderLegend() {
    $("#legend").replaceChildren(...LEGEND.map(([s, label]) =>
      el("span", {}, el("i", { style: { background: stateColor(s) } }), label)));
  }

  // -------------------------------------------------------------- chart --

  function cyStyle() {
    const fg = cssVar("--fg"), line = cssVar("--line"), card = cssVar("--card"), accent = cssVar("--accent");
    return [
      { selector: "node", style: {
        "background-color": "data(color)", label: "data(id)", color: fg, "font-size": 12, "font-weight": 600,
        "text-valign": "bottom", "text-margin-y": 5, width: 30, height: 30,
        "border-width": 3, "border-color": card, "text-outline-width": 0,
        "text-background-color": card, "text-background-opacity": 0.85, "text-background-padding": 2, "text-background-shape": "roundrectangle",
      } },
      { selector: "node.open", style: { "border-color": accent, "border-width": 4 } },
      { selector: "node.pulse", style: { width: 10, height: 10, "background-color": accent, label: "", "border-width": 0, "z-index": 99 } },
      { selector: "edge", style: {
        width: 1.5, "line-color": line, "target-arrow-color": line, "target-arrow-shape": "triangle",
        "curve-style": "bezier", "arrow-scale": 0.9, opacity: 0.9,
      } },
      { selector: "edge.hot", style: { width: 3, "line-color": accent, "target-arrow-color": accent } },
    ];
  }

  function drawChart() {
    if (typeof cytoscape !== "function") { $("#chart").textContent = "The graph library did not load."; return; }
    const names = new Set([...S.chart.nodes.map((n) => (typeof n === "string" ? n : n.name || n.id)), ...S.agents]);
    const states = new Map((S.status ? S.status.agents : []).map((a) => [a.name, a.state]));
    const elements = [];
    for (const n of names) if (n) elements.push({ group: "nodes", data: { id: n, color: stateColor(states.get(n)) } });
    for (const e of S.chart.edges) {
      if (names.has(e.from) && names.has(e.to)) elements.push({ group: "edges", data: { id: `${e.from}->${e.to}`, source: e.from, target: e.to } });
    }
    if (!S.cy) {
      S.cy = cytoscape({
        container: $("#chart"), elements, style: cyStyle(), wheelSensitivity: 0.3,
        minZoom: 0.3, maxZoom: 1.6, boxSelectionEnabled: false, autoungrabify: false,
      });
      S.cy.on("tap", "node", (ev) => { if (!ev.target.hasClass("pulse")) openAgent(ev.target.id()); });
      let frame = 0;
      new ResizeObserver(() => {
        cancelAnimationFrame(frame);
        frame = requestAnimationFrame(() => { S.cy.resize(); S.cy.fit(undefined, 30); });
      }).observe($("#chart"));
    } else {
      S.cy.elements().remove();
      S.cy.add(elements);
    }
    layout();
  }

  function layout() {
    const roots = S.cy.nodes().filter((n) => states(n.id()) === "human");
    const opts = roots.length
      ? { name: "breadthfirst", directed: true, roots, spacingFactor: 1.1, padding: 30, animate: false }
      : { name: "circle", padding: 30, animate: false };
    S.cy.layout(opts).run();
    S.cy.fit(undefined, 30);
  }
  const states = (name) => (S.status ? (S.status.agents.find((a) => a.name === name) || {}).state : undefined);

  function colourNodes() {
    if (!S.cy || !S.status) return;
    for (const a of S.status.agents) {
      const n = S.cy.getElementById(a.name);
      if (n.nonempty()) n.data("color", stateColor(a.state));
    }
  }

  /** A dot travels along the edge from → to. */
  function pulse(from, to) {
    if (!S.cy) return;
    const a = S.cy.getElementById(from), b = S.cy.getElementById(to);
    if (a.empty() || b.empty()) return;
    const edge = S.cy.getElementById(`${from}->${to}`);
    if (edge.nonempty()) { edge.addClass("hot"); setTimeout(() => edge.removeClass("hot"), 900); }
    if (matchMedia("(prefers-reduced-motion: reduce)").matches) return;
    const dot = S.cy.add({ group: "nodes", classes: "pulse", data: { id: `pulse-${Math.random()}` }, position: { ...a.position() } });
    dot.ungrabify();
    dot.animate({ position: { ...b.position() } }, { duration: 700, easing: "ease-in-out-sine", complete: () => dot.remove() });
  }

  // ------------------------------------------------------------- status --

  async function loadStatus() {
    const asked = performance.now();
    try {
      S.status = await api("/api/status");
    } catch (e) { showError("Cannot read the status", e); return; }
    const st = S.status;
    S.agents = st.agents.map((a) => a.name);
    $("#turn").textContent = `turn ${st.turn}`;
    // A status asked for before the last pause or resume must not undo it.
    showDaemon(asked >= (S.pauseChanged || 0) ? st.daemon : { ...st.daemon, paused: S.paused });
    $("#spent").textContent = st.budget ? `spent ${fmtCredits(st.spent)} of ${fmtCredits(st.budget.budget)}` : `spent ${fmtCredits(st.spent)}`;
    $("#dead-count").textContent = st.dead_letters ? String(st.dead_letters) : "";
    showConfigProblems(st.problems || []);
    renderAgents();
    colourNodes();
    fillAgentPickers();
  }

  /** The config files' problems, in the header (the daemon uses their last good versions meanwhile). */
  function showConfigProblems(problems) {
    const p = $("#config");
    p.hidden = !problems.length;
    p.textContent = `${problems.length} config problem${problems.length === 1 ? "" : "s"}`;
    p.title = problems.map((x) => {
      const file = x.file || x.path || "";
      return `${file}${x.line ? `:${x.line}` : ""}: ${x.message || ""}`;
    }).join("\n");
  }

  function showDaemon(d) {
    const p = $("#daemon");
    p.classList.toggle("paused", !!d.paused);
    p.classList.toggle("running", !!d.running && !d.paused);
    p.textContent = d.paused ? "paused" : d.running ? "running" : "daemon stopped";
    const b = $("#pause");
    b.textContent = d.paused ? "Resume" : "Pause";
    b.setAttribute("aria-pressed", String(!!d.paused));
    if (S.paused !== !!d.paused) S.pauseChanged = performance.now();
    S.paused = !!d.paused;
  }

  function renderAgents() {
    // Unchanged rows are left alone, so a turn does not take the focus away.
    const sig = JSON.stringify(S.status.agents);
    if (sig === S.agentsSig) return;
    S.agentsSig = sig;
    const focused = document.activeElement && document.activeElement.closest("#agents tr[data-agent]");
    const keep = focused ? focused.dataset.agent : null;
    const rows = S.status.agents.map((a) => {
      const left = a.credits ? a.credits.left : null;
      const budget = a.credits ? a.credits.budget : null;
      const share = budget > 0 && left !== null ? Math.max(0, Math.min(1, left / budget)) : null;
      const tr = el("tr", { "data-agent": a.name, onclick: (e) => { if (e.target.tagName !== "BUTTON") openAgent(a.name); } },
        el("td", {}, el("button", { class: "linkish", type: "button", onclick: () => openAgent(a.name), text: a.name }),
          a.title ? el("div", { class: "sub", text: a.title }) : null),
        el("td", {}, el("span", { class: "badge", style: { "--c": `var(${stateVar(a.state)})` }, text: a.state.replaceAll("_", " ") }),
          a.problem ? el("div", { class: "sub", text: a.problem }) : null),
        el("td", { class: "num" }, a.state === "human" ? "–" : fmtCredits(left),
          share !== null && a.state !== "human" ? el("div", { class: `bar${share < 0.15 ? " low" : ""}` }, el("i", { style: { width: `${(share * 100).toFixed(0)}%` } })) : null),
        el("td", { class: "num", text: String(a.unread) }),
        el("td", { class: "num", text: a.last_run_turn === null || a.last_run_turn === undefined ? "never" : `turn ${a.last_run_turn}` }));
      return tr;
    });
    $("#agents tbody").replaceChildren(...rows);
    if (keep) {
      const b = [...document.querySelectorAll("#agents tr[data-agent] button")].find((x) => x.textContent === keep);
      if (b) b.focus();
    }
  }

  function fillAgentPickers() {
    const to = $("#send-to"), keep = to.value || "manager";
    const people = new Set(S.status.agents.filter((a) => a.state === "human").map((a) => a.name));
    const names = S.agents.filter((n) => !people.has(n));
    to.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    if (names.includes(keep)) to.value = keep;
    const qa = $("#q-agent"), k2 = qa.value;
    qa.replaceChildren(el("option", { value: "", text: "every agent" }), ...S.agents.map((n) => el("option", { value: n, text: n })));
    qa.value = k2;
  }

  $("#pause").addEventListener("click", togglePause);
  async function togglePause() {
    const b = $("#pause");
    b.disabled = true;
    // Decided before the request: its own `paused`/`resumed` event may
    // arrive before its answer does.
    const pause = !S.paused;
    try {
      await api(pause ? "/api/pause" : "/api/resume", { method: "POST" });
      showDaemon({ ...(S.status ? S.status.daemon : {}), paused: pause });
    } catch (e) { showError(pause ? "Cannot pause" : "Cannot resume", e); }
    b.disabled = false;
  }

  // --------------------------------------------------------------- feed --

  const feed = $("#feed");
  const FEED_MAX = 200;

  function feedItem(m, live) {
    const li = el("li", { "data-id": m.id },
      el("div", { class: "meta" },
        el("span", { class: "who", text: m.from }), "→", el("span", { class: "who", text: recipients(m.to) }),
        m.kind && m.kind !== "message" ? el("span", { class: "kind", text: m.kind }) : null,
        m.priority && m.priority !== "normal" ? el("span", { class: "kind", text: m.priority }) : null,
        el("span", { class: "muted", text: m.turn !== undefined ? `turn ${m.turn}` : "" }),
        el("span", { class: "muted", text: fmtTime(m.created_at) })),
      m.subject ? el("div", { class: "sub", text: m.subject }) : null,
      el("div", { class: "body", text: m.body ?? "" }));
    // A feed entry opens its thread, by click or from the keyboard.
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    li.title = "Open the thread";
    li.addEventListener("click", () => showThread(m));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); showThread(m); } });
    if (!live) li.style.animation = "none";
    return li;
  }

  function addToFeed(m, live) {
    if (!m || !m.id || S.feedIds.has(m.id)) return;
    S.feedIds.add(m.id);
    const empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    feed.prepend(feedItem(m, live));
    while (feed.children.length > FEED_MAX) {
      S.feedIds.delete(feed.lastElementChild.dataset.id);
      feed.lastElementChild.remove();
    }
  }

  async function loadFeed() {
    try {
      const got = listOf(await api("/api/messages?limit=50"), "messages", "items");
      const ms = got.map(msgOf).filter((m) => m && m.id);
      ms.sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
      for (const m of ms) addToFeed(m, false);
      if (!feed.children.length) feed.replaceChildren(el("li", { class: "empty", text: "No messages yet. Send one below." }));
    } catch (e) { showError("Cannot read the messages", e); }
  }

  const MAX_BODY_FETCHES = 6;
  async function onDelivered(ev) {
    pulse(ev.from, ev.to);
    if (S.feedIds.has(ev.id)) return;
    const bare = { id: ev.id, from: ev.from, to: ev.to, body: "", created_at: ev.at, turn: ev.turn };
    // A turn of a large org delivers thousands at once: the feed shows the
    // last few, so only a few bodies are asked for at a time.
    if ((S.fetching || 0) >= MAX_BODY_FETCHES) { addToFeed(bare, true); return; }
    S.fetching = (S.fetching || 0) + 1;
    try {
      addToFeed(msgOf(await api(`/api/messages/${encodeURIComponent(ev.id)}`)), true);
    } catch {
      addToFeed(bare, true);
    } finally {
      S.fetching -= 1;
    }
  }


  // ----------------------------------------------------------- send box --

  $("#send").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#send-result"), btn = $("#send-btn");
    const body = $("#send-body").value;
    if (!body.trim()) { out.className = "bad"; out.textContent = "write a message first"; return; }
    btn.disabled = true;
    out.className = ""; out.textContent = "sending…";
    try {
      const r = await api("/api/send", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ to: $("#send-to").value, body, priority: $("#send-priority").value }),
      });
      out.className = "ok";
      out.textContent = `sent ${r.id}`;
      $("#send-body").value = "";
    } catch (err) {
      out.className = "bad";
      out.textContent = err.message;
    }
    btn.disabled = false;
  });
  $("#send-body").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("#send").requestSubmit(); }
  });

  // ----------------------------------------------------------- messages --

  $("#search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("#q-agent").addEventListener("change", () => search());

  let searches = 0;
  async function search() {
    const mine = ++searches;
    const q = $("#q").value.trim(), agent = $("#q-agent").value;
    const p = new URLSearchParams({ limit: "100" });
    if (q) p.set("q", q);
    if (agent) p.set("agent", agent);
    const list = $("#results");
    try {
      const ms = listOf(await api(`/api/messages?${p}`), "messages", "items").map(msgOf).filter((m) => m && m.id);
      if (mine !== searches) return; // a newer search is under way: its answer is the one to show
      list.dataset.q = q;
      ms.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
      list.replaceChildren(...ms.map((m) => el("li", {},
        el("button", { type: "button", "data-id": m.id, onclick: (ev) => { markCurrent(ev.currentTarget); showThread(m); } },
          el("div", { class: "meta" }, el("strong", { text: `${m.from} → ${recipients(m.to)}` }),
            el("span", { text: m.turn !== undefined ? `turn ${m.turn}` : "" }), el("span", { text: fmtTime(m.created_at) }),
            m.kind && m.kind !== "message" ? el("span", { class: "kind", text: m.kind }) : null),
          m.subject ? el("div", { class: "sub", text: m.subject }) : null,
          el("div", { class: "body", text: m.body ?? "" })))));
      if (!ms.length) list.replaceChildren(el("li", { class: "empty", text: q ? `No message matches “${q}”.` : "No messages." }));
    } catch (e) {
      list.replaceChildren(el("li", { class: "empty", text: `Cannot search: ${e.message}` }));
    }
  }

  function markCurrent(btn) {
    for (const b of document.querySelectorAll("#results button[aria-current]")) b.removeAttribute("aria-current");
    btn.setAttribute("aria-current", "true");
  }

  async function showThread(m) {
    if ($("#view-messages").hidden) selectTab("tab-messages");
    const id = m.thread || m.id;
    $("#thread-id").textContent = id;
    const box = $("#thread");
    try {
      const t = await api(`/api/threads/${encodeURIComponent(id)}`);
      const items = listOf(t, "messages");
      box.replaceChildren(...items.map((tm) => {
        const x = msgOf(tm);
        const depth = Math.min(tm.depth || 0, 8);
        return el("li", { class: x.id === m.id ? "hit" : "", style: { "margin-left": `${depth * 18}px` } },
          el("div", { class: "meta" }, el("strong", { text: `${x.from} → ${recipients(x.to)}` }),
            el("span", { text: x.turn !== undefined ? `turn ${x.turn}` : "" }), el("span", { text: fmtTime(x.created_at) }),
            tm.unread_by && tm.unread_by.length ? el("span", { text: `unread by ${tm.unread_by.join(", ")}` }) : null),
          x.subject ? el("div", { class: "sub", text: x.subject }) : null,
          el("div", { class: "body", text: x.body ?? "" }));
      }));
      if (!items.length) box.replaceChildren(el("li", { class: "empty", text: "This thread is empty." }));
    } catch (e) {
      box.replaceChildren(el("li", { class: "empty", text: `Cannot read the thread: ${e.message}` }));
    }
  }

  // -------------------------------------------------------------- usage --

  async function loadLedger() {
    try {
      S.ledger = listOf(await api("/api/ledger"), "entries", "ledger");
    } catch (e) { showError("Cannot read the ledger", e); return; }
    if (!$("#view-usage").hidden) drawUsage();
  }

  const PALETTE = ["#2f6fde", "#d9822b", "#1f8a4c", "#c8312f", "#7b52c9", "#0f9fb0", "#b0558f", "#6b7d1a", "#8a5a2b", "#4c5bd4"];
  const colourOf = (name) => {
    const i = S.agents.indexOf(name);
    return PALETTE[(i < 0 ? [...name].reduce((h, c) => h + c.charCodeAt(0), 0) : i) % PALETTE.length];
  };

  function drawUsage() { drawPlot(); drawHeatmap(); }

  /** Cumulative credits spent per agent over turns, as SVG lines. */
  function drawPlot() {
    const box = $("#plot");
    const charges = S.ledger.filter((e) => (e.kind || "charge") === "charge" && typeof e.cost === "number");
    if (!charges.length) { box.replaceChildren(el("p", { class: "muted", text: "No credits spent yet." })); $("#plot-legend").replaceChildren(); return; }
    const byAgent = new Map();
    let maxTurn = 0, minTurn = Infinity, maxY = 0;
    for (const c of charges) {
      if (!byAgent.has(c.agent)) byAgent.set(c.agent, new Map());
      const m = byAgent.get(c.agent);
      m.set(c.turn, (m.get(c.turn) || 0) + c.cost);
      maxTurn = Math.max(maxTurn, c.turn); minTurn = Math.min(minTurn, c.turn);
    }
    const series = [];
    for (const [agent, perTurn] of byAgent) {
      let sum = 0;
      const turns = [...perTurn.keys()].sort((a, b) => a - b);
      // Each line starts at 0 the turn before its first charge.
      const pts = [[Math.max(0, turns[0] - 1), 0], ...turns.map((t) => { sum += perTurn.get(t); return [t, sum]; })];
      maxY = Math.max(maxY, sum);
      series.push({ agent, pts });
    }
    const W = 900, H = 240, L = 54, R = 16, T = 12, B = 30;
    const t0 = Math.max(0, minTurn - 1), span = Math.max(1, maxTurn - t0);
    const digits = maxY >= 100 ? 0 : maxY >= 1 ? 2 : Math.min(6, 1 - Math.floor(Math.log10(maxY || 1)));
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (v) => T + (1 - v / (maxY || 1)) * (H - T - B);
    const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Credits spent over turns, per agent" });
    for (let i = 0; i <= 4; i++) {
      const v = (maxY * i) / 4;
      g.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v ? v.toFixed(digits) : "0"));
    }
    const step = Math.max(1, Math.ceil(span / 10));
    for (let t = Math.ceil(t0); t <= maxTurn; t += step) g.append(svg("text", { x: x(t), y: H - 10, "text-anchor": "middle" }, String(t)));
    g.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }),
      svg("text", { x: W - R, y: H - B - 6, "text-anchor": "end" }, "turn"));
    for (const s of series) {
      const c = colourOf(s.agent);
      // Flat after its last charge: the total stays what it was.
      const last = s.pts[s.pts.length - 1];
      const line = last[0] < maxTurn ? [...s.pts, [maxTurn, last[1]]] : s.pts;
      const d = line.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      g.append(svg("path", { d, fill: "none", stroke: c, "stroke-width": 2.2, "stroke-linejoin": "round" },
        svg("title", {}, `${s.agent}: ${fmtCredits(s.pts[s.pts.length - 1][1])} credits`)));
      for (const [t, v] of s.pts.slice(1)) g.append(svg("circle", { cx: x(t), cy: y(v), r: 3, fill: c }, svg("title", {}, `${s.agent}, turn ${t}: ${fmtCredits(v)}`)));
    }
    box.replaceChildren(g);
    $("#plot-legend").replaceChildren(...series.map((s) => el("span", {}, el("i", { style: { background: colourOf(s.agent) } }), s.agent)));
  }

  /** Agent × turn: who ran (shade by cost) or failed, for the last turns. */
  function drawHeatmap() {
    const box = $("#heatmap");
    const cells = new Map();
    let maxTurn = S.status ? S.status.turn : 0, maxCost = 0;
    for (const c of S.ledger) {
      if ((c.kind || "charge") !== "charge") continue;
      const k = `${c.agent}|${c.turn}`;
      const v = cells.get(k) || { cost: 0, failed: false };
      v.cost += c.cost || 0;
      cells.set(k, v);
      maxTurn = Math.max(maxTurn, c.turn);
    }
    for (const [k, what] of S.runs) {
      const v = cells.get(k) || { cost: 0, failed: false };
      if (what === "failed") v.failed = true; else v.ran = true;
      cells.set(k, v);
      maxTurn = Math.max(maxTurn, Number(k.split("|")[1]));
    }
    for (const v of cells.values()) maxCost = Math.max(maxCost, v.cost);
    const agents = S.agents.filter((n) => !S.status || (S.status.agents.find((a) => a.name === n) || {}).state !== "human");
    if (!agents.length || !maxTurn) { box.replaceChildren(el("p", { class: "muted", text: "No turn has run yet." })); $("#heat-legend").replaceChildren(); return; }
    const N = Math.min(maxTurn, 60), first = maxTurn - N + 1;
    const cw = 22, ch = 24, L = 110, T = 8, B = 24;
    const W = L + N * cw + 10, H = T + agents.length * ch + B;
    const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "Activity of each agent at each turn" });
    const ok = cssVar("--ok"), bad = cssVar("--bad"), empty = cssVar("--hover");
    agents.forEach((a, r) => {
      g.append(svg("text", { x: L - 8, y: T + r * ch + ch / 2 + 4, "text-anchor": "end" }, a));
      for (let i = 0; i < N; i++) {
        const t = first + i, v = cells.get(`${a}|${t}`);
        let fill = empty, opacity = 1, what = "idle";
        if (v && v.failed) { fill = bad; what = "failed"; } else if (v && (v.cost > 0 || v.ran)) {
          fill = ok; opacity = 0.35 + 0.65 * (maxCost ? v.cost / maxCost : 1); what = `ran, ${fmtCredits(v.cost)} credits`;
        }
        g.append(svg("rect", { class: "cell", x: L + i * cw, y: T + r * ch, width: cw, height: ch, rx: 2, fill, "fill-opacity": opacity },
          svg("title", {}, `${a}, turn ${t}: ${what}`)));
      }
    });
    const step = Math.max(1, Math.ceil(N / 12));
    for (let i = 0; i < N; i += step) g.append(svg("text", { x: L + i * cw + cw / 2, y: H - 8, "text-anchor": "middle" }, String(first + i)));
    box.replaceChildren(g);
    $("#heat-legend").replaceChildren(
      el("span", {}, el("i", { style: { background: ok } }), "ran (darker: more credits)"),
      el("span", {}, el("i", { style: { background: bad } }), "failed"),
      el("span", {}, el("i", { style: { background: empty } }), "idle"));
  }

  // --------------------------------------------------------------- dead --

  async function loadDead() {
    try {
      const ds = listOf(await api("/api/dead"), "dead", "letters", "items");
      ds.sort((a, b) => (b.turn || 0) - (a.turn || 0));
      $("#dead tbody").replaceChildren(...ds.map((d) => {
        const r = d.reason || {};
        return el("tr", {},
          el("td", { class: "num", text: d.turn ?? "" }),
          el("td", {}, el("span", { class: "badge", style: { "--c": "var(--st-bad)" }, text: typeof r === "string" ? r : r.code || JSON.stringify(r) })),
          el("td", { text: d.mailbox ?? "" }),
          el("td", { text: Array.isArray(d.to) ? d.to.join(", ") : d.to ?? "" }),
          el("td", { class: "detail", text: d.detail ?? "" }),
          el("td", { class: "mono", text: d.id ?? "" }));
      }));
      if (!ds.length) $("#dead tbody").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No dead letters: every message was delivered." })));
    } catch (e) { showError("Cannot read the dead letters", e); }
  }

  // --------------------------------------------------------- agent page --

  const drawer = $("#agent"), ta = $("#resume");
  let lastFocus = null;

  async function openAgent(name) {
    if (!S.open) lastFocus = document.activeElement;
    S.open = name;
    if (S.cy) { S.cy.nodes().removeClass("open"); S.cy.getElementById(name).addClass("open"); }
    $("#agent-name").textContent = name;
    $("#agent-title").textContent = "";
    $("#resume-status").textContent = "";
    setProblems([]);
    drawer.hidden = false;
    $("#agent-close").focus();
    await Promise.all([loadResume(name), loadInspect(name), loadLogs(name)]);
  }

  function closeAgent() {
    drawer.hidden = true;
    S.open = null;
    if (S.cy) S.cy.nodes().removeClass("open");
    if (lastFocus && document.contains(lastFocus)) lastFocus.focus();
  }
  $("#agent-close").addEventListener("click", closeAgent);

  async function loadResume(name) {
    try {
      const r = await fetch(`/api/agents/${encodeURIComponent(name)}/resume`, { credentials: "same-origin" });
      if (r.status === 401) showLoggedOut();
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      S.resumeText = await r.text();
      if (S.open !== name) return;
      ta.value = S.resumeText;
      ta.scrollTop = 0;
      renderGutter();
    } catch (e) {
      ta.value = "";
      $("#resume-status").className = "bad";
      $("#resume-status").textContent = `cannot read the resume: ${e.message}`;
      renderGutter();
    }
  }

  function renderGutter() {
    const n = ta.value.split("\n").length;
    const bad = new Set(S.problemLines || []);
    const rows = [];
    for (let i = 1; i <= n; i++) rows.push(el("div", { class: bad.has(i) ? "error" : "", "data-line": i, text: String(i) }));
    $("#gutter").replaceChildren(...rows);
    syncScroll();
  }

  function syncScroll() {
    $("#gutter").scrollTop = ta.scrollTop;
    const marks = $("#marks");
    for (const m of marks.children) m.style.top = `${8 + (Number(m.dataset.line) - 1) * 20 - ta.scrollTop}px`;
  }
  ta.addEventListener("input", () => { renderGutter(); });
  ta.addEventListener("scroll", syncScroll);
  ta.addEventListener("keydown", (e) => {
    if (e.key === "s" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); saveResume(); }
    if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && ta.selectionStart !== ta.selectionEnd) return;
  });

  /** Shows each problem at its line: the gutter, a band over the line, and its message under the line's text. */
  function setProblems(problems) {
    S.problemLines = problems.map((p) => p.line).filter((l) => Number.isInteger(l));
    // The band over each line, with its message at the line's right end.
    $("#marks").replaceChildren(...problems.filter((p) => Number.isInteger(p.line)).map((p) =>
      el("div", { "data-line": p.line }, el("span", { text: String(p.message || "").split("\n")[0] }))));
    const lines = ta.value.split("\n");
    $("#problems").replaceChildren(...problems.map((p) => {
      const hasLine = Number.isInteger(p.line) && p.line >= 1;
      const src = hasLine ? lines[p.line - 1] ?? "" : null;
      const col = Number.isInteger(p.column) && p.column >= 1 ? p.column : 1;
      const where = `${p.file || "resume.toml"}${hasLine ? `, line ${p.line}` : ""}${hasLine && p.column ? `, column ${p.column}` : ""}`;
      return el("li", { "data-line": hasLine ? p.line : null },
        el("div", { class: "where" },
          hasLine ? el("button", { class: "linkish", type: "button", onclick: () => goToLine(p.line, col), text: where }) : where),
        hasLine ? el("pre", {},
          el("span", { class: "src", text: `${String(p.line).padStart(4)} | ${src}` }), "\n",
          el("span", { class: "caret", text: `${" ".repeat(4)} | ${" ".repeat(col - 1)}^` })) : null,
        el("div", { class: "msg", text: p.message || "invalid" }),
        p.help ? el("div", { class: "help", text: `help: ${p.help}` }) : null);
    }));
    renderGutter();
  }

  function goToLine(line, col) {
    const lines = ta.value.split("\n");
    let pos = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
    pos += Math.max(0, Math.min((col || 1) - 1, (lines[line - 1] || "").length));
    ta.focus();
    ta.setSelectionRange(pos, pos);
    ta.scrollTop = Math.max(0, (line - 4) * 20);
    syncScroll();
  }

  $("#resume-save").addEventListener("click", saveResume);
  $("#resume-revert").addEventListener("click", () => { ta.value = S.resumeText; setProblems([]); $("#resume-status").textContent = ""; });

  async function saveResume() {
    const name = S.open, st = $("#resume-status");
    if (!name) return;
    st.className = ""; st.textContent = "saving…";
    try {
      const r = await fetch(`/api/agents/${encodeURIComponent(name)}/resume`, {
        method: "PUT", credentials: "same-origin", headers: { "content-type": "application/toml" }, body: ta.value,
      });
      const text = await r.text();
      let body = null;
      try { body = JSON.parse(text); } catch { /* not JSON */ }
      if (r.status === 401) { showLoggedOut(); throw new Error("not signed in"); }
      if (r.status === 422) {
        const details = (body && body.error && body.error.details) || [];
        const problems = listOf(details, "problems");
        setProblems(problems.length ? problems : [{ message: body && body.error ? body.error.message : "invalid" }]);
        st.className = "bad";
        st.textContent = `not saved: ${problems.length || 1} problem${problems.length > 1 ? "s" : ""}`;
        if (S.problemLines.length) goToLine(S.problemLines[0], (problems.find((p) => p.line === S.problemLines[0]) || {}).column);
        return;
      }
      if (!r.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${r.status}`);
      S.resumeText = ta.value;
      setProblems([]);
      st.className = "ok"; st.textContent = "saved; the daemon uses it from the next turn";
      loadInspect(name);
    } catch (e) {
      st.className = "bad"; st.textContent = `not saved: ${e.message}`;
    }
  }

  async function loadInspect(name) {
    const dl = $("#details"), mem = $("#memory");
    try {
      const v = await api(`/api/agents/${encodeURIComponent(name)}`);
      if (S.open !== name) return;
      $("#agent-title").textContent = [v.title, v.description].filter(Boolean).join(" — ");
      const sched = v.schedule ? `every ${v.schedule.every} turn${v.schedule.every === 1 ? "" : "s"}${v.schedule.offset ? ` (offset ${v.schedule.offset})` : ""}, wakes ${typeof v.schedule.wake === "string" ? v.schedule.wake : JSON.stringify(v.schedule.wake)}` : "";
      const rows = [
        ["model", v.model || "(the org's default)"],
        ["schedule", sched],
        ["credits", v.credits ? `${fmtCredits(v.credits.left)} left of ${fmtCredits(v.credits.budget)} (spent ${fmtCredits(v.credits.spent)})` : ""],
        ["unread", `${v.unread ?? 0} unread, ${v.pending ?? 0} waiting to be routed`],
        ["sends to", (v.can_reach || []).join(", ") || "nobody"],
        ["reads from", (v.reached_by || []).join(", ") || "nobody"],
        ["tools", v.tools && v.tools.granted && v.tools.granted.length ? v.tools.granted.join(", ") : "none"],
        ["trouble", v.trouble ? (typeof v.trouble === "string" ? v.trouble : JSON.stringify(v.trouble)) : ""],
        ["problems", (v.problems || []).map((p) => p.message || JSON.stringify(p)).join("\n")],
      ].filter(([, val]) => val);
      dl.replaceChildren(...rows.flatMap(([k, val]) => [el("dt", { text: k }), el("dd", { text: val })]));
      const entries = Object.entries(v.memory || {});
      mem.replaceChildren(...(entries.length
        ? entries.flatMap(([k, val]) => [el("dt", { text: k }), el("dd", { text: typeof val === "string" ? val : JSON.stringify(val, null, 2) })])
        : [el("dd", { class: "muted", text: "Nothing remembered yet." })]));
    } catch (e) {
      dl.replaceChildren(el("dd", { class: "muted", text: `Cannot read the agent: ${e.message}` }));
      mem.replaceChildren();
    }
  }

  async function loadLogs(name) {
    const box = $("#logs");
    try {
      const v = await api(`/api/logs/${encodeURIComponent(name)}?n=50`);
      if (S.open !== name) return;
      const runs = listOf(v, "runs").slice().reverse();
      box.replaceChildren(...runs.map((r) => el("li", {},
        el("div", { class: "meta" },
          el("strong", { class: r.outcome === "failed" ? "fail" : "", text: `turn ${r.turn}: ${r.outcome}` }),
          ` · ${r.model || ""} · ${fmtCredits(r.cost)} credits · read ${(r.mail_read || []).length}, sent ${(r.sent || []).length}`),
        r.error ? el("div", { class: "fail", text: r.error }) : null,
        r.notes ? el("div", { class: "sub", text: r.notes }) : null)));
      if (!runs.length) box.replaceChildren(el("li", { class: "muted", text: "It has not run yet." }));
    } catch (e) {
      box.replaceChildren(el("li", { class: "muted", text: `Cannot read the logs: ${e.message}` }));
    }
  }

  // ------------------------------------------------------------- events --

  function setConn(cls, text) {
    const c = $("#conn");
    c.className = `conn ${cls}`;
    c.querySelector(".conn-text").textContent = text;
  }

  const refresh = debounce(() => {
    loadStatus();
    loadLedger();
    if (S.open) { loadInspect(S.open); loadLogs(S.open); }
  }, 120);
  const refreshDead = debounce(() => { if (!$("#view-dead").hidden) loadDead(); }, 200);

  function connect() {
    // After a closed stream, the page asks for what it missed itself (the
    // browser does so only for the reconnects it makes on its own).
    const es = new EventSource(S.lastEventId ? `/api/events?last_event_id=${encodeURIComponent(S.lastEventId)}` : "/api/events");
    S.es = es;
    es.addEventListener("open", () => setConn("live", "live"));
    es.addEventListener("error", async () => {
      if (es.readyState === EventSource.CLOSED) {
        setConn("down", "offline");
        // A closed stream may mean the cookie is missing: ask, then try again.
        try { await api("/api/status"); } catch { /* shown */ }
        if ($("#banner").hidden || !$("#banner").textContent.startsWith("Not signed in")) setTimeout(connect, 3000);
      } else {
        setConn("", "reconnecting…");
      }
    });
    const on = (name, f) => es.addEventListener(name, (m) => {
      if (m.lastEventId) S.lastEventId = m.lastEventId;
      let d = {};
      try { d = JSON.parse(m.data); } catch { return; }
      f(d);
    });
    on("turn_started", (d) => { $("#turn").textContent = `turn ${d.turn ?? "–"} running…`; });
    on("turn_committed", (d) => { if (d.turn !== undefined) $("#turn").textContent = `turn ${d.turn}`; refresh(); });
    on("delivered", (d) => onDelivered(d));
    on("ran", (d) => { S.runs.set(`${d.agent}|${d.turn}`, "ran"); });
    on("failed", (d) => { S.runs.set(`${d.agent}|${d.turn}`, "failed"); refresh(); });
    on("dead", () => { refresh(); refreshDead(); });
    on("charged", () => {});
    on("topped_up", () => refresh());
    on("tool_call", () => {});
    on("config_error", (d) => { showConfigProblems(d.problems || []); refresh(); });
    on("paused", () => showDaemon({ ...(S.status ? S.status.daemon : {}), paused: true }));
    on("resumed", () => showDaemon({ ...(S.status ? S.status.daemon : {}), paused: false }));
  }

  // ----------------------------------------------------------- keyboard --

  const help = $("#help");
  $("#help-btn").addEventListener("click", () => help.showModal());

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      if (help.open) return; // the dialog closes itself
      if (!drawer.hidden) { e.preventDefault(); closeAgent(); }
      return;
    }
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName) || e.target.isContentEditable;
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") { e.preventDefault(); selectTab("tab-messages"); $("#q").focus(); $("#q").select(); }
    else if (e.key >= "1" && e.key <= "4") { selectTab(tabs[Number(e.key) - 1].id, true); }
    else if (e.key === "s") { e.preventDefault(); selectTab("tab-overview"); $("#send-body").focus(); }
    else if (e.key === "p") { togglePause(); }
    else if (e.key === "t") { setTheme(theme() === "dark" ? "light" : "dark"); }
    else if (e.key === "?") { help.showModal(); }
  });

  // --------------------------------------------------------------- start --

  async function start() {
    renderLegend();
    restyle();
    await loadStatus();
    if (!S.status) { if ($("#banner").hidden) setConn("down", "offline"); }
    try {
      S.chart = await api("/api/chart");
    } catch (e) { showError("Cannot read the org chart", e); }
    drawChart();
    await Promise.all([loadFeed(), loadLedger(), loadDead()]);
    connect();
  }
  start();

  // For the browser test and for people at the console.
  window.lemming = { state: S, violations, openAgent, closeAgent, selectTab };
})();
