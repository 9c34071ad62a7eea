// duebell console: draws each page from the /v1 routes and sends every
// change through them, with the session's CSRF token. No build step, no
// library: plain DOM.
"use strict";

const T = window.T || {};
const t = (k) => T[k] || k;
const $ = (sel, root = document) => root.querySelector(sel);
const csrf = () => (document.querySelector('meta[name="csrf"]') || {}).content || "";

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  const type = r.headers.get("content-type") || "";
  if (type.includes("json")) data = await r.json();
  if (r.status === 401 && !path.startsWith("/v1/session")) {
    location.href = "/console/login?next=" + encodeURIComponent(location.pathname);
  }
  return { ok: r.ok, status: r.status, data };
}

const main = () => $("#main");
// Replaces a node's children; lists (as map() gives) are flattened.
function fill(node, ...kids) {
  node.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== ""));
}
function show(...nodes) {
  fill(main(), ...nodes);
}
function errorLine(res) {
  return el("p", { class: "error", role: "alert" }, (res.data && res.data.error) || t("error") + " " + res.status);
}
function debounce(fn, ms) {
  let h;
  return (...a) => {
    clearTimeout(h);
    h = setTimeout(() => fn(...a), ms);
  };
}

// ---- login ---------------------------------------------------------------
async function pageLogin() {
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const res = await api("POST", "/v1/session", { name: $("#login-name").value, password: $("#login-password").value });
    if (res.ok) {
      const next = new URLSearchParams(location.search).get("next") || "/console/";
      location.href = next.startsWith("/console") ? next : "/console/";
    } else {
      $("#login-error").textContent = res.status === 401 ? t("login.failed") : (res.data && res.data.error) || t("error");
    }
  });
}

// ---- today -----------------------------------------------------------------
async function pageHome() {
  const res = await api("GET", "/v1/status");
  if (!res.ok) return show(errorLine(res));
  const d = res.data;
  const rows = Object.entries(d).filter(([, v]) => typeof v !== "object");
  const nested = Object.entries(d).filter(([, v]) => v && typeof v === "object");
  show(
    el("h1", { text: t("nav.home") }),
    el("table", { class: "counts" }, rows.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: String(v) })))),
    nested.map(([k, v]) => el("div", { class: "panel" }, el("h2", { text: k }), el("pre", { text: JSON.stringify(v, null, 2) })))
  );
}

// ---- templates -------------------------------------------------------------
async function pageTemplates() {
  const res = await api("GET", "/v1/templates");
  if (!res.ok) return show(errorLine(res));
  const rows = res.data.templates.map((x) =>
    el("tr", {},
      el("td", { text: x.name }), el("td", { text: x.locale }), el("td", { text: x.channel }),
      el("td", { text: x.version || "" }),
      el("td", {}, el("a", { href: `/console/templates/${x.locale}/${x.name}/${x.channel}`, "data-template": `${x.locale}/${x.name}/${x.channel}` }, t("tpl.edit"))))
  );
  show(
    el("h1", { text: t("tpl.list") }),
    el("p", { class: "muted", id: "where" }, t("where.files") + " ", el("code", { text: res.data.dir })),
    el("table", {}, el("thead", {}, el("tr", {}, ["tpl.name", "tpl.locale", "tpl.channel", "tpl.version", ""].map((k) => el("th", { text: k ? t(k) : "" })))), el("tbody", {}, rows))
  );
}

function renderPreview(box, channel, res) {
  fill(box);
  const d = res.data || {};
  if (!res.ok) return box.append(errorLine(res));
  const problems = d.problems || [];
  const list = el("ul", { class: "problems", id: "problems" }, problems.map((p) => el("li", { class: "error", text: `${p.file}${p.line ? ":" + p.line : ""}: ${p.message}` })));
  box.append(el("h2", { text: t("tpl.preview") }));
  if (d.rendered && d.rendered.content) {
    const c = d.rendered.content;
    if (c.channel === "sms") {
      box.append(el("div", { class: "sms", id: "preview-body", text: c.body }));
      let count = `${c.count.units} ${t("tpl.chars")}, ${c.count.segments} ${t("tpl.parts")}`;
      if (c.china_count) count += `; ${c.china_count.segments} ${t("tpl.parts_cn")} (${c.china_count.units} ${t("tpl.chars")})`;
      box.append(el("p", { id: "preview-count", class: "muted", text: count }));
    } else {
      box.append(
        el("p", {}, el("strong", { text: t("tpl.subject") + ": " }), el("span", { id: "preview-subject", text: c.subject })),
        el("div", { class: "cols" },
          el("div", {}, el("h3", { text: t("tpl.text") }), el("div", { class: "email-text", id: "preview-body", text: c.text })),
          el("div", {}, el("h3", { text: t("tpl.html") }), el("iframe", { class: "email-html", sandbox: "", srcdoc: c.html, title: "HTML" })))
      );
    }
  } else if (d.render_error) {
    box.append(el("p", { class: "error", id: "preview-body", text: d.render_error }));
  }
  box.append(el("h3", { text: problems.length ? t("tpl.problems") : t("tpl.no_problems"), class: problems.length ? "error" : "ok", id: "problems-title" }), list);
  return problems.length;
}

async function pageEditor() {
  const [locale, name, channel] = document.body.dataset.arg.split("/");
  const base = `/v1/templates/${locale}/${name}/${channel}`;
  const res = await api("GET", base);
  if (!res.ok) return show(errorLine(res));
  let state = res.data;
  const areas = {};
  const editors = Object.entries(state.files).map(([file, text]) => {
    const area = el("textarea", { "data-file": file, id: "file-" + file.replace(/[^a-z0-9]/gi, "-"), rows: Math.max(6, text.split("\n").length + 1), spellcheck: "false" });
    area.value = text;
    areas[file] = area;
    return el("div", {}, el("label", { for: area.id, text: file }), area);
  });
  const sample = el("select", { id: "sample" }, state.samples.map((s) => el("option", { value: s, text: s })));
  const borrower = el("input", { id: "borrower", type: "text", placeholder: "B-1001" });
  const previewBox = el("div", { class: "panel", id: "preview", "aria-live": "polite" });
  const note = el("input", { id: "note", type: "text", size: 50 });
  const publish = el("button", { id: "publish", type: "button", disabled: true }, t("tpl.publish"));
  const status = el("p", { id: "publish-status", role: "status" });
  const history = el("div", { id: "versions" });
  const files = () => Object.fromEntries(Object.entries(areas).map(([f, a]) => [f, a.value]));
  const refresh = async () => {
    const body = { files: files() };
    if (borrower.value.trim()) body.borrower = borrower.value.trim();
    else body.sample = sample.value;
    const r = await api("POST", base + "/preview", body);
    const n = renderPreview(previewBox, channel, r);
    publish.disabled = !r.ok || n > 0 || !ME_CAN_EDIT();
  };
  const drawHistory = () => {
    fill(history, el("h2", { text: t("tpl.history") }),
      state.versions.map((v) => el("div", { class: "panel", "data-version": v.id },
        el("p", {}, el("strong", { text: `#${v.id} ` }), `${v.at} · ${v.actor} · ${v.summary} `, el("code", { text: v.template_version || "" })),
        v.diff.map((d) => el("pre", { class: "diff" }, el("div", { text: d.file }), d.lines.map(([k, l]) => el("div", { class: k === "+" ? "add" : k === "-" ? "del" : "", text: `${k} ${l}` })))),
        ME_CAN_EDIT() && v !== state.versions[0] ? el("button", { class: "secondary", type: "button", onclick: () => doRollback(v.id) }, t("tpl.rollback")) : null)));
  };
  const reload = async () => {
    const r = await api("GET", base);
    if (r.ok) {
      state = r.data;
      for (const [f, text] of Object.entries(state.files)) if (areas[f]) areas[f].value = text;
      drawHistory();
      refresh();
    }
  };
  const doRollback = async (id) => {
    const r = await api("POST", base + "/rollback", { version: id, base: state.base });
    status.textContent = r.ok ? `${t("tpl.published")} #${r.data.id}` : (r.status === 409 ? t("tpl.conflict") : (r.data && r.data.error) || t("error"));
    status.className = r.ok ? "ok" : "error";
    if (r.ok) await reload();
  };
  publish.addEventListener("click", async () => {
    publish.disabled = true;
    const r = await api("PUT", base, { files: files(), base: state.base, note: note.value });
    if (r.ok) {
      status.textContent = `${t("tpl.published")} #${r.data.id} (${r.data.template_version})`;
      status.className = "ok";
      note.value = "";
      await reload();
    } else {
      status.textContent = r.status === 409 ? t("tpl.conflict") : (r.data && r.data.error) || t("error");
      status.className = "error";
      if (r.data && r.data.problems) renderPreview(previewBox, channel, { ok: true, data: { problems: r.data.problems } });
    }
  });
  const later = debounce(refresh, 250);
  Object.values(areas).forEach((a) => a.addEventListener("input", later));
  sample.addEventListener("change", refresh);
  borrower.addEventListener("change", refresh);
  show(
    el("h1", { text: `${name} · ${locale} · ${channel}` }),
    el("div", { class: "cols" },
      el("div", {}, editors,
        el("p", {}, el("label", {}, t("tpl.sample") + " ", sample), " ", el("label", {}, t("tpl.borrower") + " ", borrower)),
        el("p", {}, el("label", {}, t("tpl.note") + " ", note), " ", publish), status),
      previewBox),
    history
  );
  drawHistory();
  refresh();
}
const ME_CAN_EDIT = () => ["editor", "admin"].includes((window.ME || {}).role);

// ---- settings --------------------------------------------------------------
function entryEditor(section, entries) {
  const box = el("div", { id: "section-" + section });
  const draw = () => {
    fill(box,
      entries.map((entry, i) => {
        const fields = Object.entries(entry).map(([k, v]) => {
          const kind = Array.isArray(v) ? "list" : v !== null && typeof v === "object" ? "object" : typeof v;
          const input = el("input", {
            type: kind === "number" ? "number" : "text",
            "data-section": section, "data-index": i, "data-field": k,
            value: kind === "list" ? v.join(", ") : kind === "object" ? JSON.stringify(v) : String(v),
          });
          input.addEventListener("input", () => {
            input.removeAttribute("aria-invalid");
            if (kind === "list") entry[k] = input.value.split(",").map((s) => s.trim()).filter((s) => s);
            else if (kind === "number") entry[k] = Number(input.value);
            else if (kind === "boolean") entry[k] = input.value.trim() === "true";
            else if (kind === "object") {
              try { entry[k] = JSON.parse(input.value); } catch (e) { input.setAttribute("aria-invalid", "true"); }
            } else entry[k] = input.value;
          });
          return el("label", {}, k + " ", input);
        });
        const add = el("input", { type: "text", placeholder: t("set.add_field"), size: 14, "aria-label": t("set.add_field") });
        add.addEventListener("change", () => {
          if (add.value.trim()) {
            entry[add.value.trim()] = [];
            draw();
          }
        });
        return el("fieldset", { class: "entry" }, el("legend", { text: entry.name || entry.id || `#${i + 1}` }), fields, add,
          el("button", { class: "secondary", type: "button", onclick: () => { entries.splice(i, 1); draw(); } }, t("set.remove")));
      }),
      el("button", { class: "secondary", type: "button", onclick: () => {
        const blank = {};
        for (const [k, v] of Object.entries(entries[0] || { name: "" })) blank[k] = Array.isArray(v) ? [] : typeof v === "number" ? 0 : "";
        entries.push(blank);
        draw();
      } }, t("set.add_rule")));
  };
  draw();
  return box;
}

async function pageSettings() {
  const res = await api("GET", "/v1/settings");
  if (!res.ok) return show(errorLine(res));
  const s = res.data;
  const change = () => ({ base: s.base, quiet_hours: s.quiet_hours, caps: s.caps, steps: s.steps, note: $("#set-note").value });
  const out = el("div", { id: "impact-result", "aria-live": "polite" });
  const saved = el("div", { id: "save-result", role: "status" });
  const problems = (r) => el("ul", { class: "problems" }, (r.data.problems || []).map((p) => el("li", { class: "error", text: `${p.key}: ${p.message}` })));
  const impact = el("button", { id: "impact", type: "button", class: "secondary", onclick: async () => {
    fill(out, el("p", { class: "muted", text: t("loading") }));
    const r = await api("POST", "/v1/settings/impact", change());
    if (!r.ok) return fill(out, errorLine(r), r.data && r.data.problems ? problems(r) : "");
    const w = r.data.would;
    fill(out, el("table", { class: "counts" },
      [["defer", "set.would_defer"], ["release", "set.would_release"], ["suppress", "set.would_suppress"], ["allow", "set.would_allow"]]
        .map(([k, label]) => el("tr", { "data-impact": k }, el("td", { text: String(w[k]) }), el("td", { text: t(label) })))));
  } }, t("set.impact"));
  const save = el("button", { id: "save", type: "button", disabled: !ME_CAN_EDIT(), onclick: async () => {
    const r = await api("PUT", "/v1/settings", change());
    if (r.ok) {
      s.base = r.data.base;
      fill(saved, el("p", { class: "ok", text: t("set.saved") }));
    } else {
      fill(saved, errorLine(r), r.data && r.data.problems ? problems(r) : "");
    }
  } }, t("set.save"));
  show(
    el("h1", { text: t("nav.settings") }),
    el("p", { class: "muted", id: "where" }, t("where.files") + " ", el("code", { text: s.file })),
    el("p", { class: "muted", text: t("set.lists") }),
    el("h2", { text: t("set.quiet") }), entryEditor("quiet_hours", s.quiet_hours),
    el("h2", { text: t("set.caps") }), entryEditor("caps", s.caps),
    el("h2", { text: t("set.steps") }), entryEditor("steps", s.steps),
    el("div", { class: "panel" }, impact, out),
    el("p", {}, el("label", {}, t("set.note") + " ", el("input", { id: "set-note", type: "text", size: 50 })), " ", save), saved
  );
}

// ---- borrowers -------------------------------------------------------------
async function pageBorrowers() {
  const q = el("input", { id: "q", type: "search", size: 36, "aria-label": t("bor.search"), placeholder: t("bor.search") });
  const results = el("div", { id: "results" });
  const timeline = el("div", { id: "timeline" });
  const find = async () => {
    const r = await api("GET", "/v1/borrowers?q=" + encodeURIComponent(q.value));
    if (!r.ok) return fill(results, errorLine(r));
    if (!r.data.borrowers.length) return fill(results, el("p", { text: t("bor.none") }));
    fill(results, el("table", {}, r.data.borrowers.map((b) => el("tr", {},
      el("td", {}, el("a", { href: "#" + b.borrower_id, "data-borrower": b.borrower_id, onclick: (e) => { e.preventDefault(); open(b.borrower_id); } }, b.borrower_id)),
      el("td", { text: b.name }), el("td", { text: b.contacts.map((c) => `${c.channel} ${c.address}`).join(", ") })))));
    if (r.data.borrowers.length === 1) open(r.data.borrowers[0].borrower_id);
  };
  const act = async (method, path, body, msg) => {
    const r = await api(method, path, body);
    msg.textContent = r.ok ? t("bor.done") + " " + JSON.stringify(r.data) : (r.data && r.data.error) || t("error");
    msg.className = r.ok ? "ok" : "error";
  };
  const open = async (id) => {
    const r = await api("GET", `/v1/borrowers/${encodeURIComponent(id)}/timeline`);
    if (!r.ok) return fill(timeline, errorLine(r));
    const msg = el("p", { role: "status" });
    const kind = el("select", { id: "hold-kind" }, ["promise_to_pay", "dispute", "hardship"].map((k) => el("option", { value: k, text: k })));
    const until = el("input", { id: "hold-until", type: "date" });
    const endId = el("input", { id: "hold-end", type: "number", size: 6 });
    const channel = el("select", { id: "opt-channel" }, ["sms", "email"].map((c) => el("option", { value: c, text: c })));
    fill(timeline,
      el("h2", { text: `${t("bor.timeline")}: ${id}` }),
      el("div", { class: "panel" },
        el("label", {}, t("bor.hold_kind") + " ", kind), " ", el("label", {}, t("bor.until") + " ", until), " ",
        el("button", { type: "button", id: "hold-add", onclick: () => act("POST", "/v1/holds", { borrower_id: id, kind: kind.value, until: until.value || undefined }, msg) }, t("bor.hold")), " ",
        el("label", {}, t("bor.end_hold") + " ", endId), " ",
        el("button", { type: "button", class: "secondary", onclick: () => act("DELETE", `/v1/holds/${endId.value}`, undefined, msg) }, "OK"), el("br"),
        el("label", {}, t("tpl.channel") + " ", channel), " ",
        el("button", { type: "button", id: "opt-out", onclick: () => act("POST", "/v1/opt-outs", { borrower_id: id, channel: channel.value }, msg) }, t("bor.opt_out")), " ",
        el("button", { type: "button", class: "secondary", id: "opt-in", onclick: () => act("DELETE", "/v1/opt-outs", { borrower_id: id, channel: channel.value }, msg) }, t("bor.opt_in")),
        msg),
      r.data.messages.map(({ message: m, events }) => el("div", { class: "panel", "data-message": m.id },
        el("p", {}, el("strong", { text: `#${m.id} ${m.step || ""} ${m.channel} ` }), `${t("bor.state")}: `, el("code", { text: m.state }), ` · ${m.reason || ""} · ${t("tpl.version")}: `, el("code", { class: "template-version", text: m.template_version || "" })),
        m.body ? el("div", { class: m.channel === "sms" ? "sms" : "email-text", text: m.body }) : null,
        el("ul", {}, events.map((e) => el("li", { text: `${e.at} ${e.state || e.kind || ""} ${e.reason || ""}` })))))
    );
  };
  q.addEventListener("keydown", (e) => { if (e.key === "Enter") find(); });
  show(el("h1", { text: t("nav.borrowers") }), el("p", {}, q, " ", el("button", { type: "button", id: "find", onclick: find }, t("bor.find"))), results, timeline);
  if (location.hash.length > 1) open(decodeURIComponent(location.hash.slice(1)));
}

// ---- operations ------------------------------------------------------------
async function pageOperations() {
  const [ops, unknown] = await Promise.all([api("GET", "/v1/operations"), api("GET", "/v1/messages?state=unknown")]);
  if (!ops.ok) return show(errorLine(ops));
  const msg = el("p", { role: "status" });
  const call = async (path, body) => {
    const r = await api("POST", path, body);
    msg.textContent = r.ok ? t("bor.done") : (r.data && r.data.error) || t("error");
    msg.className = r.ok ? "ok" : "error";
    if (r.ok) setTimeout(pageOperations, 300);
  };
  const d = ops.data;
  const list = unknown.ok ? unknown.data.messages || [] : [];
  show(
    el("h1", { text: t("nav.operations") }),
    el("p", { id: "status", text: d.status.summary }),
    el("div", { class: "panel" },
      el("button", { type: "button", id: "pause", onclick: () => call("/v1/pause", {}) }, `${t("ops.pause")} (${t("ops.all")})`), " ",
      el("button", { type: "button", class: "secondary", id: "resume", onclick: () => call("/v1/resume", {}) }, `${t("ops.resume")} (${t("ops.all")})`), msg),
    el("table", { id: "providers" },
      el("tr", {}, ["name", "kind", "paused", "circuit", "results", "latency", "rate wait", ""].map((h) => el("th", { text: h }))),
      d.providers.map((p) => el("tr", { "data-provider": p.name },
        el("td", { text: p.name }), el("td", { text: p.kind }), el("td", { text: p.paused ? "⏸" : "" }),
        el("td", { class: p.circuit_open ? "error" : "ok", text: p.circuit_open ? "open" : "closed" }),
        el("td", { text: Object.entries(p.results).map(([k, v]) => `${k} ${v}`).join(", ") }),
        el("td", { text: `${(p.mean_latency_seconds * 1000).toFixed(0)} ms` }),
        el("td", { text: `${(p.mean_rate_limit_wait_seconds * 1000).toFixed(0)} ms` }),
        el("td", {}, el("button", { type: "button", class: "secondary", onclick: () => call(p.paused ? "/v1/resume" : "/v1/pause", { provider: p.name }) }, p.paused ? t("ops.resume") : t("ops.pause")))))),
    el("h2", { text: `${t("ops.today")} (${d.today.timezone})` }),
    el("table", { id: "today" }, d.today.transitions.map((m) => el("tr", {}, el("td", { text: m.state }), el("td", { text: m.reason || "" }), el("td", { text: String(m.count) })))),
    el("h2", { text: t("ops.by_reason") }),
    el("table", { id: "by-reason" }, d.messages.map((m) => el("tr", {}, el("td", { text: m.state }), el("td", { text: m.channel }), el("td", { text: m.provider || "" }), el("td", { text: m.reason || "" }), el("td", { text: String(m.count) })))),
    el("div", { class: "panel" }, el("h2", { text: t("ops.unknown") }),
      unknown.ok ? null : errorLine(unknown),
      el("table", {}, list.map((m) => el("tr", {}, el("td", { text: `#${m.id}` }), el("td", { text: `${m.channel} ${m.address || ""}` }), el("td", { text: m.reason || "" }),
        el("td", {}, el("button", { type: "button", onclick: () => call(`/v1/messages/${m.id}/release`) }, t("ops.release")), " ",
          el("button", { type: "button", class: "secondary", onclick: () => call(`/v1/messages/${m.id}/cancel`) }, t("ops.cancel")))))))
  );
}

// ---- compliance ------------------------------------------------------------
async function pageCompliance() {
  const from = el("input", { id: "audit-from", type: "date" });
  const to = el("input", { id: "audit-to", type: "date" });
  const format = el("select", { id: "audit-format" }, ["csv", "jsonl"].map((f) => el("option", { value: f, text: f })));
  const link = el("a", { id: "audit-download", href: "/v1/audit?format=csv" }, t("cmp.download"));
  const update = () => { link.href = `/v1/audit?from=${from.value}&to=${to.value}&format=${format.value}`; };
  [from, to, format].forEach((x) => x.addEventListener("change", update));
  const changes = await api("GET", "/v1/changes");
  show(
    el("h1", { text: t("nav.compliance") }),
    el("div", { class: "panel" }, el("h2", { text: t("cmp.audit") }), el("label", {}, t("cmp.from") + " ", from), " ", el("label", {}, t("cmp.to") + " ", to), " ", format, " ", link),
    el("div", { class: "panel" }, el("h2", { text: t("cmp.changes") }),
      changes.ok ? el("table", { id: "changes" },
        el("tr", {}, ["cmp.when", "cmp.who", "cmp.what", ""].map((k) => el("th", { text: k ? t(k) : "" }))),
        changes.data.changes.slice().reverse().map((c) => el("tr", {}, el("td", { text: c.at }), el("td", { text: c.actor }), el("td", { text: `${c.kind} ${c.subject}: ${c.summary}` }),
          el("td", {}, el("details", {}, el("summary", { text: "before / after" }), el("pre", { text: `${c.before || ""}\n---\n${c.after || ""}` }))))))
        : errorLine(changes))
  );
}

// ---- chrome ----------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const logout = $("#logout");
  if (logout) logout.addEventListener("click", async () => { await api("DELETE", "/v1/session"); location.href = "/console/login"; });
  const lang = $("#lang");
  if (lang) lang.addEventListener("change", async () => { await api("PUT", "/v1/session/locale", { locale: lang.value }); location.reload(); });
  if (page !== "login" && document.body.dataset.allowed !== "true") return;
  const pages = { login: pageLogin, home: pageHome, templates: pageTemplates, editor: pageEditor, settings: pageSettings, borrowers: pageBorrowers, operations: pageOperations, compliance: pageCompliance };
  if (pages[page]) pages[page]().catch((e) => show(el("p", { class: "error", text: String(e) })));
});
