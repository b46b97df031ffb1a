// MYI's dashboard: plain JavaScript against the HTTP API of API.md, with the session cookie
// (credentials: "include"), as a cross-origin single-page app would call it.
"use strict";

const API = (window.MYI_API_URL || "").replace(/\/$/, "");
const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const state = { range: "all", kind: "tracks", by: "plays", topNext: null, historyNext: null, rank: 0 };
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function api(path, options = {}) {
  const init = { credentials: "include", ...options, headers: { ...(options.headers || {}) } };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers["content-type"] = "application/json";
  }
  const response = await fetch(API + path, init);
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || "error", error.message || response.statusText,
      response.headers.get("retry-after"));
  }
  return body;
}

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) return showSignIn();
  const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
  say(`${error.message}${wait}`, "error");
}

const number = (n) => Number(n).toLocaleString();
function duration(ms) {
  const minutes = Math.round(ms / 60000);
  return minutes >= 60 ? `${number(Math.floor(minutes / 60))} h ${minutes % 60} min` : `${minutes} min`;
}
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) q.set(k, v);
  return q.toString();
}
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function showSignIn() {
  $("app").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  const back = location.pathname + location.search.replace(/[?&]login_error=[^&]*/, "");
  $("login").href = `${API}/auth/login?${query({ return_to: back.startsWith("/") ? back : "/" })}`;
  const error = new URLSearchParams(location.search).get("login_error");
  if (error) say(`Signing in did not work (${error}). Please try again.`, "error");
}

async function start() {
  let me;
  try {
    me = await api("/me");
  } catch (error) {
    return fail(error);
  }
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("name").textContent = me.display_name || me.spotify_id;
  if (me.image_url) {
    $("avatar").onerror = () => { $("avatar").hidden = true; };
    $("avatar").onload = () => { $("avatar").hidden = false; };
    $("avatar").src = me.image_url;
  }
  showSync(me.sync);
  await Promise.all([loadWindow(), loadHistory(true), loadSpotifyTop(), loadImports()]);
}

function ago(iso) {
  const minutes = Math.round((Date.now() - Date.parse(iso)) / 60000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  return hours < 48 ? `${hours} h ago` : `${Math.round(hours / 24)} days ago`;
}

// GET /me's sync health: when MYI last read Spotify, a way back in when access lapsed, and a quiet
// word when plays may be missing (more were played between two syncs than Spotify keeps).
function showSync(sync) {
  const status = $("sync-status");
  const reconnect = $("reconnect");
  const last = sync.last_synced_at ? `Synced ${ago(sync.last_synced_at)}` : "Not synced yet";
  status.textContent = last;
  status.title = sync.last_synced_at ? new Date(sync.last_synced_at).toLocaleString() : "";
  reconnect.hidden = sync.status !== "reconnect_required";
  $("sync").hidden = sync.status === "reconnect_required";
  if (sync.status === "reconnect_required") {
    const back = location.pathname + location.search;
    reconnect.href = `${API}/auth/login?${query({ return_to: back.startsWith("/") ? back : "/" })}`;
    status.textContent = `${last} · Spotify access lapsed`;
    say("Spotify no longer accepts MYI's access: reconnect to resume syncing.", "error");
  } else if (sync.status === "paused") {
    status.textContent = `${last} · Spotify is not answering; MYI keeps trying`;
  }
  const gaps = $("gaps");
  gaps.hidden = !sync.possible_gaps;
  gaps.textContent = sync.possible_gaps
    ? `Some plays may be missing: ${number(sync.possible_gaps)} time(s) more was played between two syncs than Spotify keeps (its latest 50).`
    : "";
}

async function loadWindow() {
  try {
    const [overview, activity] = await Promise.all([
      api(`/me/stats/overview?${query({ range: state.range })}`),
      api(`/me/stats/activity?${query({ range: state.range })}`),
    ]);
    $("t-plays").textContent = number(overview.plays);
    $("t-time").textContent = duration(overview.ms_played);
    $("t-tracks").textContent = number(overview.tracks);
    $("t-artists").textContent = number(overview.artists);
    $("t-albums").textContent = number(overview.albums);
    drawDaily(overview.days);
    drawHeatmap(activity.heatmap);
    await loadTop(true);
  } catch (error) {
    fail(error);
  }
}

function drawDaily(days) {
  const svg = $("daily");
  svg.replaceChildren();
  const width = Math.max(days.length, 1);
  const most = Math.max(1, ...days.map((d) => d.plays));
  svg.setAttribute("viewBox", `0 0 ${width} 100`);
  days.forEach((day, i) => {
    const h = (day.plays / most) * 100;
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    bar.setAttribute("x", i);
    bar.setAttribute("y", 100 - h);
    bar.setAttribute("width", 0.9);
    bar.setAttribute("height", h);
    const tip = document.createElementNS("http://www.w3.org/2000/svg", "title");
    tip.textContent = `${day.date}: ${number(day.plays)} plays`;
    bar.append(tip);
    svg.append(bar);
  });
}

function drawHeatmap(heatmap) {
  const table = $("heatmap");
  table.querySelectorAll("tr").forEach((row) => row.remove());
  const most = Math.max(1, ...heatmap.flat());
  const head = el("tr", {}, el("th", { scope: "col", text: "" }));
  for (let h = 0; h < 24; h += 1) head.append(el("th", { scope: "col", text: h % 3 === 0 ? String(h) : "" }));
  table.append(head);
  heatmap.forEach((hours, d) => {
    const row = el("tr", {}, el("th", { scope: "row", text: WEEKDAYS[d] }));
    hours.forEach((plays, h) => {
      const cell = el("td", { title: `${WEEKDAYS[d]} ${h}:00: ${number(plays)} plays` });
      cell.style.setProperty("--level", (plays / most).toFixed(3));
      row.append(cell);
    });
    table.append(row);
  });
}

async function loadTop(reset) {
  if (reset) {
    state.topNext = null;
    state.rank = 0;
    $("top").replaceChildren();
  }
  try {
    const page = await api(`/me/stats/top/${state.kind}?${query({
      range: state.range, by: state.by, limit: 10, cursor: state.topNext,
    })}`);
    for (const item of page.items) {
      const who = (item.artists || []).map((a) => a.name).join(", ");
      const figure = state.by === "plays" ? `${number(item.plays)} plays` : duration(item.ms_played);
      $("top").append(el("li", { "data-testid": `top-${state.kind}-item` },
        el("span", { class: "rank", text: String(item.rank) }),
        el("span", { class: "name", text: item.name }),
        who ? el("span", { class: "by", text: who }) : null,
        el("span", { class: "figure", text: figure })));
    }
    state.topNext = page.next;
    $("top-more").hidden = !page.next;
  } catch (error) {
    fail(error);
  }
}

async function loadHistory(reset) {
  if (reset) {
    state.historyNext = null;
    $("history").replaceChildren();
  }
  try {
    const page = await api(`/me/history?${query({ limit: 20, cursor: state.historyNext })}`);
    for (const play of page.items) {
      const when = new Date(play.played_at).toLocaleString();
      const who = play.track.artists.map((a) => a.name).join(", ");
      $("history").append(el("li", {},
        el("span", { class: "name", text: play.track.name }),
        el("span", { class: "by", text: who }),
        el("time", { datetime: play.played_at, text: when })));
    }
    state.historyNext = page.next;
    $("history-more").hidden = !page.next;
  } catch (error) {
    fail(error);
  }
}

async function loadSpotifyTop() {
  try {
    const kind = $("sp-kind").value;
    const page = await api(`/me/spotify-top/${kind}?${query({ term: $("sp-term").value })}`);
    $("spotify-top").replaceChildren(...page.items.map((item) => el("li", {}, el("span", { class: "name", text: item.name }))));
    $("sp-note").textContent = page.refreshed_at
      ? `As Spotify ranked it on ${new Date(page.refreshed_at).toLocaleDateString()}.`
      : "Asked Spotify for this list; it appears shortly.";
  } catch (error) {
    fail(error);
  }
}

async function loadImports() {
  try {
    const page = await api("/me/imports?limit=5");
    $("imports").replaceChildren(...page.items.map((job) => el("li", {
      text: `${job.filename}: ${job.status}` + (job.status === "completed"
        ? `, ${number(job.counts.added)} added, ${number(job.counts.merged)} merged, ${number(job.counts.duplicates)} already there`
        : job.error ? `: ${job.error}` : ""),
    })));
  } catch (error) {
    fail(error);
  }
}

function showProgress(percent, text) {
  $("progress").hidden = false;
  $("progress-bar").style.width = `${Math.max(0, Math.min(100, percent)).toFixed(1)}%`;
  $("progress-text").textContent = text;
}

function send(upload, file) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [k, v] of Object.entries(upload.fields)) form.append(k, v);
    form.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", upload.url);
    xhr.upload.onprogress = (e) => e.lengthComputable && showProgress((e.loaded / e.total) * 100, `Uploading… ${Math.round((e.loaded / e.total) * 100)}%`);
    xhr.onload = () => (xhr.status < 300 ? resolve() : reject(new Error(`The upload failed (HTTP ${xhr.status}).`)));
    xhr.onerror = () => reject(new Error("The upload failed: the file could not be sent."));
    xhr.send(form);
  });
}

async function upload(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  say("");
  try {
    const created = await api("/me/imports", { method: "POST", json: { filename: file.name, size_bytes: file.size } });
    await send(created.upload, file);
    let job = created.import;
    while (!["completed", "failed"].includes(job.status)) {
      await new Promise((r) => setTimeout(r, 1000));
      job = await api(`/me/imports/${job.id}`);
      showProgress(job.progress.percent, `Importing… ${number(job.progress.records_read)} records read (${job.progress.percent.toFixed(0)}%)`);
    }
    if (job.status === "failed") {
      showProgress(0, `The import failed: ${job.error}`);
    } else {
      const c = job.counts;
      showProgress(100, `Done: ${number(c.added)} plays added, ${number(c.merged)} made exact, ${number(c.duplicates)} already there.`);
      await Promise.all([loadWindow(), loadHistory(true), loadImports()]);
    }
  } catch (error) {
    fail(error);
  }
}

function press(group, button) {
  group.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelector(".windows").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-range]");
    if (!button) return;
    press(e.currentTarget, button);
    state.range = button.dataset.range;
    loadWindow();
  });
  document.querySelector(".tabs").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-kind]");
    if (!button) return;
    press(e.currentTarget, button);
    state.kind = button.dataset.kind;
    loadTop(true);
  });
  $("by").addEventListener("change", (e) => { state.by = e.target.value; loadTop(true); });
  $("top-more").addEventListener("click", () => loadTop(false));
  $("history-more").addEventListener("click", () => loadHistory(false));
  $("sp-kind").addEventListener("change", loadSpotifyTop);
  $("sp-term").addEventListener("change", loadSpotifyTop);
  $("upload").addEventListener("submit", upload);
  $("sync").addEventListener("click", async () => {
    try {
      await api("/me/sync", { method: "POST" });
      say("Syncing with Spotify: new plays appear in a moment.");
      setTimeout(() => Promise.all([loadWindow(), loadHistory(true)]), 5000);
    } catch (error) {
      fail(error);
    }
  });
  $("logout").addEventListener("click", async () => {
    try {
      await api("/auth/logout", { method: "POST" });
    } finally {
      showSignIn();
    }
  });
  start();
});
