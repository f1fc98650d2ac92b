// The rx_magic job status widget: one plain ES module, no build step (anywidget).
// The kernel sends state as traits; this file only draws it and sends button presses back.

/**
 * @typedef {{
 *   get: (name: string) => any,
 *   on: (event: string, callback: Function) => void,
 *   off: (event: string, callback: Function) => void,
 *   send: (content: object) => void,
 * }} Model
 */

/** @type {Record<string, string>} */
const ICONS = {
  submitted: "\u25CB", // ○
  queued: "\u23F3", // ⏳
  running: "\u25B6", // ▶
  done: "\u2714", // ✔
  failed: "\u2716", // ✖
  cancelled: "\u2298", // ⊘
  unknown: "?",
};

const FINAL = new Set(["done", "failed", "cancelled"]);

/**
 * Seconds as 42s, 3m 05s, 1h 02m.
 * @param {number} seconds
 * @returns {string}
 */
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * A new element with a class and optional text.
 * @param {string} tag
 * @param {string} className
 * @param {string} [text]
 * @returns {HTMLElement}
 */
// Why a job did not end done: the reason, and the cell's error unless the reason says it already.
function problem(reason, error) {
  if (error && !(reason || "").includes(error)) return [reason, error].filter(Boolean).join(" \u2014 ");
  return reason || "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const JOB_TRAITS = [
  "state", "reason", "error", "scheduler_id", "started_at", "ended_at", "server_now", "walltime", "resources", "elements",
  "stdout_tail", "stderr_tail", "pulled", "held_back", "arrival", "notes", "can_pull", "log_text",
];

const ELEMENT_STATES = { q: "queued", r: "running", d: "done", f: "failed", c: "cancelled" };

/**
 * A job array's elements as a strip of cells, one per element, coloured by state, with counts.
 * @param {HTMLElement} strip
 * @param {string} letters one of q r d f c per element
 */
function drawStrip(strip, letters) {
  strip.style.display = letters ? "" : "none";
  if (!letters) return;
  const cells = strip.querySelector(".rx-strip-cells") || strip.appendChild(element("div", "rx-strip-cells"));
  const counts = strip.querySelector(".rx-strip-counts") || strip.appendChild(element("div", "rx-strip-counts"));
  while (cells.children.length > letters.length) cells.lastChild?.remove();
  while (cells.children.length < letters.length) cells.append(element("span", "rx-strip-cell"));
  const tally = /** @type {Record<string, number>} */ ({});
  [...letters].forEach((letter, index) => {
    const state = ELEMENT_STATES[letter] || "queued";
    const cell = /** @type {HTMLElement} */ (cells.children[index]);
    cell.dataset.state = state;
    cell.title = `element ${index}: ${state}`;
    tally[state] = (tally[state] || 0) + 1;
  });
  counts.textContent = `${letters.length} elements: ` + Object.entries(tally).map(([state, n]) => `${n} ${state}`).join(", ");
}

/**
 * Draw one job and keep it current.
 * @param {{ model: Model, el: HTMLElement }} context
 * @returns {() => void} cleanup: stops the clock and the pending confirmation
 */
function renderJob({ model, el }) {
  const root = element("div", "rx-job");
  const head = element("div", "rx-head");
  const badge = element("span", "rx-state");
  const icon = element("span", "rx-icon");
  const label = element("span", "rx-state-label");
  badge.append(icon, label);
  const title = element("span", "rx-title");
  const buttons = element("span", "rx-buttons");
  const cancel = /** @type {HTMLButtonElement} */ (element("button", "rx-button rx-cancel", "Cancel"));
  const pull = /** @type {HTMLButtonElement} */ (element("button", "rx-button rx-pull", "Pull results"));
  const log = /** @type {HTMLButtonElement} */ (element("button", "rx-button rx-log", "Show full log"));
  buttons.append(cancel, pull, log);
  head.append(badge, title, buttons);

  const cell = element("div", "rx-cell");
  const timing = element("div", "rx-timing");
  const clock = element("span", "rx-clock");
  const bar = element("span", "rx-bar");
  const fill = element("span", "rx-bar-fill");
  bar.append(fill);
  const limit = element("span", "rx-limit");
  timing.append(clock, bar, limit);
  const resources = element("div", "rx-resources");
  const reason = element("div", "rx-reason");
  const strip = element("div", "rx-strip");
  const stdout = element("pre", "rx-tail rx-stdout");
  const stderr = element("pre", "rx-tail rx-stderr");
  const names = element("div", "rx-names");
  const notes = element("div", "rx-notes");
  const fullLog = element("pre", "rx-full-log");
  root.append(head, cell, timing, resources, strip, reason, stdout, stderr, names, notes, fullLog);
  el.append(root);

  let skew = 0; // kernel clock minus browser clock, in seconds
  let confirming = /** @type {number | undefined} */ (undefined);
  let logOpen = false;

  function tick() {
    const now = Date.now() / 1000 + skew;
    const state = model.get("state");
    const submitted = model.get("submitted_at");
    const started = model.get("started_at");
    const ended = model.get("ended_at");
    const walltime = model.get("walltime");
    const parts = [];
    if (started) {
      parts.push(`queued ${duration(started - submitted)}`);
      const ran = (ended || (FINAL.has(state) ? started : now)) - started;
      parts.push(`${FINAL.has(state) ? "ran" : "running"} ${duration(ran)}`);
      if (walltime) {
        const used = Math.min(1, Math.max(0, ran / walltime));
        fill.style.width = `${(used * 100).toFixed(1)}%`;
        fill.classList.toggle("rx-bar-late", used > 0.9);
      }
    } else if (submitted) {
      const waited = (ended || (FINAL.has(state) ? submitted : now)) - submitted;
      parts.push(`${FINAL.has(state) ? "waited" : "waiting"} ${duration(waited)}`);
      fill.style.width = "0%";
    }
    clock.textContent = parts.join(" \u00B7 ");
    bar.style.display = walltime ? "" : "none";
    limit.textContent = walltime ? `of ${duration(walltime)} walltime` : "";
  }

  function draw() {
    const state = model.get("state");
    skew = model.get("server_now") - Date.now() / 1000;
    root.dataset.state = state;
    icon.textContent = ICONS[state] || "?";
    label.textContent = state;
    const sid = model.get("scheduler_id");
    title.textContent = `${model.get("job_id")} on ${model.get("target")}` + (sid ? ` (${model.get("scheduler")} ${sid})` : "");
    cell.textContent = model.get("first_line");
    resources.textContent = model.get("resources") ? `asked for ${model.get("resources")}` : "";
    reason.textContent = state === "done" ? "" : problem(model.get("reason"), model.get("error"));
    drawStrip(strip, model.get("elements"));
    stdout.textContent = model.get("stdout_tail");
    stderr.textContent = model.get("stderr_tail");
    stdout.style.display = model.get("stdout_tail") ? "" : "none";
    stderr.style.display = model.get("stderr_tail") ? "" : "none";
    const lines = [];
    const pulled = model.get("pulled");
    if (pulled.length) lines.push(`pulled: ${pulled.join(", ")}`);
    const held = model.get("held_back");
    if (held.length) lines.push(`held back: ${held.join("; ")}`);
    if (model.get("arrival")) lines.push(model.get("arrival"));
    names.textContent = lines.join("\n");
    notes.textContent = model.get("notes").join("\n");
    cancel.style.display = FINAL.has(state) ? "none" : "";
    if (FINAL.has(state) && confirming !== undefined) stopConfirming();
    pull.style.display = model.get("can_pull") ? "" : "none";
    fullLog.textContent = model.get("log_text");
    fullLog.style.display = logOpen && model.get("log_text") ? "" : "none";
    log.textContent = logOpen ? "Hide log" : "Show full log";
    tick();
  }

  function stopConfirming() {
    window.clearTimeout(confirming);
    confirming = undefined;
    cancel.textContent = "Cancel";
    cancel.classList.remove("rx-confirm");
  }

  cancel.addEventListener("click", () => {
    if (confirming === undefined) {
      cancel.textContent = "Really cancel?";
      cancel.classList.add("rx-confirm");
      confirming = window.setTimeout(stopConfirming, 5000);
      return;
    }
    stopConfirming();
    cancel.disabled = true;
    cancel.textContent = "Cancelling\u2026";
    model.send({ action: "cancel" });
  });
  pull.addEventListener("click", () => model.send({ action: "pull" }));
  log.addEventListener("click", () => {
    logOpen = !logOpen;
    if (logOpen) model.send({ action: "log" });
    draw();
  });

  const redraw = () => draw();
  for (const name of JOB_TRAITS) model.on(`change:${name}`, redraw);
  draw();
  const clockTimer = window.setInterval(tick, 1000);
  return () => {
    window.clearInterval(clockTimer);
    window.clearTimeout(confirming);
    for (const name of JOB_TRAITS) model.off(`change:${name}`, redraw);
  };
}

/**
 * The registry as a table (`%rx jobs`): one row per job, with attach, log and cancel buttons.
 * @param {{ model: Model, el: HTMLElement }} context
 * @returns {() => void} cleanup
 */
function renderJobs({ model, el }) {
  const root = element("div", "rx-jobs");
  const table = document.createElement("table");
  table.className = "rx-jobs-table";
  const head = document.createElement("thead");
  head.innerHTML = "<tr><th>state</th><th>job</th><th>target</th><th>age</th><th>cell</th><th></th></tr>";
  const body = document.createElement("tbody");
  table.append(head, body);
  root.append(table);
  el.append(root);
  /** @type {Record<string, number>} */
  const confirming = {};

  function draw() {
    body.replaceChildren();
    const rows = model.get("rows");
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = element("td", "rx-empty", "no jobs yet");
      td.setAttribute("colspan", "6");
      tr.append(td);
      body.append(tr);
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.state = row.state;
      tr.dataset.job = row.id;
      const state = element("td", "rx-state");
      state.append(element("span", "rx-icon", ICONS[row.state] || "?"), element("span", "rx-state-label", row.state));
      const id = element("td", "rx-id", row.id);
      if (!row.mine) id.append(element("span", "rx-other", "other kernel"));
      const cell = element("td", "rx-cell", row.first_line);
      if (row.reason && row.state !== "done") cell.append(element("div", "rx-reason", row.reason));
      const actions = element("td", "rx-actions");
      const attach = element("button", "rx-button rx-attach", "Attach");
      attach.addEventListener("click", () => model.send({ action: "attach", id: row.id }));
      const log = element("button", "rx-button rx-log", "Log");
      log.addEventListener("click", () => model.send({ action: "log", id: row.id }));
      actions.append(attach, log);
      if (!FINAL.has(row.state)) {
        const cancel = element("button", "rx-button rx-cancel", "Cancel");
        cancel.addEventListener("click", () => {
          if (confirming[row.id] === undefined) {
            cancel.textContent = "Really cancel?";
            cancel.classList.add("rx-confirm");
            confirming[row.id] = window.setTimeout(() => {
              delete confirming[row.id];
              cancel.textContent = "Cancel";
              cancel.classList.remove("rx-confirm");
            }, 5000);
            return;
          }
          window.clearTimeout(confirming[row.id]);
          delete confirming[row.id];
          cancel.textContent = "Cancelling\u2026";
          /** @type {HTMLButtonElement} */ (cancel).disabled = true;
          model.send({ action: "cancel", id: row.id });
        });
        actions.append(cancel);
      }
      tr.append(state, id, element("td", "rx-target", row.target), element("td", "rx-age", row.age), cell, actions);
      body.append(tr);
    }
  }

  model.on("change:rows", draw);
  draw();
  return () => {
    for (const timer of Object.values(confirming)) window.clearTimeout(timer);
    model.off("change:rows", draw);
  };
}

/**
 * anywidget's entry point: a job, or the table of jobs.
 * @param {{ model: Model, el: HTMLElement }} context
 * @returns {() => void} cleanup
 */
function render(context) {
  return context.model.get("view") === "jobs" ? renderJobs(context) : renderJob(context);
}

export default { render };
