"use strict";
const ROW_HEIGHT = @ROW_HEIGHT@;  // a series on its page (SERIES_ROW_HEIGHT)
const SERIES = @SERIES@;  // the column of a study's series count
const SEARCHED = @SEARCHED@;  // the columns a search looks in: patient to sender
const DATE = @DATE@;  // the column of the study's date
const table = document.getElementById("studies");
const bodies = Array.from(table.tBodies);
const rows = bodies.flatMap((body) => Array.from(body.rows));
const perBody = bodies[0].rows.length;
let order = rows.slice();  // the rows as sorted now
const search = document.getElementById("q");
const count = document.getElementById("count");
const copied = document.getElementById("copied");
const headers = Array.from(table.tHead.rows[0].cells);
const fold = (text) => text.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
let haystacks = null;

function remembered() {
  try { return localStorage.getItem("dicomfs-view"); } catch (e) { return null; }
}

function haystack(row) {
  const cells = Array.from(row.cells).slice(0, SEARCHED);
  const text = cells.map((cell) => cell.textContent).join(" | ");
  return fold(text + " " + text.replace(/(\d{4})-(\d\d)-(\d\d)/g, "$1$2$3"));
}

// A range of study dates, as dicomfs find takes one: 2004-06-01..2004-06-30, either
// end left out for no bound. Its test of a row, or null for a word that is not one.
function dateRange(word) {
  const day = "(\\d{4})-?(\\d\\d)-?(\\d\\d)";
  const found = new RegExp("^(?:" + day + ")?\\.\\.(?:" + day + ")?$").exec(word);
  if (!found || !(found[1] || found[4])) return null;
  const low = found[1] ? found[1] + found[2] + found[3] : "";
  const high = found[4] ? found[4] + found[5] + found[6] : "99999999";
  return (row) => {
    const date = row.cells[DATE].textContent.replace(/-/g, "");
    return date !== "" && date >= low && date <= high;
  };
}

function state() {
  return new URLSearchParams(location.hash.slice(1));
}

// The search and the order go into the address a moment after the last key: a
// replaceState on every keystroke makes Chromium throttle them.
let kept = {};
let keeping = null;
function keep(changes) {
  Object.assign(kept, changes);
  clearTimeout(keeping);
  keeping = setTimeout(write, 250);
}

function write() {
  clearTimeout(keeping);
  const now = state();
  for (const [key, value] of Object.entries(kept)) {
    if (value) now.set(key, value); else now.delete(key);
  }
  kept = {};
  history.replaceState(null, "", "#" + now.toString());
}

function filter() {
  const words = fold(search.value).split(/[\s,]+/).filter(Boolean);
  const tests = words.map(
    (word) => dateRange(word) || ((row) => haystacks.get(row).includes(word)),
  );
  haystacks = haystacks || new Map(rows.map((row) => [row, haystack(row)]));
  let shown = 0;
  for (const row of rows) {
    const hidden = !tests.every((test) => test(row));
    if (row.hidden !== hidden) row.hidden = hidden;
    shown += !hidden;
  }
  pack();
  count.textContent = words.length ? shown + " of " + rows.length + " studies" : "";
  keep({q: search.value});
}

function sortBy(column, direction) {
  const key = (row) => {
    const cell = row.cells[column];
    return cell.dataset.v !== undefined ? Number(cell.dataset.v) : fold(cell.textContent);
  };
  const keyed = rows.map((row, i) => [key(row), i]);
  const sign = direction === "ascending" ? 1 : -1;
  keyed.sort((a, b) => (a[0] < b[0] ? -sign : a[0] > b[0] ? sign : a[1] - b[1]));
  order = keyed.map(([, i]) => rows[i]);
  pack();
  headers.forEach((th, i) => {
    if (i === column) th.setAttribute("aria-sort", direction);
    else th.removeAttribute("aria-sort");
  });
}

// The rows shown, in order, then the others, perBody to a group: the groups on screen
// hold rows to show, so Chromium still lays out only those.
function pack() {
  const placed = order.filter((row) => !row.hidden).concat(order.filter((row) => row.hidden));
  bodies.forEach((body, i) => {
    const part = placed.slice(i * perBody, (i + 1) * perBody);
    const withPanels = part.flatMap((row) => (panels.has(row) ? [row, panels.get(row)] : [row]));
    body.replaceChildren(...withPanels);
    body.hidden = !part.length || part[0].hidden;
  });
  for (const [row, panel] of panels) panel.hidden = row.hidden;
}

// A click on a study's row shows its series below it (a page of the mount, in a frame
// as tall as they need), and another click hides them.
const panels = new Map();
function toggle(row) {
  const open = panels.get(row);
  if (open) {
    open.remove();
    panels.delete(row);
    return;
  }
  const panel = document.createElement("tr");
  const cell = document.createElement("td");
  const frame = document.createElement("iframe");
  panel.className = "series";
  frame.title = "The study's series";
  frame.height = String(ROW_HEIGHT * Number(row.cells[SERIES].textContent) + 4);
  frame.src = ".series." + table.dataset.view + "." + row.dataset.s + ".html";  // views.series_page_name
  cell.appendChild(frame);
  panel.appendChild(cell);
  row.after(panel);
  panels.set(row, panel);
}

function shellQuoted(text) {
  return "'" + text.replace(/'/g, "'\\''") + "'";
}

function copy(button) {
  const path = table.dataset.base + "/" + button.previousElementSibling.textContent;
  const command = "cd " + shellQuoted(path);
  copied.dataset.command = command;
  const shown = () => { copied.textContent = "Copied: " + command; };
  const byHand = () => {
    const area = document.createElement("textarea");
    area.value = command;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    shown();
  };
  if (navigator.clipboard) navigator.clipboard.writeText(command).then(shown, byHand);
  else byHand();
}

function wire() {
  for (const other of document.querySelectorAll("nav a")) {
    other.addEventListener("click", (event) => {
      try {
        localStorage.setItem("dicomfs-view", other.dataset.view);
      } catch (e) { /* a browser without storage: the choice is not kept */ }
      event.preventDefault();
      write();  // the search just typed comes along
      location.href = other.href + location.hash;
    });
  }
  headers.forEach((th, column) => {
    th.addEventListener("click", () => {
      // First the newest or largest (th data-down), or A to Z; then the other way.
      const sorted = th.getAttribute("aria-sort");
      const first = th.hasAttribute("data-down") ? "descending" : "ascending";
      const direction = !sorted ? first : sorted === "descending" ? "ascending" : "descending";
      sortBy(column, direction);
      keep({sort: column + "," + direction});
    });
  });
  table.addEventListener("click", (event) => {
    const row = event.target.closest("tbody tr");
    if (event.target.tagName === "BUTTON") copy(event.target);
    else if (row && row.dataset.s && !String(getSelection())) toggle(row);
  });
  table.addEventListener("mouseover", (event) => {
    const cell = event.target.closest("code, td");
    if (cell && !cell.title && cell.scrollWidth > cell.clientWidth) cell.title = cell.textContent;
  });
  search.addEventListener("input", filter);
  const start = state();
  const [column, direction] = (start.get("sort") || "").split(",");
  if (headers[Number(column)] && (direction === "ascending" || direction === "descending")) {
    sortBy(Number(column), direction);
  }
  if (start.get("q")) {
    search.value = start.get("q");
    filter();
  }
  document.documentElement.classList.add("js");  // shows the search box and the buttons
}

// The view the user chose last, if this page is not it; else this page comes alive.
const wanted = remembered();
const link = wanted && document.querySelector('nav a[data-view="' + CSS.escape(wanted) + '"]');
if (link && wanted !== table.dataset.view) location.replace(link.href + location.hash);
else wire();
