// MYI's dashboard: plain JavaScript against the HTTP API of API.md, with the session cookie
// (credentials: "include"), as a cross-origin single-page app would call it. No build step, no
// library: the charts are drawn by hand in SVG and HTML, the year's image on a canvas.
//
// Views live in the URL's query, so a reload or a shared link shows the same thing:
//   ?                         the dashboard, all time      ?range=4w|6m|1y|all
//   ?year=2024                the dashboard for a year     ?from=2024-03-01&to=2024-05-31
//   ?view=year&year=2024      the year in review           ?view=imports   ?view=account
"use strict";

const API = (window.MYI_API_URL || "").replace(/\/$/, "");
const RANGES = ["4w", "6m", "1y", "all"];
const RANGE_NAMES = { "4w": "the last 4 weeks", "6m": "the last 6 months", "1y": "the last year", all: "all time" };
const VIEWS = ["dashboard", "year", "imports", "account"];
const VIEW_TITLES = { dashboard: "Dashboard", year: "Year in review", imports: "Import", account: "Your data" };
const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const SINGULAR = { tracks: "track", artists: "artist", albums: "album" };
const TOP_PAGE = 10;
const HISTORY_PAGE = 50;
const FIRST_LAST_BUDGET = 1500; // plays of history walked to find a year's first and last play
const UPLOAD_TTL_MS = 15 * 60 * 1000; // an upload not arrived by then never will (UPLOAD_URL_TTL_SECONDS)
const DELETE_PHRASE = "delete my account";
const SKIP_WORDS = {
  short_play: ["short play (under 30 s and skipped)", "short plays (under 30 s and skipped)"],
  incognito: ["play in a private session", "plays in private sessions"],
  episode: ["podcast or video episode", "podcast or video episodes"],
  audiobook: ["audiobook chapter", "audiobook chapters"],
  no_track_uri: ["record without a Spotify track (a local file or the like)", "records without a Spotify track (local files and the like)"],
  invalid: ["unreadable record", "unreadable records"],
};
const IMPORT_STATUS = {
  awaiting_upload: "waiting for the upload", queued: "queued", running: "importing", completed: "done", failed: "failed",
};

const state = {
  me: null,
  route: null,
  measure: "plays",
  kind: "tracks",
  by: "plays",
  top: { next: null, loading: false },
  history: { next: null, loading: false, day: null, list: null, zone: null },
  imports: { next: null },
  following: null,
  followingStatus: null,
  exporting: null,
  gen: 0,
  overview: null,
  activity: null,
  year: null,
};
const cache = new Map();
const $ = (id) => document.getElementById(id);

// ---- the API -------------------------------------------------------------------------------------

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
  let response;
  try {
    response = await fetch(API + path, init);
  } catch {
    throw new ApiError(0, "unreachable", "MYI could not be reached. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || "error",
      error.message || `MYI answered ${response.status} ${response.statusText}.`, response.headers.get("retry-after"));
  }
  return body;
}

// GETs whose answer stays the same until the zone changes, an import lands or a sync runs.
function cached(path) {
  if (!cache.has(path)) cache.set(path, api(path).catch((error) => { cache.delete(path); throw error; }));
  return cache.get(path);
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
  return undefined;
}

// ---- small helpers -------------------------------------------------------------------------------

const number = (n) => Number(n).toLocaleString();
const plural = (n, one, many) => `${number(n)} ${n === 1 ? one : many}`;
function duration(ms) {
  const minutes = Math.round(ms / 60000);
  if (ms > 0 && minutes === 0) return `${Math.round(ms / 1000)} s`;
  return minutes >= 60 ? `${number(Math.floor(minutes / 60))} h ${minutes % 60} min` : `${minutes} min`;
}
function hours(ms) {
  const h = ms / 3600000;
  return h >= 100 ? number(Math.round(h)) : h.toLocaleString(undefined, { maximumFractionDigits: 1 });
}
function clock(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  return q.toString();
}
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
const measureText = (m) => (m === "plays" ? "plays" : "listening time");
const figureOf = (m, item) => (m === "plays" ? plural(item.plays, "play", "plays") : duration(item.ms_played));

// ---- time zones and dates ------------------------------------------------------------------------
// Instants are shown in the account's zone (the one the statistics are counted in), never the
// browser's; calendar dates (YYYY-MM-DD, already in that zone) are formatted as they are.

const UTC_NAMES = new Set(["UTC", "Etc/UTC", "Etc/GMT", "GMT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu",
  "Etc/GMT0", "GMT0", "Etc/GMT+0", "Etc/GMT-0", "Etc/Greenwich", "Greenwich", "UCT", "Etc/UCT"]);
const canonicalZone = (zone) => (UTC_NAMES.has(zone) ? "UTC" : zone);
const sameZone = (a, b) => canonicalZone(a) === canonicalZone(b);
function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || null;
  } catch {
    return null;
  }
}
const formats = new Map();
function zoneFormat(opts) {
  let zone = (state.me && state.me.timezone) || "UTC";
  const key = `${zone}|${JSON.stringify(opts)}`;
  if (!formats.has(key)) {
    let format;
    try {
      format = new Intl.DateTimeFormat(undefined, { timeZone: zone, ...opts });
    } catch { // a zone the database knows and this browser does not
      zone = "UTC";
      format = new Intl.DateTimeFormat(undefined, { timeZone: zone, ...opts });
    }
    formats.set(key, format);
  }
  return formats.get(key);
}
function zoneDate(iso) { // the calendar date of an instant in the account's zone
  const parts = {};
  const zone = (state.me && state.me.timezone) || "UTC";
  let format;
  try {
    format = new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" });
  } catch {
    format = new Intl.DateTimeFormat("en-CA", { timeZone: "UTC", year: "numeric", month: "2-digit", day: "2-digit" });
  }
  for (const p of format.formatToParts(new Date(iso))) parts[p.type] = p.value;
  return `${parts.year}-${parts.month}-${parts.day}`;
}
const when = (iso) => zoneFormat({ dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
const timeOfDay = (iso) => zoneFormat({ hour: "2-digit", minute: "2-digit" }).format(new Date(iso));
function calDate(s) {
  const [y, m, d] = s.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d));
}
const calStr = (date) => date.toISOString().slice(0, 10);
const addDays = (date, n) => new Date(date.getTime() + n * 86400000);
const calFormat = (opts) => new Intl.DateTimeFormat(undefined, { timeZone: "UTC", ...opts });
const dayName = (s, style = "medium") => calFormat({ dateStyle: style }).format(calDate(s));
const isDate = (s) => typeof s === "string" && /^\d{4}-\d{2}-\d{2}$/.test(s) && !Number.isNaN(calDate(s).getTime())
  && calStr(calDate(s)) === s;
const hourName = (h) => `${String(h).padStart(2, "0")}:00`;
const MONTHS = Array.from({ length: 12 }, (_, m) => calFormat({ month: "long" }).format(new Date(Date.UTC(2000, m, 1))));

// ---- the URL -------------------------------------------------------------------------------------

function parseRoute(search) {
  const q = new URLSearchParams(search);
  const view = VIEWS.includes(q.get("view")) ? q.get("view") : "dashboard";
  const route = { view };
  if (view === "year") {
    route.year = /^\d{4}$/.test(q.get("year") || "") ? Number(q.get("year")) : null;
  } else if (view === "dashboard") {
    const from = q.get("from");
    const to = q.get("to");
    const year = q.get("year");
    const range = q.get("range");
    if (isDate(from) && isDate(to) && from <= to) route.window = { kind: "custom", from, to };
    else if (/^\d{4}$/.test(year || "")) route.window = { kind: "year", year: Number(year) };
    else route.window = { kind: "range", range: RANGES.includes(range) ? range : "all" };
  }
  return route;
}

function routeSearch(route) {
  if (route.view === "year") return `?${query({ view: "year", year: route.year })}`;
  if (route.view !== "dashboard") return `?view=${route.view}`;
  const w = route.window || { kind: "range", range: "all" };
  if (w.kind === "custom") return `?${query({ from: w.from, to: w.to })}`;
  if (w.kind === "year") return `?year=${w.year}`;
  return w.range === "all" ? "" : `?range=${w.range}`;
}

function windowParams(w) {
  if (w.kind === "custom") return { from: w.from, to: w.to };
  if (w.kind === "year") return { from: `${w.year}-01-01`, to: `${w.year}-12-31` };
  return { range: w.range };
}

function go(route, { replace = false } = {}) {
  const url = `${location.pathname}${routeSearch(route)}`;
  if (url !== location.pathname + location.search) history[replace ? "replaceState" : "pushState"](null, "", url);
  render();
}

// ---- signing in and out --------------------------------------------------------------------------

function loginHref() {
  const back = location.pathname + location.search.replace(/[?&]login_error=[^&]*/, "");
  return `${API}/auth/login?${query({ return_to: back.startsWith("/") ? back : "/" })}`;
}

function showSignIn(note) {
  state.me = null;
  state.following = null;
  state.exporting = null;
  cache.clear();
  document.querySelectorAll(".view").forEach((v) => { v.hidden = true; });
  $("who").hidden = true;
  $("nav").hidden = true;
  $("zone-offer").hidden = true;
  $("import-banner").hidden = true;
  $("gaps").hidden = true;
  $("signin").hidden = false;
  document.title = "MYI: your listening history";
  $("login").href = loginHref();
  $("signed-out-note").hidden = !note;
  $("signed-out-note").textContent = note || "";
  say("");
  const error = new URLSearchParams(location.search).get("login_error");
  if (error) say(`Signing in did not work (${error === "access_denied" ? "Spotify's consent was declined" : error}). Please try again.`, "error");
}

async function start() {
  try {
    applyMe(await api("/me"));
  } catch (error) {
    fail(error);
    return;
  }
  render();
  checkRunningImport();
}

function applyMe(me) {
  const zoneChanged = state.me && state.me.timezone !== me.timezone;
  state.me = me;
  if (zoneChanged) {
    cache.clear();
    formats.clear();
  }
  $("signin").hidden = true;
  $("who").hidden = false;
  $("nav").hidden = false;
  $("name").textContent = me.display_name || me.spotify_id;
  if (me.image_url && !$("avatar").src) {
    $("avatar").onerror = () => { $("avatar").hidden = true; };
    $("avatar").onload = () => { $("avatar").hidden = false; };
    $("avatar").src = me.image_url;
  }
  $("zone-name").textContent = me.timezone;
  $("account-zone").textContent = me.timezone;
  $("heat-zone").textContent = `(${me.timezone})`;
  showSync(me.sync);
  showZoneOffer();
}

function ago(iso) {
  const minutes = Math.round((Date.now() - Date.parse(iso)) / 60000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  const h = Math.round(minutes / 60);
  return h < 48 ? `${h} h ago` : `${Math.round(h / 24)} days ago`;
}

// GET /me's sync health: when MYI last read Spotify, a way back in when access lapsed, and a quiet
// word when plays may be missing (more were played between two syncs than Spotify keeps).
function showSync(sync) {
  const status = $("sync-status");
  const reconnect = $("reconnect");
  const last = sync.last_synced_at ? `Synced ${ago(sync.last_synced_at)}` : "Not synced yet";
  status.textContent = last;
  status.title = sync.last_synced_at ? when(sync.last_synced_at) : "";
  reconnect.hidden = sync.status !== "reconnect_required";
  $("sync").hidden = sync.status === "reconnect_required";
  if (sync.status === "reconnect_required") {
    reconnect.href = loginHref();
    status.textContent = `${last} · Spotify access lapsed`;
    say("Spotify no longer accepts MYI's access: reconnect to resume syncing.", "error");
  } else if (sync.status === "paused") {
    status.textContent = `${last} · Spotify is not answering; MYI keeps trying`;
  }
  const gaps = $("gaps");
  gaps.hidden = !sync.possible_gaps;
  gaps.textContent = sync.possible_gaps
    ? `Some plays may be missing: ${plural(sync.possible_gaps, "time", "times")} more was played between two syncs than Spotify keeps (its latest 50).`
    : "";
}

// ---- the time zone -------------------------------------------------------------------------------

const offerKey = (browser, account) => `myi.zone-offer.kept:${browser}|${account}`;

function showZoneOffer() {
  const browser = browserZone();
  const account = state.me.timezone;
  let kept = false;
  try {
    kept = localStorage.getItem(offerKey(browser, account)) === "1";
  } catch { /* storage may be off */ }
  const offer = $("zone-offer");
  offer.hidden = !browser || sameZone(browser, account) || kept;
  if (offer.hidden) return;
  $("offer-browser").textContent = browser;
  $("offer-account").textContent = account;
  $("offer-accept").textContent = `Use ${browser}`;
}

async function setZone(zone) {
  try {
    applyMe(await api("/me", { method: "PATCH", json: { timezone: zone } }));
  } catch (error) {
    fail(error);
    return false;
  }
  cache.clear();
  formats.clear();
  state.history.zone = null;
  say(`Your statistics are now counted in ${state.me.timezone}.`);
  render();
  return true;
}

function zoneNames() {
  let names = [];
  try {
    names = Intl.supportedValuesOf("timeZone");
  } catch { /* an older browser: the current zones only */ }
  const all = new Set(names);
  for (const z of ["UTC", state.me.timezone, browserZone()]) if (z) all.add(z);
  return [...all].sort((a, b) => a.localeCompare(b));
}

function openZoneDialog() {
  const select = $("zone-select");
  select.replaceChildren(...zoneNames().map((z) => el("option", { value: z, text: z.replace(/_/g, " ") })));
  select.value = state.me.timezone;
  const browser = browserZone();
  const offer = $("zone-browser");
  offer.hidden = !browser || sameZone(browser, state.me.timezone);
  offer.textContent = `Pick my browser's zone (${browser})`;
  $("zone-dialog").showModal();
  select.focus();
}

// ---- rendering a view ----------------------------------------------------------------------------

function render() {
  if (!state.me) return;
  const route = parseRoute(location.search);
  const previous = state.route;
  state.route = route;
  state.gen += 1;
  for (const view of VIEWS) $(`view-${view}`).hidden = view !== route.view;
  document.querySelectorAll("#nav a").forEach((a) => {
    if (a.dataset.view === route.view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  document.title = `${VIEW_TITLES[route.view]} · MYI`;
  $("import-banner").hidden = !state.following || route.view === "imports";
  if (previous && previous.view !== route.view) $("main").focus({ preventScroll: true });
  if (route.view === "dashboard") renderDashboard(route);
  else if (route.view === "year") renderYear(route);
  else if (route.view === "imports") renderImports();
  else renderAccount();
}

// ---- the dashboard -------------------------------------------------------------------------------

async function overviewAll() {
  return cached(`/me/stats/overview?range=all`);
}

async function yearsWithPlays() {
  const all = await overviewAll();
  return [...new Set(all.days.filter((d) => d.plays > 0).map((d) => Number(d.date.slice(0, 4))))].sort((a, b) => b - a);
}

function windowLabel(window) {
  const from = Date.parse(window.from);
  const to = Date.parse(window.to) - 1; // the end is exclusive
  if (!(to > from)) return "";
  const a = zoneFormat({ dateStyle: "medium" }).format(new Date(from));
  const b = zoneFormat({ dateStyle: "medium" }).format(new Date(to));
  return a === b ? a : `${a} – ${b}`;
}

function showRangeControls(route) {
  const w = route.window;
  document.querySelectorAll(".windows button").forEach((b) => {
    b.setAttribute("aria-pressed", String(w.kind === "range" && b.dataset.range === w.range));
  });
  $("year-pick").value = w.kind === "year" ? String(w.year) : "";
  if (w.kind === "custom") {
    $("from").value = w.from;
    $("to").value = w.to;
  } else if (w.kind === "year") {
    $("from").value = `${w.year}-01-01`;
    $("to").value = `${w.year}-12-31`;
  }
}

async function fillYearPick(select, selected) {
  const years = await yearsWithPlays();
  const keep = select.querySelector("option[value='']");
  const have = new Set(years.map(String));
  if (selected && !have.has(String(selected))) years.push(selected);
  const options = years.sort((a, b) => b - a).map((y) => el("option", { value: String(y), text: String(y) }));
  select.replaceChildren(...(keep ? [keep] : []), ...options);
  select.value = selected ? String(selected) : "";
  return years;
}

async function renderDashboard(route) {
  const gen = state.gen;
  showRangeControls(route);
  const empty = state.me.totals.plays === 0;
  $("empty").hidden = !empty;
  const params = query(windowParams(route.window));
  const overview = cached(`/me/stats/overview?${params}`);
  const activity = cached(`/me/stats/activity?${params}`);
  loadTop(true);
  if (state.history.zone !== state.me.timezone) loadHistory(true);
  if (!$("spotify-top").dataset.loaded) loadSpotifyTop();
  fillYearPick($("year-pick"), route.window.kind === "year" ? route.window.year : null)
    .then(() => { if (gen === state.gen) showRangeControls(route); })
    .catch(fail);
  try {
    const o = await overview;
    if (gen !== state.gen) return;
    state.overview = o;
    $("t-plays").textContent = number(o.plays);
    $("t-time").textContent = duration(o.ms_played);
    $("t-tracks").textContent = number(o.tracks);
    $("t-artists").textContent = number(o.artists);
    $("t-albums").textContent = number(o.albums);
    $("window-label").textContent = windowLabel(o.window);
    $("window-empty").hidden = empty || o.plays > 0;
    if (route.window.kind === "range") {
      $("from").value = zoneDate(o.window.from);
      $("to").value = zoneDate(Date.parse(o.window.to) - 1);
    }
    drawTimeline();
    const a = await activity;
    if (gen !== state.gen) return;
    state.activity = a;
    drawHeatmap();
  } catch (error) {
    fail(error);
  }
}

// Plays over time, by day, week or month: whatever keeps the bars countable in the window.
function timelineBuckets(o) {
  const first = calDate(zoneDate(o.window.from));
  const last = calDate(zoneDate(Date.parse(o.window.to) - 1));
  const span = Math.round((last - first) / 86400000) + 1;
  const grain = span <= 92 ? "day" : span <= 731 ? "week" : "month";
  const keyOf = (date) => {
    if (grain === "day") return calStr(date);
    if (grain === "week") return calStr(addDays(date, -((date.getUTCDay() + 6) % 7))); // weeks start on Monday
    return calStr(date).slice(0, 7);
  };
  const sums = new Map();
  for (const d of o.days) {
    const key = keyOf(calDate(d.date));
    const s = sums.get(key) || { plays: 0, ms_played: 0 };
    s.plays += d.plays;
    s.ms_played += d.ms_played;
    sums.set(key, s);
  }
  const keys = [];
  if (grain === "month") {
    let [y, m] = keyOf(first).split("-").map(Number);
    const end = keyOf(last);
    for (let key = keyOf(first); key <= end; key = `${y}-${String(m).padStart(2, "0")}`) {
      keys.push(key);
      m += 1;
      if (m > 12) { m = 1; y += 1; }
    }
  } else {
    const step = grain === "day" ? 1 : 7;
    for (let date = calDate(keyOf(first)); date <= last; date = addDays(date, step)) keys.push(calStr(date));
  }
  return { grain, buckets: keys.map((key) => ({ key, ...(sums.get(key) || { plays: 0, ms_played: 0 }) })) };
}

function bucketNames(grain, key) {
  if (grain === "day") {
    return { short: calFormat({ day: "numeric", month: "short" }).format(calDate(key)),
      long: calFormat({ weekday: "short", day: "numeric", month: "short", year: "numeric" }).format(calDate(key)) };
  }
  if (grain === "week") {
    return { short: calFormat({ day: "numeric", month: "short" }).format(calDate(key)),
      long: `Week of ${calFormat({ day: "numeric", month: "short", year: "numeric" }).format(calDate(key))}` };
  }
  const date = calDate(`${key}-01`);
  return { short: calFormat({ month: "short", year: "2-digit" }).format(date),
    long: calFormat({ month: "long", year: "numeric" }).format(date) };
}

function drawTimeline() {
  const o = state.overview;
  if (!o) return;
  const figure = $("timeline");
  const m = state.measure;
  const { grain, buckets } = timelineBuckets(o);
  const per = { day: "day", week: "week", month: "month" }[grain];
  $("timeline-title").textContent = `${m === "plays" ? "Plays" : "Listening time"} per ${per}`;
  const bars = buckets.map((b) => {
    const names = bucketNames(grain, b.key);
    return { label: names.short, value: b[m], tip: `${names.long}: ${plural(b.plays, "play", "plays")} · ${duration(b.ms_played)}` };
  });
  const best = buckets.reduce((a, b) => (b[m] > a[m] ? b : a), buckets[0] || { plays: 0, ms_played: 0 });
  barChart(figure, {
    bars,
    measure: m,
    height: 190,
    summary: `${m === "plays" ? "Plays" : "Listening time"} per ${per}, ${windowLabel(o.window)}`
      + (best && best[m] > 0 ? `; the most in ${bucketNames(grain, best.key).long}: ${figureOf(m, best)}.` : "."),
  });
}

// A bar chart in SVG, sized to its box in pixels (so its text is crisp), redrawn when the box
// changes. Each bar carries its exact figures: a tooltip under the pointer, or under the arrow
// keys once the chart has focus (read out too).
function barChart(figure, spec) {
  figure.spec = spec;
  const width = Math.max(260, Math.floor(figure.clientWidth || 600));
  const height = spec.height || 160;
  const margin = { l: 46, r: 8, t: 10, b: 22 };
  const w = width - margin.l - margin.r;
  const h = height - margin.t - margin.b;
  const n = spec.bars.length;
  const top = niceMax(Math.max(0, ...spec.bars.map((b) => b.value)), spec.measure);
  const chart = svg("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img", tabindex: "0",
    "aria-label": `${spec.summary} Use the arrow keys for each bar's figures.`,
  });
  for (const frac of [0, 0.5, 1]) {
    const y = margin.t + h - frac * h;
    chart.append(svg("line", { x1: margin.l, x2: width - margin.r, y1: y, y2: y, class: "grid" }));
    chart.append(svg("text", { x: margin.l - 6, y: y + 4, class: "axis", "text-anchor": "end" }, axisText(top * frac, spec.measure)));
  }
  const step = n ? w / n : w;
  const barWidth = step > 4 ? step * 0.78 : Math.max(1, step);
  const rects = [];
  spec.bars.forEach((bar, i) => {
    const bh = top ? (bar.value / top) * h : 0;
    const rect = svg("rect", {
      x: margin.l + i * step + (step - barWidth) / 2, y: margin.t + h - bh,
      width: barWidth, height: Math.max(bh, bar.value > 0 ? 1 : 0), "data-i": i, class: "bar",
    });
    rect.append(svg("title", {}, bar.tip));
    rects.push(rect);
    chart.append(rect);
  });
  const every = Math.max(1, Math.ceil((spec.labelWidth || 64) / step));
  spec.bars.forEach((bar, i) => {
    if (i % every) return;
    const x = margin.l + i * step + step / 2;
    if (x < margin.l + 10 && i > 0) return;
    const anchor = i === 0 && step < 30 ? "start" : x + 24 > width ? "end" : "middle";
    chart.append(svg("text", { x: anchor === "end" ? width - 2 : x, y: height - 6, class: "axis", "text-anchor": anchor }, bar.label));
  });
  if (!n || top === 0) {
    chart.append(svg("text", { x: margin.l + w / 2, y: margin.t + h / 2, class: "axis", "text-anchor": "middle" }, "No plays in this window"));
  }
  let active = -1;
  const show = (i, announce) => {
    rects.forEach((r, j) => r.classList.toggle("active", j === i));
    active = i;
    if (i < 0) return hideTip();
    const box = rects[i].getBoundingClientRect();
    showTip(spec.bars[i].tip, box.left + box.width / 2, box.top);
    if (announce) $("chart-live").textContent = spec.bars[i].tip;
    return undefined;
  };
  chart.addEventListener("pointermove", (e) => {
    const box = chart.getBoundingClientRect();
    const i = Math.floor((e.clientX - box.left - margin.l) / step);
    show(i >= 0 && i < n ? i : -1, false);
  });
  chart.addEventListener("pointerleave", () => show(-1));
  chart.addEventListener("blur", () => show(-1));
  chart.addEventListener("keydown", (e) => {
    if (!n) return;
    const moves = { ArrowRight: active + 1, ArrowLeft: active - 1, Home: 0, End: n - 1 };
    if (e.key === "Escape") return show(-1);
    if (!(e.key in moves)) return undefined;
    e.preventDefault();
    show(Math.max(0, Math.min(n - 1, active < 0 && e.key === "ArrowLeft" ? n - 1 : moves[e.key])), true);
    return undefined;
  });
  figure.replaceChildren(chart);
}

function niceMax(value, measure) {
  if (value <= 0) return 0;
  const unit = measure === "ms_played" ? 3600000 : 1; // time ticks in whole hours when it can
  const v = value / unit;
  const base = 10 ** Math.floor(Math.log10(v));
  const step = [1, 2, 2.5, 5, 10].find((s) => s * base >= v) * base;
  return (measure === "ms_played" && v < 1 ? Math.ceil(v * 60) / 60 : step) * unit;
}
function axisText(v, measure) {
  if (measure !== "ms_played") return number(Math.round(v));
  const h = v / 3600000;
  return h >= 1 || v === 0 ? `${h.toLocaleString(undefined, { maximumFractionDigits: 1 })} h` : `${Math.round(v / 60000)} min`;
}

function showTip(text, x, y) {
  const tip = $("tip");
  tip.textContent = text;
  tip.hidden = false;
  const width = tip.offsetWidth;
  tip.style.left = `${Math.max(4, Math.min(window.innerWidth - width - 4, x - width / 2))}px`;
  tip.style.top = `${Math.max(4, y - tip.offsetHeight - 8)}px`;
}
function hideTip() { $("tip").hidden = true; }

// The week's hours as a heat map, with the totals per weekday beside it (bars on the right) and
// per hour below it (bars), by plays or by listening time. A table, so it reads out too.
function drawHeatmap() {
  const a = state.activity;
  if (!a) return;
  const m = state.measure;
  const table = $("heatmap");
  const caption = table.querySelector("caption");
  const most = Math.max(1, ...a.heatmap.flat());
  const mostDay = Math.max(1, ...a.weekdays.map((d) => d[m]));
  const mostHour = Math.max(1, ...a.hours.map((d) => d[m]));
  const head = el("tr", {}, el("td"));
  for (let h = 0; h < 24; h += 1) {
    head.append(el("th", { scope: "col", class: h % 3 ? "minor" : null },
      el("span", { "aria-hidden": "true", text: String(h) }), el("span", { class: "sr-only", text: hourName(h) })));
  }
  head.append(el("th", { scope: "col", class: "total-head", text: "Total" }));
  const body = el("tbody");
  a.heatmap.forEach((row, d) => {
    const tr = el("tr", {}, el("th", { scope: "row", title: WEEKDAYS[d] },
      el("span", { "aria-hidden": "true", text: WEEKDAYS[d].slice(0, 3) }), el("span", { class: "sr-only", text: WEEKDAYS[d] })));
    row.forEach((plays, h) => {
      const cell = el("td", { class: "cell", title: `${WEEKDAYS[d]}, ${hourName(h)}–${hourName((h + 1) % 24)}: ${plural(plays, "play", "plays")}`,
        "data-plays": String(plays) }, el("span", { class: "sr-only", text: number(plays) }));
      cell.style.setProperty("--level", (plays / most).toFixed(3));
      tr.append(cell);
    });
    const day = a.weekdays[d];
    tr.append(el("td", { class: "total", title: `${WEEKDAYS[d]}s: ${plural(day.plays, "play", "plays")} · ${duration(day.ms_played)}`, "data-testid": "weekday-total" },
      el("span", { class: "hbar", style: `--v: ${(day[m] / mostDay).toFixed(3)}` }),
      el("span", { class: "num", text: m === "plays" ? number(day.plays) : `${hours(day.ms_played)} h` })));
    body.append(tr);
  });
  const foot = el("tr", { class: "hours" }, el("th", { scope: "row", title: "All days" },
    el("span", { "aria-hidden": "true", text: "All" }), el("span", { class: "sr-only", text: "All days" })));
  a.hours.forEach((hour, h) => {
    foot.append(el("td", { class: "vbar-cell", title: `${hourName(h)}–${hourName((h + 1) % 24)}: ${plural(hour.plays, "play", "plays")} · ${duration(hour.ms_played)}`, "data-testid": "hour-total" },
      el("span", { class: "vbar", style: `--v: ${(hour[m] / mostHour).toFixed(3)}` }),
      el("span", { class: "sr-only", text: m === "plays" ? number(hour.plays) : duration(hour.ms_played) })));
  });
  foot.append(el("td"));
  table.replaceChildren(caption, el("thead", {}, head), body, el("tfoot", {}, foot));
  caption.textContent = `Plays by weekday and hour in ${state.me.timezone}, with the ${measureText(m)} per weekday (last column) and per hour (last row)`;
}

// ---- top lists -----------------------------------------------------------------------------------

function spotifyUrl(kind, spotifyId) {
  return spotifyId ? `https://open.spotify.com/${SINGULAR[kind]}/${encodeURIComponent(spotifyId)}` : null;
}

function cover(url, name) {
  const placeholder = () => el("span", { class: "cover placeholder", "aria-hidden": "true", text: (name || "?").trim().charAt(0).toUpperCase() || "♪" });
  if (!url) return placeholder();
  const img = el("img", { class: "cover", src: url, alt: "", width: "40", height: "40", loading: "lazy", decoding: "async" });
  img.addEventListener("error", () => img.replaceWith(placeholder()), { once: true });
  return img;
}

function rankedItem(kind, item, by, { testid, figure = true } = {}) {
  const who = (item.artists || []).map((a) => a.name).join(", ");
  const href = spotifyUrl(kind, item.spotify_id);
  const name = href
    ? el("a", { class: "name", href, target: "_blank", rel: "noopener", title: `Open in Spotify: ${item.name}` }, item.name,
      el("span", { class: "sr-only", text: " (opens in Spotify)" }))
    : el("span", { class: "name", text: item.name });
  const other = figure && (by === "plays" ? duration(item.ms_played) : plural(item.plays, "play", "plays"));
  return el("li", { "data-testid": testid || `top-${kind}-item` },
    el("span", { class: "rank", text: String(item.rank) }),
    cover(item.image_url, item.name),
    el("span", { class: "text" }, name, who ? el("span", { class: "by", text: who }) : null),
    figure ? el("span", { class: "figure", title: `${plural(item.plays, "play", "plays")} · ${duration(item.ms_played)}` },
      el("span", { text: figureOf(by, item) }), el("span", { class: "sub", text: other })) : null);
}

async function loadTop(reset) {
  const route = state.route;
  if (route.view !== "dashboard") return;
  if (reset) {
    state.top = { next: null, loading: false, gen: (state.top.gen || 0) + 1 };
    $("top").replaceChildren();
    $("top-more").hidden = true;
    $("top-empty").hidden = true;
  }
  if (state.top.loading) return;
  const gen = state.top.gen;
  state.top.loading = true;
  const kind = state.kind;
  const by = state.by;
  try {
    const page = await cached(`/me/stats/top/${kind}?${query({
      ...windowParams(route.window), by, limit: TOP_PAGE, cursor: state.top.next,
    })}`);
    if (gen !== state.top.gen) return;
    $("top").append(...page.items.map((item) => rankedItem(kind, item, by)));
    state.top.next = page.next;
    $("top-more").hidden = !page.next;
    $("top-empty").hidden = $("top").children.length > 0;
  } catch (error) {
    fail(error);
  } finally {
    if (gen === state.top.gen) state.top.loading = false;
  }
}

// ---- history -------------------------------------------------------------------------------------

function dayHeading(date) {
  const today = zoneDate(Date.now());
  if (date === today) return "Today";
  if (date === calStr(addDays(calDate(today), -1))) return "Yesterday";
  return calFormat({ weekday: "long", day: "numeric", month: "long", year: "numeric" }).format(calDate(date));
}

function historyItem(play) {
  const t = play.track;
  const href = spotifyUrl("tracks", t.spotify_id);
  const who = t.artists.map((a) => a.name).join(", ");
  const name = href
    ? el("a", { class: "name", href, target: "_blank", rel: "noopener" }, t.name, el("span", { class: "sr-only", text: " (opens in Spotify)" }))
    : el("span", { class: "name", text: t.name });
  const length = el("span", { class: "length" });
  if (play.is_estimated) {
    length.classList.add("estimated");
    length.title = "Estimated: Spotify's list of recent plays does not say how long you listened, so MYI counts the whole track until your data download confirms the real time.";
    length.append(el("span", { class: "estimate", "aria-hidden": "true", text: "≈ " }), el("span", { class: "sr-only", text: "estimated " }));
  }
  length.append(clock(play.ms_played));
  return el("li", { "data-testid": "history-item", "data-estimated": play.is_estimated ? "true" : null },
    el("time", { datetime: play.played_at, text: timeOfDay(play.played_at), title: when(play.played_at) }),
    cover(t.album && t.album.image_url, t.name),
    el("span", { class: "text" }, name, el("span", { class: "by", text: t.album ? `${who} · ${t.album.name}` : who })),
    length);
}

async function loadHistory(reset) {
  const h = state.history;
  if (reset) {
    Object.assign(h, { next: null, loading: false, day: null, list: null, zone: state.me.timezone, done: false, gen: (h.gen || 0) + 1 });
    $("history").replaceChildren();
    $("history-more").hidden = true;
    $("estimate-legend").hidden = true;
  }
  if (h.loading || h.done) return;
  const gen = h.gen;
  h.loading = true;
  try {
    const page = await api(`/me/history?${query({ limit: HISTORY_PAGE, cursor: h.next })}`);
    if (gen !== h.gen) return;
    for (const play of page.items) {
      const day = zoneDate(play.played_at);
      if (day !== h.day) {
        h.day = day;
        h.list = el("ol", { class: "plays" });
        $("history").append(el("section", { class: "day", "data-date": day },
          el("h3", { "data-testid": "history-day", text: dayHeading(day) }), h.list));
      }
      h.list.append(historyItem(play));
      if (play.is_estimated) $("estimate-legend").hidden = false;
    }
    h.next = page.next;
    h.done = !page.next;
    $("history-more").hidden = h.done;
    $("history-empty").hidden = $("history").children.length > 0;
  } catch (error) {
    fail(error);
  } finally {
    if (gen === h.gen) h.loading = false;
  }
  if (gen === h.gen && !h.done && sentinelVisible()) loadHistory(false); // a short page: fill the box
}

function sentinelVisible() {
  const box = $("history-box").getBoundingClientRect();
  const end = $("history-end").getBoundingClientRect();
  return box.height > 0 && end.top <= box.bottom + 200;
}

async function loadSpotifyTop() {
  const list = $("spotify-top");
  try {
    const kind = $("sp-kind").value;
    const page = await api(`/me/spotify-top/${kind}?${query({ term: $("sp-term").value })}`);
    list.dataset.loaded = "1";
    list.replaceChildren(...page.items.map((item) => rankedItem(kind, item, "plays", { testid: "spotify-top-item", figure: false })));
    $("sp-note").textContent = page.refreshed_at
      ? `As Spotify ranked it on ${zoneFormat({ dateStyle: "medium" }).format(new Date(page.refreshed_at))}.`
      : "Asked Spotify for this list; it appears shortly.";
  } catch (error) {
    fail(error);
  }
}

// ---- the year in review --------------------------------------------------------------------------

async function renderYear(route) {
  const gen = state.gen;
  let years;
  try {
    years = await yearsWithPlays();
  } catch (error) {
    fail(error);
    return;
  }
  if (gen !== state.gen) return;
  const year = route.year || years[0] || new Date().getFullYear();
  $("year-title").textContent = `Your ${year} in music`;
  document.title = `${year} in review · MYI`;
  await fillYearPick($("year-select"), year);
  const index = years.indexOf(year);
  for (const [id, neighbour] of [["year-prev", years[index + 1]], ["year-next", index > 0 ? years[index - 1] : undefined]]) {
    const link = $(id);
    link.hidden = index < 0 || !neighbour;
    if (neighbour) {
      link.href = `?view=year&year=${neighbour}`;
      link.querySelector("span").textContent = String(neighbour);
    }
  }
  const empty = $("year-empty");
  $("year-image").hidden = true;
  $("year-download").hidden = true;
  if (!years.includes(year)) {
    $("year-body").hidden = true;
    empty.hidden = false;
    empty.replaceChildren(years.length
      ? `No plays in ${year}. Pick another year, or import your Spotify download for the years before MYI.`
      : "No plays yet: upload your Spotify download on the Import page, or wait for the first sync.");
    return;
  }
  empty.hidden = true;
  $("year-body").hidden = false;
  $("year-body").setAttribute("aria-busy", "true");
  for (const id of ["y-hours", "y-plays", "y-tracks", "y-artists", "y-month", "y-hour", "y-weekday", "y-first", "y-last"]) $(id).textContent = "…";
  const params = query({ from: `${year}-01-01`, to: `${year}-12-31` });
  try {
    const [o, a, tracks, artists, albums] = await Promise.all([
      cached(`/me/stats/overview?${params}`),
      cached(`/me/stats/activity?${params}`),
      ...["tracks", "artists", "albums"].map((k) => cached(`/me/stats/top/${k}?${params}&by=plays&limit=5`)),
    ]);
    if (gen !== state.gen) return;
    const months = Array.from({ length: 12 }, () => ({ plays: 0, ms_played: 0 }));
    for (const d of o.days) {
      const mo = months[Number(d.date.slice(5, 7)) - 1];
      mo.plays += d.plays;
      mo.ms_played += d.ms_played;
    }
    const top = (list) => list.reduce((best, x, i) => (x.plays > list[best].plays ? i : best), 0);
    const busiest = top(months);
    const hour = top(a.hours);
    const weekday = top(a.weekdays);
    const summary = {
      year,
      hours: hours(o.ms_played),
      plays: o.plays,
      tracks: o.tracks,
      artists: o.artists,
      month: [MONTHS[busiest], plural(months[busiest].plays, "play", "plays")],
      hour: [`${hourName(hour)}–${hourName((hour + 1) % 24)}`, plural(a.hours[hour].plays, "play", "plays")],
      weekday: [`${WEEKDAYS[weekday]}s`, plural(a.weekdays[weekday].plays, "play", "plays")],
      top: { tracks: tracks.items, artists: artists.items, albums: albums.items },
      first: ["…", ""],
      last: ["…", ""],
    };
    state.year = summary;
    $("y-hours").textContent = summary.hours;
    $("y-plays").textContent = number(o.plays);
    $("y-tracks").textContent = number(o.tracks);
    $("y-artists").textContent = number(o.artists);
    fact("y-month", summary.month);
    fact("y-hour", summary.hour);
    fact("y-weekday", summary.weekday);
    for (const kind of ["tracks", "artists", "albums"]) {
      $(`y-${kind}-list`).replaceChildren(...summary.top[kind].map((item) => rankedItem(kind, item, "plays", { testid: `year-${kind}-item` })));
    }
    barChart($("year-months"), {
      bars: months.map((mo, i) => ({ label: MONTHS[i].slice(0, 3), value: mo.plays, tip: `${MONTHS[i]} ${year}: ${plural(mo.plays, "play", "plays")} · ${duration(mo.ms_played)}` })),
      measure: "plays", height: 150, labelWidth: 30,
      summary: `Plays per month in ${year}; the most in ${MONTHS[busiest]}.`,
    });
    const [first, last] = await firstAndLast(year);
    if (gen !== state.gen) return;
    summary.first = first;
    summary.last = last;
    fact("y-first", first);
    fact("y-last", last);
  } catch (error) {
    fail(error);
  } finally {
    $("year-body").removeAttribute("aria-busy");
  }
}

function fact(id, [main, sub]) {
  $(id).replaceChildren(el("span", { text: main }), sub ? el("span", { class: "sub", text: sub }) : null);
}

const playText = (p) => [p.track.name, `${p.track.artists.map((a) => a.name).join(", ")} · ${when(p.played_at)}`];

// The first and the last play of a year, from the history (newest first): walked while that is
// cheap, else told to the hour from that day's figures.
async function firstAndLast(year) {
  const start = `${year}-01-01`;
  const end = `${year}-12-31`;
  const all = await overviewAll();
  const days = all.days.filter((d) => d.date >= start && d.date <= end && d.plays > 0);
  if (!days.length) return [["–", ""], ["–", ""]];
  const after = all.days.filter((d) => d.date > end).reduce((s, d) => s + d.plays, 0);
  const through = after + days.reduce((s, d) => s + d.plays, 0);
  let last = null;
  let first = null;
  if (after < FIRST_LAST_BUDGET) {
    let cursor = null;
    let candidate = null;
    let read = 0;
    for (;;) {
      const page = await api(`/me/history?${query({ limit: 100, cursor })}`);
      for (const play of page.items) {
        const date = zoneDate(play.played_at);
        if (date > end) continue;
        if (date < start) { first = candidate; break; }
        if (!last) last = play;
        candidate = play;
      }
      read += page.items.length;
      if (first || !page.next) { first = first || candidate; break; }
      if (read >= FIRST_LAST_BUDGET || (read >= after + 100 && through > FIRST_LAST_BUDGET)) break;
      cursor = page.next;
    }
  }
  return [
    first ? playText(first) : await roughPlay(days[0].date, "first"),
    last ? playText(last) : await roughPlay(days[days.length - 1].date, "last"),
  ];
}

async function roughPlay(date, which) {
  const a = await cached(`/me/stats/activity?${query({ from: date, to: date })}`);
  const hoursWith = a.hours.map((x, h) => (x.plays ? h : -1)).filter((h) => h >= 0);
  const h = which === "first" ? hoursWith[0] : hoursWith[hoursWith.length - 1];
  const day = dayName(date, "full");
  return [day, h === undefined ? "" : `between ${hourName(h)} and ${hourName((h + 1) % 24)}`];
}

// The year's summary drawn on a canvas, saved as a PNG: all in the browser, nothing uploaded.
function yearImage(s) {
  const canvas = document.createElement("canvas");
  canvas.width = 1080;
  canvas.height = 1350;
  const c = canvas.getContext("2d");
  const sans = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  const bg = c.createLinearGradient(0, 0, 1080, 1350);
  bg.addColorStop(0, "#0b0d0c");
  bg.addColorStop(1, "#17301f");
  c.fillStyle = bg;
  c.fillRect(0, 0, 1080, 1350);
  c.fillStyle = "#1ed760";
  c.fillRect(0, 0, 1080, 12);
  const text = (t, x, y, size, color = "#e9efe9", weight = "normal", maxWidth = 960) => {
    c.font = `${weight} ${size}px ${sans}`;
    c.fillStyle = color;
    let out = String(t);
    if (c.measureText(out).width > maxWidth) {
      while (out.length > 1 && c.measureText(`${out}…`).width > maxWidth) out = out.slice(0, -1);
      out += "…";
    }
    c.fillText(out, x, y);
  };
  text("MYI", 60, 90, 36, "#1ed760", "bold");
  text(`${s.year} in music`, 60, 190, 84, "#e9efe9", "bold");
  const stats = [["hours listened", s.hours], ["plays", number(s.plays)], ["tracks", number(s.tracks)], ["artists", number(s.artists)]];
  stats.forEach(([label, value], i) => {
    const x = 60 + i * 250;
    text(value, x, 300, 64, "#1ed760", "bold", 230);
    text(label, x, 340, 26, "#9aa79c", "normal", 230);
  });
  const list = (title, items, x, y, width) => {
    text(title, x, y, 30, "#9aa79c", "bold", width);
    items.slice(0, 5).forEach((item, i) => {
      const who = (item.artists || []).map((a) => a.name).join(", ");
      text(`${i + 1}. ${item.name}`, x, y + 48 + i * 58, 29, "#e9efe9", "bold", width);
      if (who) text(who, x, y + 74 + i * 58, 21, "#9aa79c", "normal", width);
    });
  };
  list("Top tracks", s.top.tracks, 60, 420, 450);
  list("Top artists", s.top.artists, 570, 420, 450);
  list("Top albums", s.top.albums, 60, 780, 450);
  const facts = [["Busiest month", s.month], ["Favourite hour", s.hour], ["Favourite weekday", s.weekday]];
  facts.forEach(([label, [main, sub]], i) => {
    text(label, 570, 780 + i * 106, 24, "#9aa79c", "normal", 450);
    text(main, 570, 818 + i * 106, 34, "#e9efe9", "bold", 450);
    text(sub, 570, 850 + i * 106, 24, "#9aa79c", "normal", 450);
  });
  [["First play", s.first], ["Last play", s.last]].forEach(([label, [main, sub]], i) => {
    const x = 60 + i * 510;
    c.fillStyle = "#2c352e";
    c.fillRect(x, 1130, 450, 2);
    text(label, x, 1176, 24, "#9aa79c", "normal", 450);
    text(main, x, 1216, 32, "#e9efe9", "bold", 450);
    text(sub, x, 1252, 24, "#9aa79c", "normal", 450);
  });
  text(`Counted in ${state.me.timezone} · MYI, your listening history`, 60, 1320, 20, "#7d8a80", "normal");
  return canvas.toDataURL("image/png");
}

function saveYearImage() {
  const s = state.year;
  if (!s) return;
  const url = yearImage(s);
  const image = $("year-image");
  image.src = url;
  image.alt = `Your ${s.year} in music: ${s.hours} hours, ${number(s.plays)} plays`;
  image.hidden = false;
  const link = $("year-download");
  link.href = url;
  link.download = `myi-${s.year}.png`;
  link.hidden = false;
  link.click();
}

// ---- imports -------------------------------------------------------------------------------------

function renderImports() {
  loadImports(true);
}

function skippedWords(skipped) {
  const parts = Object.entries(SKIP_WORDS)
    .filter(([key]) => skipped[key])
    .map(([key, [one, many]]) => plural(skipped[key], one, many));
  return parts.length ? `Not counted: ${parts.join(", ")}.` : "Nothing was skipped.";
}

function importStatus(job) {
  if (job.status === "awaiting_upload" && Date.now() - Date.parse(job.created_at) > UPLOAD_TTL_MS) return "never uploaded";
  return IMPORT_STATUS[job.status] || job.status;
}

function importItem(job) {
  const c = job.counts;
  const lines = [];
  if (job.status === "completed") {
    lines.push(el("p", { text: `${plural(c.added, "play added", "plays added")}, ${number(c.merged)} made exact, ${number(c.duplicates)} already there.` }));
    lines.push(el("p", { class: "note", text: skippedWords(c.skipped) }));
  } else if (job.status === "running") {
    lines.push(el("p", { class: "note", text: `${number(job.progress.records_read)} records read (${Math.round(job.progress.percent)}%).` }));
  } else if (job.status === "failed") {
    lines.push(el("p", { class: "error-text", text: job.error || "The import failed." }));
  }
  return el("li", { "data-testid": "import-item", "data-status": job.status },
    el("div", { class: "row" },
      el("strong", { class: "file", text: job.filename }),
      el("span", { class: `badge ${job.status}`, text: importStatus(job) })),
    el("p", { class: "note", text: `Started ${when(job.created_at)}${job.finished_at ? ` · finished ${when(job.finished_at)}` : ""}` }),
    ...lines);
}

async function loadImports(reset) {
  if (reset) state.imports = { next: null };
  try {
    const page = await api(`/me/imports?${query({ limit: 10, cursor: state.imports.next })}`);
    const items = page.items.map(importItem);
    if (reset) $("imports").replaceChildren(...items);
    else $("imports").append(...items);
    state.imports.next = page.next;
    $("imports-more").hidden = !page.next;
    $("imports-empty").hidden = $("imports").children.length > 0;
    return page;
  } catch (error) {
    fail(error);
    return null;
  }
}

// An import that runs (or waits for its upload from another tab) when the page loads is followed.
async function checkRunningImport() {
  try {
    const page = await api("/me/imports?limit=5");
    const live = page.items.find((job) => ["queued", "running"].includes(job.status)
      || (job.status === "awaiting_upload" && Date.now() - Date.parse(job.created_at) < UPLOAD_TTL_MS));
    if (live && !state.following) follow(live);
  } catch (error) {
    fail(error);
  }
}

function showProgress(percent, text) {
  const p = Math.max(0, Math.min(100, percent));
  $("progress").hidden = false;
  $("progress-bar").style.width = `${p.toFixed(1)}%`;
  $("progress-track").setAttribute("aria-valuenow", p.toFixed(0));
  $("progress-text").textContent = text;
  $("import-banner-text").textContent = text;
}

function send(upload, file) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [k, v] of Object.entries(upload.fields)) form.append(k, v);
    form.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open(upload.method || "POST", upload.url);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) showProgress((e.loaded / e.total) * 100, `Uploading ${file.name}… ${Math.round((e.loaded / e.total) * 100)}%`);
    };
    xhr.onload = () => (xhr.status < 300 ? resolve()
      : reject(new Error(xhr.status === 400 && /EntityTooLarge/.test(xhr.responseText)
        ? "The file is larger than this MYI accepts."
        : `The upload failed (storage answered ${xhr.status}). Please try again.`)));
    xhr.onerror = () => reject(new Error("The upload failed: the file could not be sent. Check your connection and try again."));
    xhr.send(form);
  });
}

async function startImport(file) {
  if (!file) return;
  if (state.following && state.followingStatus !== "awaiting_upload") {
    say("An import of yours is still running; start the next one when it ends.", "error");
    return;
  }
  say("");
  state.following = "starting";
  $("drop").classList.add("busy");
  try {
    showProgress(0, `Uploading ${file.name}… 0%`);
    const created = await api("/me/imports", { method: "POST", json: { filename: file.name, size_bytes: file.size } });
    await send(created.upload, file);
    showProgress(0, "Uploaded. Waiting for the importer…");
    state.following = null;
    await follow({ ...created.import, status: "queued" });
  } catch (error) {
    state.following = null;
    $("drop").classList.remove("busy");
    showProgress(0, `The import did not start: ${error.message}`);
    fail(error);
  }
}

async function follow(job) {
  state.following = job.id;
  $("drop").classList.add("busy");
  $("import-banner").hidden = state.route && state.route.view === "imports";
  loadImportsIfShown();
  let current = job;
  try {
    for (;;) {
      state.followingStatus = current.status;
      if (current.status === "awaiting_upload") {
        if (Date.now() - Date.parse(current.created_at) > UPLOAD_TTL_MS) break;
        showProgress(0, `${current.filename}: waiting for its upload…`);
      } else if (current.status === "queued") {
        showProgress(0, `${current.filename}: queued, the importer starts in a moment…`);
      } else if (current.status === "running") {
        const p = current.progress;
        showProgress(p.percent, `Importing ${current.filename}… ${number(p.records_read)} records read (${Math.round(p.percent)}%)`);
      } else {
        break;
      }
      await sleep(700);
      if (state.following !== job.id) return;
      current = await api(`/me/imports/${encodeURIComponent(job.id)}`);
    }
    if (current.status === "failed") {
      showProgress(0, `The import failed: ${current.error || "no reason given"}`);
    } else if (current.status === "completed") {
      const c = current.counts;
      showProgress(100, `Done: ${plural(c.added, "play added", "plays added")}, ${number(c.merged)} made exact, ${number(c.duplicates)} already there.`);
      cache.clear();
      state.me.totals = (await api("/me")).totals;
      state.history.zone = null;
      if (state.route.view !== "imports") render();
    }
  } catch (error) {
    fail(error);
  } finally {
    if (state.following === job.id) {
      state.following = null;
      state.followingStatus = null;
      $("drop").classList.remove("busy");
      $("import-banner").hidden = true;
      loadImportsIfShown();
    }
  }
}

function loadImportsIfShown() {
  if (state.route && state.route.view === "imports") loadImports(true);
}

// ---- your data -----------------------------------------------------------------------------------

async function renderAccount() {
  $("account-zone").textContent = state.me.timezone;
  try {
    const page = await api("/me/exports?limit=5");
    $("exports").replaceChildren(...page.items.map(exportItem));
    const live = page.items.find((x) => ["queued", "running"].includes(x.status));
    if (live && !state.exporting) followExport(live);
  } catch (error) {
    if (error.status === 404 && error.code === "not_found") {
      $("exports").replaceChildren(el("li", { class: "note", text: "Exports are not available on this server yet." }));
    } else {
      fail(error);
    }
  }
}

function exportItem(x) {
  const what = x.format === "csv" ? "CSV" : "Extended streaming history";
  const text = `${what}, ${when(x.created_at)}: ${x.status === "completed" ? `${plural(x.plays, "play", "plays")}, ${(x.size_bytes / 1048576).toLocaleString(undefined, { maximumFractionDigits: 1 })} MB` : x.status}`;
  return el("li", {}, el("span", { text }),
    x.download ? el("a", { href: x.download.url, text: "download", class: "inline-link" }) : null,
    x.error ? el("span", { class: "error-text", text: ` ${x.error}` }) : null);
}

async function startExport(event) {
  event.preventDefault();
  if (state.exporting) return;
  const format = new FormData($("export")).get("format");
  $("export-link").hidden = true;
  $("export-status").textContent = "Starting the export…";
  try {
    const created = await api("/me/exports", { method: "POST", json: { format } });
    await followExport(created.export);
  } catch (error) {
    if (error.status === 404 && error.code === "not_found") {
      $("export-status").textContent = "Exports are not available on this server yet.";
    } else {
      $("export-status").textContent = "";
      fail(error);
    }
  }
}

async function followExport(x) {
  state.exporting = x.id;
  let current = x;
  try {
    while (["queued", "running"].includes(current.status)) {
      $("export-status").textContent = current.status === "queued" ? "Queued: the export starts in a moment…"
        : `Writing your export… ${current.plays ? `${plural(current.plays, "play", "plays")} so far` : ""}`;
      await sleep(700);
      if (state.exporting !== x.id) return;
      current = await api(`/me/exports/${encodeURIComponent(x.id)}`);
    }
    if (current.status === "completed" && current.download) {
      $("export-status").textContent = `Ready: ${plural(current.plays, "play", "plays")}. The link works until ${when(current.download.expires_at)}.`;
      const link = $("export-link");
      link.href = current.download.url;
      link.hidden = false;
    } else {
      $("export-status").textContent = `The export failed: ${current.error || "no reason given"}`;
    }
  } catch (error) {
    $("export-status").textContent = "";
    fail(error);
  } finally {
    if (state.exporting === x.id) state.exporting = null;
  }
}

async function logoutEverywhere() {
  try {
    await api("/auth/logout?everywhere=1", { method: "POST" });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      fail(error);
      return;
    }
  }
  history.pushState(null, "", location.pathname);
  showSignIn("You are signed out on every device and browser.");
}

async function deleteAccount(event) {
  event.preventDefault();
  if ($("delete-confirm").value.trim().toLowerCase() !== DELETE_PHRASE) return;
  $("delete-button").disabled = true;
  try {
    await api("/me", { method: "DELETE" });
  } catch (error) {
    $("delete-button").disabled = false;
    fail(error);
    return;
  }
  $("delete-confirm").value = "";
  history.pushState(null, "", location.pathname);
  showSignIn("Your account and everything MYI stored about you are deleted. Thank you for listening with MYI.");
}

// ---- wiring --------------------------------------------------------------------------------------

function press(group, button) {
  group.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
}

function setup() {
  document.addEventListener("click", (e) => {
    const link = e.target.closest("a[data-nav]");
    if (!link || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    if (!state.me) return;
    e.preventDefault();
    const url = new URL(link.href, location.href);
    history.pushState(null, "", location.pathname + url.search);
    render();
  });
  window.addEventListener("popstate", () => render());
  document.querySelector(".windows").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-range]");
    if (button) go({ view: "dashboard", window: { kind: "range", range: button.dataset.range } });
  });
  $("year-pick").addEventListener("change", (e) => {
    if (e.target.value) go({ view: "dashboard", window: { kind: "year", year: Number(e.target.value) } });
  });
  $("custom").addEventListener("submit", (e) => {
    e.preventDefault();
    const from = $("from").value;
    const to = $("to").value;
    if (!isDate(from) || !isDate(to)) return say("Pick both days of the window.", "error");
    if (from > to) return say("The window's first day comes after its last; swap them.", "error");
    say("");
    return go({ view: "dashboard", window: { kind: "custom", from, to } });
  });
  document.querySelector(".measure").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-measure]");
    if (!button) return;
    press(e.currentTarget, button);
    state.measure = button.dataset.measure;
    drawTimeline();
    drawHeatmap();
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
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((x) => x.isIntersecting) && state.me && state.history.zone) loadHistory(false);
    }, { root: $("history-box"), rootMargin: "0px 0px 200px 0px" }).observe($("history-end"));
  }
  $("sp-kind").addEventListener("change", loadSpotifyTop);
  $("sp-term").addEventListener("change", loadSpotifyTop);

  $("year-select").addEventListener("change", (e) => go({ view: "year", year: Number(e.target.value) }));
  $("year-save").addEventListener("click", saveYearImage);

  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) startImport(file);
  });
  $("file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    startImport(file);
  });
  $("imports-more").addEventListener("click", () => loadImports(false));

  $("zone").addEventListener("click", openZoneDialog);
  $("zone-open").addEventListener("click", openZoneDialog);
  $("zone-cancel").addEventListener("click", () => $("zone-dialog").close());
  $("zone-browser").addEventListener("click", () => { $("zone-select").value = browserZone(); });
  $("zone-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const zone = $("zone-select").value;
    if (zone === state.me.timezone) return $("zone-dialog").close();
    if (await setZone(zone)) $("zone-dialog").close();
    return undefined;
  });
  $("offer-accept").addEventListener("click", () => setZone(browserZone()));
  $("offer-dismiss").addEventListener("click", () => {
    try {
      localStorage.setItem(offerKey(browserZone(), state.me.timezone), "1");
    } catch { /* storage may be off */ }
    $("zone-offer").hidden = true;
  });

  $("export").addEventListener("submit", startExport);
  $("logout-everywhere").addEventListener("click", logoutEverywhere);
  $("delete-confirm").addEventListener("input", (e) => {
    $("delete-button").disabled = e.target.value.trim().toLowerCase() !== DELETE_PHRASE;
  });
  $("delete").addEventListener("submit", deleteAccount);

  $("sync").addEventListener("click", async () => {
    try {
      await api("/me/sync", { method: "POST" });
      say("Syncing with Spotify: new plays appear in a moment.");
      setTimeout(async () => {
        cache.clear();
        try {
          applyMe(await api("/me"));
        } catch (error) {
          fail(error);
          return;
        }
        state.history.zone = null;
        render();
      }, 5000);
    } catch (error) {
      fail(error);
    }
  });
  $("logout").addEventListener("click", async () => {
    try {
      await api("/auth/logout", { method: "POST" });
    } catch { /* signed out either way */ }
    showSignIn("You are signed out.");
  });

  let resize = null;
  new ResizeObserver(() => {
    clearTimeout(resize);
    resize = setTimeout(() => {
      for (const figure of document.querySelectorAll("figure.chart")) {
        if (figure.spec && figure.offsetParent) barChart(figure, figure.spec);
      }
    }, 100);
  }).observe(document.body);
  start();
}

document.addEventListener("DOMContentLoaded", setup);
