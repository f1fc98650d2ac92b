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
 * Why a job did not end done: the reason, and the cell's error unless the reason says it already.
 * @param {string} reason
 * @param {string} error
 * @returns {string}
 */
function problem(reason, error) {
  if (error && !(reason || "").includes(error)) return [reason, error].filter(Boolean).join(" \u2014 ");
  return reason || "";
}

/**
 * The state as the badge says it: a job array some of whose elements ended done says how many
 * ("3 of 4 done"), not "failed" beside the values it pulled (as rx_magic/ui/widget.py's state_label).
 * @param {string} state
 * @param {string} letters
 * @returns {string}
 */
function stateLabel(state, letters) {
  if (state === "failed" && letters && letters.includes("d")) {
    return `${[...letters].filter((letter) => letter === "d").length} of ${letters.length} done`;
  }
  return state;
}

/**
 * A live region: screen readers read what is written into it, politely, without moving the focus.
 * @returns {HTMLElement}
 */
function liveRegion() {
  const region = element("div", "rx-live");
  region.setAttribute("aria-live", "polite");
  region.setAttribute("role", "status");
  return region;
}

/**
 * A new element with a class and optional text.
 * @param {string} tag
 * @param {string} className
 * @param {string} [text]
 * @returns {HTMLElement}
 */
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
  icon.setAttribute("aria-hidden", "true");
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
  const live = liveRegion();
  root.append(head, cell, timing, resources, strip, reason, stdout, stderr, names, notes, fullLog, live);
  el.append(root);

  // One clock: the kernel's time as its last message said it, carried on by the browser's monotonic
  // performance.now(); a later message moves it forward only, so the figures never go backwards.
  let kernelAt = 0;
  let browserAt = 0;
  const kernelNow = () => kernelAt + (performance.now() - browserAt) / 1000;
  let shownRan = 0;
  let shownWait = 0;
  let announced = "";
  let confirming = /** @type {number | undefined} */ (undefined);
  let logOpen = false;
  let couldPull = model.get("can_pull");

  function syncClock() {
    const sent = model.get("server_now");
    if (sent && (!kernelAt || sent > kernelNow())) {
      kernelAt = sent;
      browserAt = performance.now();
    }
  }

  function tick() {
    const now = kernelNow();
    const state = model.get("state");
    const submitted = model.get("submitted_at");
    const started = model.get("started_at");
    const ended = model.get("ended_at");
    const walltime = model.get("walltime");
    const parts = [];
    if (started) {
      parts.push(`queued ${duration(started - submitted)}`);
      let ran = (ended || (FINAL.has(state) ? started : now)) - started;
      if (!FINAL.has(state)) ran = shownRan = Math.max(shownRan, ran);
      parts.push(`${FINAL.has(state) ? "ran" : "running"} ${duration(ran)}`);
      if (walltime) {
        const used = Math.min(1, Math.max(0, ran / walltime));
        fill.style.width = `${(used * 100).toFixed(1)}%`;
        fill.classList.toggle("rx-bar-late", used > 0.9);
      }
    } else if (submitted) {
      let waited = (ended || (FINAL.has(state) ? submitted : now)) - submitted;
      if (!FINAL.has(state)) waited = shownWait = Math.max(shownWait, waited);
      parts.push(`${FINAL.has(state) ? "waited" : "waiting"} ${duration(waited)}`);
      fill.style.width = "0%";
    }
    clock.textContent = parts.join(" \u00B7 ");
    bar.style.display = walltime ? "" : "none";
    limit.textContent = walltime ? `of ${duration(walltime)} walltime` : "";
  }

  function draw() {
    const state = model.get("state");
    syncClock();
    root.dataset.state = state;
    icon.textContent = ICONS[state] || "?";
    label.textContent = stateLabel(state, model.get("elements"));
    const news = `job ${model.get("job_id")}: ${label.textContent}`;
    if (news !== announced) live.textContent = announced = news;
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
    const canPull = model.get("can_pull");
    if (canPull && !couldPull) {     // offered again (the pull asked failed): the button works again
      pull.disabled = false;
      pull.textContent = "Pull results";
    }
    couldPull = canPull;
    pull.style.display = canPull ? "" : "none";
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
  pull.addEventListener("click", () => {
    pull.disabled = true;
    pull.textContent = "Pull asked\u2026";
    model.send({ action: "pull" });
  });
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

/** The table's columns: header, how a row sorts by it. */
const COLUMNS = [
  { name: "state", key: (/** @type {any} */ row) => row.state },
  { name: "job", key: (/** @type {any} */ row) => row.id },
  { name: "target", key: (/** @type {any} */ row) => row.target },
  { name: "age", key: (/** @type {any} */ row) => -(row.submitted_at || 0) },
  { name: "cell", key: (/** @type {any} */ row) => row.first_line },
];

/**
 * The registry as a table (`%rx jobs`): one row per job, with attach, log and cancel buttons.
 * It scrolls inside a bounded height under a header that stays; a column's header button sorts by it.
 * @param {{ model: Model, el: HTMLElement }} context
 * @returns {() => void} cleanup
 */
function renderJobs({ model, el }) {
  const root = element("div", "rx-jobs");
  const scroller = element("div", "rx-jobs-scroll");
  scroller.tabIndex = 0; // a scrolling region is reachable by keyboard
  scroller.setAttribute("role", "region");
  scroller.setAttribute("aria-label", "rx_magic jobs");
  const table = document.createElement("table");
  table.className = "rx-jobs-table";
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  const body = document.createElement("tbody");
  const live = liveRegion();
  let sortBy = -1; // the registry's order (newest first) until a header is pressed
  let ascending = true;
  /** @type {Record<string, string>} */
  let shownStates = {};
  /** @type {HTMLButtonElement[]} */
  const sorters = [];
  COLUMNS.forEach((column, index) => {
    const th = document.createElement("th");
    th.scope = "col";
    const button = /** @type {HTMLButtonElement} */ (element("button", "rx-sort", column.name));
    button.type = "button";
    button.addEventListener("click", () => {
      ascending = sortBy === index ? !ascending : true;
      sortBy = index;
      draw();
      live.textContent = `sorted by ${column.name}, ${ascending ? "ascending" : "descending"}`;
    });
    sorters.push(button);
    th.append(button);
    headRow.append(th);
  });
  const actionsHead = document.createElement("th");
  actionsHead.append(element("span", "rx-live", "actions"));
  headRow.append(actionsHead);
  head.append(headRow);
  table.append(head, body);
  scroller.append(table);
  root.append(scroller, live);
  el.append(root);
  /** @type {Record<string, number>} */
  const confirming = {};

  function sortedRows() {
    const rows = [...model.get("rows")];
    if (sortBy < 0) return rows;
    const key = COLUMNS[sortBy].key;
    rows.sort((a, b) => {
      const x = key(a);
      const y = key(b);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    return rows;
  }

  function draw() {
    sorters.forEach((button, index) => {
      const th = /** @type {HTMLElement} */ (button.parentElement);
      th.setAttribute("aria-sort", index === sortBy ? (ascending ? "ascending" : "descending") : "none");
      button.dataset.sorted = index === sortBy ? (ascending ? "ascending" : "descending") : "";
    });
    body.replaceChildren();
    const rows = sortedRows();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = element("td", "rx-empty", "no jobs yet");
      td.setAttribute("colspan", "6");
      tr.append(td);
      body.append(tr);
    }
    const changed = [];
    for (const row of rows) {
      if (shownStates[row.id] && shownStates[row.id] !== row.state) changed.push(`job ${row.id}: ${row.state}`);
      const tr = document.createElement("tr");
      tr.dataset.state = row.state;
      tr.dataset.job = row.id;
      const state = element("td", "rx-state");
      const icon = element("span", "rx-icon", ICONS[row.state] || "?");
      icon.setAttribute("aria-hidden", "true");
      state.append(icon, element("span", "rx-state-label", row.state));
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
          live.textContent = `cancelling job ${row.id}`;
          model.send({ action: "cancel", id: row.id });
        });
        actions.append(cancel);
      }
      tr.append(state, id, element("td", "rx-target", row.target), element("td", "rx-age", row.age), cell, actions);
      body.append(tr);
    }
    shownStates = Object.fromEntries(rows.map((row) => [row.id, row.state]));
    if (changed.length) live.textContent = changed.join("; ");
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
