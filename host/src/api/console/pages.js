// The console's pages. Each one: `load(params)` fetches what it shows from the
// API, `render(data, params, ctx)` builds it. Pages with `poll` are fetched
// again every few seconds and redrawn when what they show has changed.

import { get, post, put } from "./api.js";
import { barChart, h, pairs, relative, seconds, state, table, when } from "./ui.js";

const HEALTH_WORDS = {
  healthy: "Healthy: reports are stored and reach VH-Database.",
  degraded: "Degraded: running, but something stops part of the job.",
  unhealthy: "Unhealthy: keeper.db cannot be read; nothing can be stored or synced.",
};

const GATEWAY_WORDS = {
  connected: "connected to Discord",
  connecting: "connecting to Discord…",
  resuming: "resuming its Discord session…",
  disconnected: "disconnected from Discord",
  disabled: "not running (DISCORD_TOKEN is not set)",
};

const HAVEN_SOURCE = {
  haven_db_path: "set by HAVEN_DB_PATH",
  found_where_old_bot_looked: "found where the old bot looked",
  local_default: "keeper's own default (Control Room does not read it)",
};

/** Retries, answering with the server's words. */
async function retry(ctx, path) {
  try {
    const answer = await post(path);
    ctx.notify(answer.message);
  } catch (e) {
    ctx.notify(e.message, true);
  }
  ctx.refresh();
}

function plugin(p) {
  if (!p) return h("span", { class: "muted" }, "none yet (no worker has started)");
  return h("span", {}, h("strong", { dataset: { field: "plugin-name" } }, p.name), ` ${p.version} `,
    h("span", { class: "hash", title: p.hash }, p.hash.slice(0, 12)));
}

export const overview = {
  title: "Overview",
  poll: true,
  async load() {
    const [health, stats, plugins] = await Promise.all([get("/health"), get("/sync/statistics"),
      get("/plugins")]);
    return { health, stats, plugins };
  },
  /** What is shown, without the times that change on every call. */
  shown({ health, stats, plugins }) {
    return JSON.stringify([{ ...health, timestamp: null }, { ...stats, generated_at: null, oldest_pending: null },
      plugins.active]);
  },
  render({ health, stats, plugins }) {
    const q = stats.queue;
    const perMinute = stats.synced_per_minute_last_hour;
    const lastHour = perMinute.reduce((a, b) => a + b, 0);
    const vhProblem = health.problems.find((p) => p.problem === "vh_database_unreachable");
    const l = stats.latency_last_day;
    return h("div", {},
      h("section", { class: `banner ${health.status}`, "aria-labelledby": "health-title", dataset: { health: health.status } },
        h("h2", { id: "health-title" }, "Health"),
        h("strong", {}, HEALTH_WORDS[health.status] || health.status),
        health.problems.length ? h("ul", { class: "problems" }, health.problems.map((p) =>
          h("li", { dataset: { problem: p.problem } }, h("strong", {}, p.problem.replaceAll("_", " ")), ": ", p.message,
            p.since ? [" (since ", when(p.since), ")"] : null))) : null),
      h("div", { class: "grid" },
        h("section", { class: "card", "aria-labelledby": "queue-title" },
          h("h3", { id: "queue-title" }, "Queue"),
          h("div", { class: "counts" },
            [["pending", q.pending, "waiting"], ["syncing", q.syncing, "syncing"], ["synced", q.synced, "synced"],
              ["failed", q.failed, "failed"]].map(([key, n, label]) =>
              h("a", { href: key === "failed" ? "#/items?state=max_retries_exceeded" : `#/items?state=${key}` },
                h("span", { class: "n", dataset: { count: key } }, n), h("span", { class: "label" }, label)))),
          stats.oldest_pending ? h("p", { class: "muted" }, "Oldest pending: ",
            h("a", { href: `#/item/${stats.oldest_pending.queue_id}` }, `#${stats.oldest_pending.queue_id}`), ", submitted ",
            relative(stats.oldest_pending.created_at)) : null),
        h("section", { class: "card", "aria-labelledby": "rate-title" },
          h("h3", { id: "rate-title" }, "Synced per minute, last hour"),
          barChart(perMinute, `${lastHour} synced in the last hour`),
          h("p", {}, h("span", { dataset: { field: "synced-last-hour" } }, lastHour), " in the last hour · ",
            h("span", { dataset: { field: "synced-last-day" } }, stats.synced_last_day), " in the last day")),
        h("section", { class: "card", "aria-labelledby": "latency-title" },
          h("h3", { id: "latency-title" }, "Sync latency (last day)"),
          pairs([["p50", h("span", { dataset: { field: "p50" } }, seconds(l.p50_seconds))],
            ["p95", h("span", { dataset: { field: "p95" } }, seconds(l.p95_seconds))],
            ["items", l.count]])),
        h("section", { class: "card", "aria-labelledby": "parts-title" },
          h("h3", { id: "parts-title" }, "Parts"),
          pairs([
            ["Discord bot", h("span", { dataset: { field: "bot" } }, GATEWAY_WORDS[health.bot_gateway] || health.bot_gateway)],
            ["Sync worker", health.sync_worker_running ? "running" : "not running"],
            ["VH-Database", health.haven_db
              ? h("span", {}, h("span", { class: "hash", dataset: { field: "haven-path" } }, health.haven_db.path), " (",
                HAVEN_SOURCE[health.haven_db.source] || health.haven_db.source, ")",
                vhProblem ? h("strong", { class: "error" }, " unreachable") : " reachable")
              : "remote mode: keeper pull writes it elsewhere"],
            ["keeper.db", health.keeper_db_reachable ? "readable" : h("strong", { class: "error" }, "cannot be read")],
            ["Active plugin", plugin(plugins.active)],
          ]))));
  },
};

export const failures = {
  title: "Failures",
  poll: true,
  load: () => get("/sync/failures"),
  shown: (data) => JSON.stringify(data.classes.map((c) => ({ ...c, oldest_created_at: null }))),
  render(data, _params, ctx) {
    if (!data.classes.length) {
      return h("div", {}, h("h2", {}, "Failures"), h("p", { dataset: { empty: "failures" } },
        "Nothing has failed: no item is out of attempts or waiting after a failure."));
    }
    const rows = data.classes.map((c) => h("tr", { dataset: { class: c.error_class } },
      h("th", { scope: "row" }, c.error_class, c.permanent ? h("div", { class: "muted" }, "a retry alone fails again") : null),
      h("td", { class: "num", dataset: { field: "failed" } }, c.failed),
      h("td", { class: "num", dataset: { field: "waiting" } }, c.waiting),
      h("td", {}, h("a", { href: `#/item/${c.oldest_queue_id}` }, `#${c.oldest_queue_id}`), h("br"),
        relative(c.oldest_created_at)),
      h("td", { class: "msg" }, h("a", { href: `#/item/${c.latest_queue_id}` }, `#${c.latest_queue_id}`), ": ",
        c.latest_error ?? "—"),
      h("td", { class: "msg" }, c.remedy),
      h("td", {},
        c.error_class === "unknown" ? null : h("button", { type: "button", dataset: { retryClass: c.error_class, key: `retry-${c.error_class}` },
          onclick: (e) => { e.target.disabled = true; retry(ctx, `/sync/retry?class=${encodeURIComponent(c.error_class)}`); } },
        `Retry ${c.failed + c.waiting} ${c.error_class}`),
        " ", h("a", { href: `#/items?class=${c.error_class === "unknown" ? "" : c.error_class}&state=${c.failed ? "max_retries_exceeded" : "pending"}` },
          "items"))));
    return h("div", {},
      h("h2", {}, "Failures ", h("span", { class: "muted" }, `(${data.total} items)`)),
      table("Failed and waiting items by the class of their last failure",
        ["class", { text: "failed", num: true }, { text: "waiting", num: true }, "oldest", "latest error",
          "what usually fixes it", ""], rows, { id: "failure-classes" }));
  },
};

const STATES = ["pending", "syncing", "synced", "max_retries_exceeded"];
const CLASSES = ["unavailable", "locked", "full", "read_only", "schema", "mapping", "timeout", "source"];

function query(params) {
  const q = new URLSearchParams();
  for (const key of ["state", "system", "user", "type", "class", "before"]) {
    if (params.get(key)) q.set(key, params.get(key));
  }
  return q;
}

export const items = {
  title: "Items",
  poll: false,
  load: (params) => {
    const q = query(params);
    q.set("limit", "50");
    return get(`/sync/items?${q}`);
  },
  render(data, params, ctx) {
    const field = (name, label, attrs = {}) => h("label", {}, label,
      h("input", { name, value: params.get(name) || "", type: "search", ...attrs }));
    const select = (name, label, options) => h("label", {}, label,
      h("select", { name }, h("option", { value: "" }, "any"),
        options.map((o) => h("option", { value: o, selected: params.get(name) === o }, o === "max_retries_exceeded" ? "failed" : o))));
    const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [k, v] of new FormData(e.target)) if (v) q.set(k, v);
      location.hash = `#/items?${q}`;
    } },
    field("system", "System"), field("user", "Reporter"), field("type", "Type", { placeholder: "fossil, 🦴, …" }),
    select("state", "State", STATES), select("class", "Error class", CLASSES),
    h("button", { type: "submit", class: "primary" }, "Search"));
    const rows = data.items.map((i) => h("tr", { dataset: { queueId: i.queue_id } },
      h("td", {}, h("a", { href: `#/item/${i.queue_id}` }, `#${i.queue_id}`)),
      h("td", {}, state(i.sync_status)),
      h("td", {}, i.discovery_type ?? "—"),
      h("td", {}, i.system_name ?? "—", h("div", { class: "muted" }, i.location ?? "")),
      h("td", {}, i.username ?? "—"),
      h("td", { class: "num" }, i.sync_attempts),
      h("td", { class: "msg" }, i.error_class ? [h("strong", {}, i.error_class), ": ", i.sync_error ?? ""] : "—"),
      h("td", {}, ["pending", "max_retries_exceeded"].includes(i.sync_status) && i.sync_error
        ? h("button", { type: "button", dataset: { retryItem: i.queue_id },
          onclick: (e) => { e.target.disabled = true; retry(ctx, `/sync/retry/${i.queue_id}`); } }, `Retry #${i.queue_id}`)
        : null)));
    let more = null;
    if (data.next_before) {
      const next = query(params);
      next.set("before", data.next_before);
      more = h("p", {}, h("a", { href: `#/items?${next}` }, "Older items →"));
    }
    return h("div", {}, h("h2", {}, "Items"), form,
      data.items.length
        ? table(`${data.count} item(s), the newest first`, ["queue id", "state", "type", "system", "reporter",
          { text: "attempts", num: true }, "last error", ""], rows, { id: "item-list" })
        : h("p", { dataset: { empty: "items" } }, "No item matches."),
      more);
  },
};

export const item = {
  title: "Item",
  poll: true,
  load: (params) => get(`/sync/items/${encodeURIComponent(params.get("id"))}`),
  shown: (data) => JSON.stringify(data),
  render(data, _params, ctx) {
    const i = data.item;
    const p = i.provenance;
    let vh;
    if (i.haven_discovery_id !== null) vh = h("span", { dataset: { field: "haven-id" } }, `discoveries row #${i.haven_discovery_id}`);
    else if (i.sync_status === "max_retries_exceeded") vh = h("span", { class: "error" }, `not written: out of attempts; last error (${i.error_class ?? "unknown"}): ${i.sync_error ?? "—"}`);
    else if (i.sync_error) vh = h("span", {}, `not written yet: the last attempt failed (${i.error_class ?? "unknown"}): ${i.sync_error}; next try `, relative(i.next_retry_after));
    else if (i.sync_status === "syncing") vh = "being written now";
    else vh = "not written yet: waiting its turn";
    const retryable = ["pending", "max_retries_exceeded"].includes(i.sync_status);
    const report = data.discovery
      ? pairs(Object.entries(data.discovery).filter(([, v]) => v !== null && v !== "").map(([k, v]) => [k, String(v)]))
      : h("p", { class: "error" }, data.discovery_error ?? "the report is gone from keeper.db");
    let vhRow = null;
    if (data.haven_row) {
      vhRow = h("section", { class: "card", "aria-labelledby": "vh-title" },
        h("h3", { id: "vh-title" }, `VH-Database row #${i.haven_discovery_id}`),
        pairs(Object.entries(data.haven_row).filter(([, v]) => v !== null && v !== "").map(([k, v]) => [k, String(v)])));
    } else if (data.haven_row_error) {
      vhRow = h("section", { class: "card" }, h("h3", {}, "VH-Database row"), h("p", { class: "error" }, data.haven_row_error));
    }
    return h("div", {},
      h("h2", {}, `Queue item #${i.queue_id} `, state(i.sync_status)),
      h("div", { class: "grid" },
        h("section", { class: "card", "aria-labelledby": "sync-title" },
          h("h3", { id: "sync-title" }, "Sync"),
          pairs([
            ["VH-Database", vh],
            ["attempts", `${i.sync_attempts}${i.max_attempts !== null ? ` of ${i.max_attempts}` : ""}`],
            ["last attempt", when(i.last_sync_attempt)],
            ["last error", i.sync_error ? `${i.error_class ?? "unknown"}: ${i.sync_error}` : "—"],
            ["submitted", when(i.created_at)],
            ["synced", when(i.synced_at)],
            ["written by", p ? h("span", { dataset: { field: "provenance" } }, `${p.name} ${p.version} `,
              h("span", { class: "hash", title: p.hash }, p.hash.slice(0, 12))) : "—"],
          ]),
          retryable ? h("p", {}, h("button", { type: "button", class: "primary", dataset: { retryItem: i.queue_id },
            onclick: (e) => { e.target.disabled = true; retry(ctx, `/sync/retry/${i.queue_id}`); } }, "Retry now")) : null),
        h("section", { class: "card", "aria-labelledby": "report-title" },
          h("h3", { id: "report-title" }, `keeper.db report #${i.discovery_id}`), report),
        vhRow));
  },
};

// The Plugins page's own state, kept across its redraws (it polls): the file
// chosen for upload and the last preview.
const pluginForm = { name: "", file: null, preview: null, busy: false, percent: 10 };

// How a plugin became active (GET /plugins `activated_by`), in words.
const ACTIVATED_BY = {
  start_up: "chosen at start-up",
  folder: "plugins folder",
  upload: "uploaded",
  api_activation: "activated from the API",
  rollback: "rolled back to",
  canary_promotion: "canary promoted",
};

/** A canary's share in words. */
function canaryShare(c) {
  if (c.percent !== null && c.items !== null) return `${c.percent}% of the items until it has mapped ${c.items}`;
  if (c.percent !== null) return `${c.percent}% of the items`;
  return `the next ${c.items} items`;
}

/** The percent field of the canary buttons, as the share to send. */
function canaryBody() {
  return { percent: Number(pluginForm.percent) };
}

/** The newest canary: running (with its counts and a promote button) or how it ended. */
function canarySection(c, ctx) {
  if (!c) return null;
  const rate = (failed, items) => (items ? ` (${Math.round((failed * 100) / items)}%)` : "");
  const promote = c.state === "running"
    ? h("p", {}, h("button", { type: "button", id: "promote-canary", disabled: pluginForm.busy, dataset: { key: "promote-canary" },
      onclick: () => pluginAction(ctx, async () => (await post(`/plugins/versions/${c.hash}/activate`)).message) },
    `Promote ${c.name} ${c.version} now`))
    : null;
  return h("section", { class: "card", id: "canary", "aria-labelledby": "canary-title" },
    h("h3", { id: "canary-title" }, "Canary"),
    pairs([
      ["Plugin", h("span", {}, h("strong", { dataset: { field: "canary-name" } }, c.name), ` ${c.version} `,
        h("span", { class: "hash", title: c.hash }, c.hash.slice(0, 12)))],
      ["State", state(c.state)],
      ["Share", h("span", { dataset: { field: "canary-share" } }, canaryShare(c))],
      ["Canary", h("span", { dataset: { field: "canary-counts" } },
        `${c.canary_failed} of ${c.canary_items} item(s) failed${rate(c.canary_failed, c.canary_items)}`)],
      ["Active plugin meanwhile", h("span", { dataset: { field: "canary-active-counts" } },
        `${c.active_failed} of ${c.active_items} item(s) failed${rate(c.active_failed, c.active_items)}`)],
      ["Started", when(c.started_at)],
      ...(c.ended_at ? [["Ended", when(c.ended_at)]] : []),
      ...(c.reason ? [[c.state === "rolled_back" ? "Rolled back because" : "Why it ended",
        h("span", { class: c.state === "rolled_back" ? "error" : null, dataset: { field: "canary-reason" } }, c.reason)]] : []),
    ]),
    promote);
}

/** A plugin file name from a chosen file: its name without `.wasm`, cleaned. */
function nameFromFile(file) {
  return file.name.replace(/\.wasm$/i, "").replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64);
}

/** Runs one plugin action, saying its outcome (the server's words). */
async function pluginAction(ctx, action) {
  pluginForm.busy = true;
  ctx.refresh();
  try {
    ctx.notify(await action());
  } catch (e) {
    ctx.notify(e.message, true);
  }
  pluginForm.busy = false;
  ctx.refresh();
}

async function previewWith(ctx, load, what) {
  await pluginAction(ctx, async () => {
    pluginForm.preview = { what, ...(await load()) };
    const p = pluginForm.preview;
    return `Preview of ${p.candidate.name} ${p.candidate.version}: ${p.changed} of ${p.compared} item(s) would change.`;
  });
}

function uploadForm(ctx) {
  const f = pluginForm;
  const chosen = f.file
    ? h("span", { dataset: { field: "chosen-file" } }, `${f.file.name} (${Math.round(f.file.size / 1024)} KiB)`)
    : h("span", { class: "muted" }, "no file chosen");
  const needFile = (then) => () => {
    if (!f.file) return ctx.notify("Choose a .wasm file first.", true);
    return then();
  };
  return h("section", { class: "card", "aria-labelledby": "upload-title" },
    h("h3", { id: "upload-title" }, "Upload a plugin"),
    h("p", { class: "muted" }, "It gets the same conformance check as a file dropped into the plugins folder. ",
      "If it passes it is saved there as NAME.wasm and is active at once; if not, it is listed under Rejected with the reason."),
    h("form", { class: "filters", id: "plugin-upload", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Plugin file (.wasm)",
        h("input", { type: "file", accept: ".wasm,application/wasm", id: "plugin-file", dataset: { key: "plugin-file" },
          onchange: (e) => {
            f.file = e.target.files[0] || null;
            if (f.file && !f.name) f.name = nameFromFile(f.file);
            ctx.refresh();
          } })),
      h("label", {}, "Name in the plugins folder",
        h("input", { type: "text", id: "plugin-name", value: f.name, pattern: "[A-Za-z0-9_\\-]{1,64}", maxlength: 64,
          placeholder: "my-mapper", dataset: { key: "plugin-name" }, oninput: (e) => { f.name = e.target.value; } })),
      h("p", {}, "Chosen: ", chosen),
      h("button", { type: "button", id: "preview-upload", disabled: f.busy, dataset: { key: "preview-upload" },
        onclick: needFile(() => previewWith(ctx, () => post("/plugins/preview?last=10", f.file), "the chosen file")) },
      "Preview on the last 10 items"),
      h("button", { type: "button", class: "primary", id: "upload-plugin", disabled: f.busy, dataset: { key: "upload-plugin" },
        onclick: needFile(() => pluginAction(ctx, async () => {
          const answer = await put(`/plugins/${encodeURIComponent(f.name || nameFromFile(f.file))}`, f.file);
          f.file = null;
          f.name = "";
          f.preview = null;
          return answer.message;
        })) }, "Upload and activate"),
      h("label", {}, "Canary share (%)",
        h("input", { type: "number", id: "canary-percent", min: 1, max: 100, value: f.percent, dataset: { key: "canary-percent" },
          oninput: (e) => { f.percent = e.target.value; } })),
      h("button", { type: "button", id: "upload-canary", disabled: f.busy, dataset: { key: "upload-canary" },
        onclick: needFile(() => pluginAction(ctx, async () => {
          const name = encodeURIComponent(f.name || nameFromFile(f.file));
          const answer = await put(`/plugins/${name}/canary?percent=${encodeURIComponent(f.percent)}`, f.file);
          f.file = null;
          f.name = "";
          f.preview = null;
          return answer.message;
        })) }, "Upload as a canary")),
    h("p", { class: "muted" }, "A canary maps its share of the items beside the active plugin. If it fails more items than ",
      "the active plugin by more than KEEPER_CANARY_MARGIN_PERCENT points, it is rolled back and the items it failed are ",
      "synced again by the active plugin; promote it when it does well."));
}

/** One item of a preview: every column, the active plugin's value beside the candidate's, changed ones marked. */
function previewItem(item) {
  const title = h("summary", {}, h("a", { href: `#/item/${item.queue_id}` }, `#${item.queue_id}`), " ",
    item.unreadable ? h("span", { class: "error" }, item.unreadable)
      : item.changes.length ? h("strong", {}, `${item.changes.length} difference(s)`) : h("span", { class: "muted" }, "no change"));
  if (item.unreadable) return h("details", { dataset: { previewItem: item.queue_id } }, title);
  const changed = new Set(item.changes.map((c) => c.column).filter((c) => c !== null));
  const outcomes = item.changes.filter((c) => c.column === null).map((c) => h("p", { class: "error" }, c.description));
  const before = item.active_row || {};
  const after = item.candidate_row || {};
  const columns = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  const show = (row, column) => (column in row ? (row[column] === null ? "NULL" : String(row[column])) : "(not set)");
  const rows = columns.map((c) => h("tr", { class: changed.has(c) ? "changed" : null, dataset: { column: c } },
    h("th", { scope: "row" }, changed.has(c) ? h("mark", {}, c) : c),
    h("td", { class: "msg" }, item.active_row ? show(before, c) : "—"),
    h("td", { class: "msg" }, item.candidate_row ? show(after, c) : "—")));
  const errors = [item.active_error && `active plugin fails: ${item.active_error}`,
    item.candidate_error && `candidate fails: ${item.candidate_error}`].filter(Boolean).map((t) => h("p", { class: "error" }, t));
  return h("details", { open: item.changes.length > 0, dataset: { previewItem: item.queue_id } }, title, outcomes, errors,
    table(`VH-Database row of item #${item.queue_id}: active plugin and candidate`, ["column", "active", "candidate"], rows,
      { class: "diff" }));
}

function previewSection(p) {
  if (!p) return null;
  return h("section", { class: "card", id: "plugin-preview", "aria-labelledby": "preview-title" },
    h("h3", { id: "preview-title" }, `Preview: ${p.candidate.name} ${p.candidate.version} (${p.what}) against the active `,
      `${p.active.name} ${p.active.version}`),
    h("p", { dataset: { field: "preview-summary" } }, `${p.changed} of ${p.compared} item(s) would change.`),
    p.notes.map((n) => h("p", { class: "muted" }, n)),
    p.items.length ? p.items.map(previewItem) : h("p", { class: "muted" }, "No synced items to compare yet."),
    h("p", {}, h("button", { type: "button", dataset: { key: "close-preview" }, onclick: (e) => {
      pluginForm.preview = null;
      e.target.closest("section").remove();
    } }, "Close the preview")));
}

function pluginRows(list, ctx, actions) {
  return list.map((p) => h("tr", { dataset: { plugin: p.hash } },
    h("td", {}, p.name || h("span", { class: "muted" }, "(no name)")),
    h("td", {}, p.version),
    h("td", {}, state(p.status)),
    h("td", { class: "hash", title: p.hash }, p.hash.slice(0, 12)),
    h("td", { class: "msg" }, p.source),
    h("td", {}, when(p.recorded_at)),
    h("td", { dataset: { field: "activated-by" } }, ACTIVATED_BY[p.activated_by] ?? p.activated_by ?? ""),
    actions
      ? h("td", {},
        h("button", { type: "button", disabled: pluginForm.busy, dataset: { key: `preview-${p.hash}`, previewVersion: p.hash },
          onclick: () => previewWith(ctx, () => get(`/plugins/versions/${p.hash}/preview?last=10`), "an earlier version") },
        `Preview ${p.version}`), " ",
        h("button", { type: "button", disabled: pluginForm.busy, dataset: { key: `activate-${p.hash}`, activateVersion: p.hash },
          onclick: () => pluginAction(ctx, async () => (await post(`/plugins/versions/${p.hash}/activate`)).message) },
        `Activate ${p.version}`), " ",
        h("button", { type: "button", disabled: pluginForm.busy, dataset: { key: `canary-${p.hash}`, canaryVersion: p.hash },
          onclick: () => pluginAction(ctx, async () => (await post(`/plugins/versions/${p.hash}/canary`, canaryBody())).message) },
        `Canary ${p.version}`))
      : h("td", { class: "msg", dataset: { field: "reason" } }, p.reason ?? "")));
}

export const plugins = {
  title: "Plugins",
  poll: true,
  load: () => get("/plugins"),
  shown: (data) => JSON.stringify([data, pluginForm.preview, pluginForm.busy, pluginForm.file?.name]),
  render(data, _params, ctx) {
    const headers = ["name", "version", "status", "hash", "source", "recorded", "became active"];
    const earlier = data.history.filter((p) => p.hash !== data.active?.hash);
    const rollback = earlier.length
      ? h("p", {}, h("button", { type: "button", id: "rollback", disabled: pluginForm.busy, dataset: { key: "rollback" },
        onclick: () => pluginAction(ctx, async () => (await post("/plugins/rollback")).message) },
      `Roll back to ${earlier[0].name} ${earlier[0].version}`))
      : null;
    return h("div", {},
      h("h2", {}, "Mapping plugins"),
      h("div", { class: "grid" },
        h("section", { class: "card", "aria-labelledby": "active-title" },
          h("h3", { id: "active-title" }, "Active"), plugin(data.active),
          data.active?.activated_by
            ? h("p", { class: "muted", dataset: { field: "active-activated-by" } },
              `Became active: ${ACTIVATED_BY[data.active.activated_by] ?? data.active.activated_by}`)
            : null,
          rollback),
        uploadForm(ctx)),
      canarySection(data.canary, ctx),
      previewSection(pluginForm.preview),
      h("h3", {}, "Earlier"),
      data.history.length ? table("Plugins that were active before, newest first", [...headers, "actions"],
        pluginRows(data.history, ctx, true), { id: "plugin-history" })
        : h("p", { class: "muted" }, "None."),
      h("h3", {}, "Rejected"),
      data.rejected.length ? table("Plugins refused by the conformance check, with the reason", [...headers, "reason"],
        pluginRows(data.rejected, ctx, false), { id: "plugin-rejected" }) : h("p", { class: "muted" }, "None."));
  },
};
