// Herald web client: a single page in plain ES modules, without a framework or a build step.
//
// The page runs under a strict Content-Security-Policy, so every event handler is attached with
// addEventListener and styles change only through classes. Notification content and every other
// value from the server reaches the page through textContent or text nodes, never as HTML.

import {
  LANGUAGES,
  LANGUAGE_STORAGE_KEY,
  formatDateTime,
  formatFullDateTime,
  getLanguage,
  initLanguage,
  setLanguage,
  t,
  translateStatic,
} from './i18n.js';

// ---------------------------------------------------------------------------------------------
// Settings

// The access token lives in sessionStorage: it survives a reload of this tab, is dropped when
// the tab closes, and is not shared with other tabs. It is never put in a cookie or in the
// address bar. The socket URL carries it only because browsers cannot set headers on a
// WebSocket, and the gateway does not log query strings.
const TOKEN_KEY = 'herald.token';
// Difference between this browser's clock and the server's, measured at login, in ms.
const CLOCK_SKEW_KEY = 'herald.clockSkew';
const LAST_USERNAME_KEY = 'herald.lastUsername';
const DESKTOP_KEY = 'herald.desktopNotifications';

/** Content limit of the API, in Unicode code points. */
const MAX_CONTENT_CHARS = 4000;
/** The counter turns amber from here on. */
const CONTENT_WARNING_CHARS = 3800;
/** Maximum number of ids in one batch request of the API. */
const BATCH_LIMIT = 200;
const PAGE_SIZE = 50;
const PRIORITIES = ['low', 'normal', 'high', 'urgent'];

/** Reconnect backoff: 1 s doubling to 30 s, plus up to 20 % jitter. */
const RECONNECT_BASE_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const RECONNECT_JITTER = 0.2;
/** A socket that stayed open this long resets the backoff. */
const STABLE_CONNECTION_MS = 10000;
/** The client pings after this much silence and drops the socket when no frame follows in time. */
const HEARTBEAT_IDLE_MS = 25000;
const HEARTBEAT_TIMEOUT_MS = 10000;
const HEARTBEAT_CHECK_MS = 5000;

/** The session banner warns this long before the token expires. */
const EXPIRY_WARNING_MS = 5 * 60 * 1000;
/** The token is swapped for a fresh one this long before it expires, so the page stays logged in. */
const REFRESH_BEFORE_MS = 10 * 60 * 1000;
/** A failed refresh is tried again after this long. */
const REFRESH_RETRY_MS = 60 * 1000;
/** The earliest a refresh runs after the previous one. */
const REFRESH_MIN_DELAY_MS = 30 * 1000;
/** setTimeout cannot wait longer than 2^31 - 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Wait after the last of several new notifications before the unread count is fetched again. */
const UNREAD_REFRESH_DELAY_MS = 1500;
/** New notifications that arrive within this window share one desktop notification. */
const DESKTOP_BATCH_MS = 1000;
/** Content longer than this is folded in the list until the user expands it. */
const FOLD_CHARS = 280;
const FOLD_LINES = 6;
/** Confirmations that arrive within this window share one toast. */
const CONFIRM_TOAST_MS = 400;
const TOAST_MS = 6000;
const TOAST_ERROR_MS = 10000;
const MAX_TOASTS = 4;

// ---------------------------------------------------------------------------------------------
// Elements

const $ = (id) => document.getElementById(id);

const ui = {
  sessionOnly: document.querySelectorAll('.session-only'),
  connection: document.querySelector('[data-testid="connection-state"]'),
  connectionLabel: $('connection-label'),
  reconnectNow: $('reconnect-now'),
  unreadBadge: document.querySelector('[data-testid="unread-count"]'),
  desktopToggle: $('desktop-toggle'),
  currentUser: $('current-user'),
  languageSwitch: $('language-switch'),
  logout: $('logout'),
  sessionBanner: $('session-banner'),
  sessionBannerText: $('session-banner-text'),
  sessionBannerRelogin: $('session-banner-relogin'),

  loginView: $('login-view'),
  loginForm: $('login-form'),
  loginUsername: $('login-username'),
  loginPassword: $('login-password'),
  loginSubmit: $('login-submit'),
  loginError: $('login-error'),
  loginNotice: $('login-notice'),

  appView: $('app-view'),
  loadError: $('load-error'),

  sendPanel: $('send-panel'),
  sendForm: $('send-form'),
  sendReceiver: $('send-receiver'),
  sendSenderField: $('send-sender-field'),
  sendSender: $('send-sender'),
  sendPriority: $('send-priority'),
  sendContent: $('send-content'),
  sendCounter: $('send-counter'),
  sendSubmit: $('send-submit'),
  sendError: $('send-error'),
  fieldErrors: {
    receiver_group: $('send-receiver-error'),
    sender_group: $('send-sender-error'),
    priority: $('send-priority-error'),
    content: $('send-content-error'),
  },

  filterPanel: $('filter-panel'),
  filterForm: $('filter-form'),
  filterStatus: $('filter-status'),
  filterSender: $('filter-sender'),
  filterReceiver: $('filter-receiver'),
  filterPriority: $('filter-priority'),
  filterAfter: $('filter-after'),
  filterBefore: $('filter-before'),
  filterUnread: $('filter-unread'),
  filterError: $('filter-error'),

  listSummary: $('list-summary'),
  selectAll: $('select-all'),
  batchConfirm: $('batch-confirm'),
  markAllRead: $('mark-all-read'),
  batchResult: $('batch-result'),
  batchResultSummary: $('batch-result-summary'),
  batchResultList: $('batch-result-list'),
  batchResultClose: $('batch-result-close'),
  listLoading: $('list-loading'),
  list: $('notification-list'),
  listEmpty: $('list-empty'),
  loadMore: $('load-more'),

  toasts: $('toasts'),
  announcer: $('announcer'),
};

// ---------------------------------------------------------------------------------------------
// State

const session = {
  /** Incremented on every login and logout, so that late responses to an old session are dropped. */
  generation: 0,
  token: null,
  username: null,
  /** Token expiry on this browser's clock, in ms since the epoch, or null without `exp`. */
  expiresAt: null,
  expiryTimer: null,
  warningTimer: null,
  refreshTimer: null,
  /** The unsent message kept across an expiry, restored when the same user logs in again. */
  draft: null,
};

const data = {
  /** Rows of GET /api/groups/: the user's groups. */
  groups: [],
  /** Group name -> display name, for every group the client has heard of. */
  displayNames: new Map(),
  /** Group name -> seq of the last event applied, sent as `since` on the next connection. */
  lastSeq: new Map(),
  /** Notification id -> notification, with the per-user `read` flag. */
  items: new Map(),
  /** Notification id -> its list element. */
  elements: new Map(),
  /** Next page from the list's Link header, or null on the last page. */
  nextUrl: null,
  /** Smallest id of the pages loaded so far. Live events about older ids wait for "load more". */
  oldestLoadedId: null,
  /** Incremented on each reload of the list, so that a superseded response is dropped. */
  listRequest: 0,
  filters: {},
  selected: new Set(),
  openHistory: new Set(),
  history: new Map(),
  expanded: new Set(),
  /** Ids whose creation has already been counted as unread. */
  counted: new Set(),
  unread: 0,
  /** Incremented whenever the server reports a count, so that an older REST response is dropped. */
  unreadVersion: 0,
  unreadRefreshTimer: null,
  /** Ids whose confirmation request is in flight. */
  confirming: new Set(),
  /** Number of REST loads in flight. While it is above 0, event frames wait in `buffered`. */
  loading: 0,
  buffered: [],
  /** Whether groups and list were loaded for this session. */
  loaded: false,
  resyncTimer: null,
  resyncing: false,
  resyncAgain: false,
  /** The idempotency key and body of the last send attempt, reused when the same body is retried. */
  sendAttempt: null,
  sending: false,
};

const live = {
  socket: null,
  state: 'disconnected',
  attempt: 0,
  retryTimer: null,
  retryAt: 0,
  openedAt: 0,
  lastFrameAt: 0,
  pingSentAt: 0,
  heartbeatTimer: null,
};

/** Confirmations by others that arrived within CONFIRM_TOAST_MS, shown as one toast. */
const confirmNotices = {
  items: [],
  timer: null,
};

const desktop = {
  queue: [],
  timer: null,
  displayed: [],
};

// ---------------------------------------------------------------------------------------------
// DOM helpers

const PROPERTY_ATTRIBUTES = new Set(['checked', 'disabled', 'hidden', 'open', 'value', 'indeterminate']);

/**
 * Creates an element. Attributes go through setAttribute (a few through properties), and
 * children are appended as nodes or text, so no value is ever parsed as HTML.
 */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') {
      element.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    } else if (name === 'text') {
      element.textContent = value;
    } else if (PROPERTY_ATTRIBUTES.has(name)) {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function setText(element, text) {
  element.textContent = text ?? '';
  element.hidden = !text;
}

function announce(text) {
  // Clearing first makes screen readers read the same text again.
  ui.announcer.textContent = '';
  window.setTimeout(() => {
    ui.announcer.textContent = text;
  }, 50);
}

function toast(message, kind = 'info') {
  while (ui.toasts.children.length >= MAX_TOASTS) {
    ui.toasts.firstElementChild.remove();
  }
  const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': t('dismiss'), text: '×' });
  const text = h('span', { class: 'toast-text', text: message });
  const item = h('div', { class: ['toast', `toast-${kind}`] }, text, close);
  const remove = () => item.remove();
  close.addEventListener('click', remove);
  window.setTimeout(remove, kind === 'error' ? TOAST_ERROR_MS : TOAST_MS);
  ui.toasts.append(item);
}

function displayGroup(name) {
  return data.displayNames.get(name) || name;
}

function rememberGroup(name, displayName) {
  if (!name) return false;
  if (displayName) {
    const known = data.displayNames.get(name);
    data.displayNames.set(name, displayName);
    return known !== displayName;
  }
  if (data.displayNames.has(name)) return false;
  data.displayNames.set(name, '');
  return true;
}

function isMember(group) {
  return data.groups.some((g) => g.name === group);
}

function countCodePoints(text) {
  return [...text].length;
}

/** Checks whether the text contains only Unicode white space, as the server's check defines it. */
function isBlank(text) {
  return /^\p{White_Space}*$/u.test(text);
}

function newIdempotencyKey() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  // crypto.randomUUID exists only in secure contexts, so elsewhere a version 4 UUID is built by hand.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------------------------------------
// REST client

class ApiError extends Error {
  constructor(status, problem, cause) {
    super(problem?.detail || cause?.message || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || null;
  }
}

/** Thrown for a response that arrives after the session that sent the request has ended. */
class SessionEnded extends Error {}

/**
 * Calls the API and returns `{body, response}`. Throws ApiError for a failed request (status 0
 * when the server could not be reached). A 401 on an authenticated call ends the session.
 */
async function api(path, { method = 'GET', body, headers = {}, auth = true } = {}) {
  const generation = session.generation;
  const init = {
    method,
    headers: { Accept: 'application/json, application/problem+json', ...headers },
    cache: 'no-store',
    credentials: 'omit',
  };
  if (auth) init.headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }

  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (auth && generation !== session.generation) throw new SessionEnded();
    throw new ApiError(0, null, error);
  }
  if (auth && generation !== session.generation) throw new SessionEnded();

  let parsed = null;
  const type = response.headers.get('Content-Type') || '';
  if (response.status !== 204 && type.includes('json')) {
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
  }
  if (auth && response.status === 401) {
    expireSession();
    throw new SessionEnded();
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return { body: parsed, response };
}

/** Builds the message that tells the user about a failed request. */
function describeError(error) {
  if (!(error instanceof ApiError)) return t('errUnexpected');
  switch (error.status) {
    case 0:
      return t('errNetwork');
    case 403:
      return t('errForbidden');
    case 404:
      return t('errNotFound');
    case 413:
      return t('errTooLarge');
    case 503:
      return t('errUnavailable');
    case 422:
      return error.problem?.detail ? t('errInvalidDetail', { detail: error.problem.detail }) : t('errUnexpected');
    default:
      return t('errStatus', { status: error.status });
  }
}

function reportError(error) {
  if (error instanceof SessionEnded) return;
  if (!(error instanceof ApiError)) console.error(error);
  toast(describeError(error), 'error');
}

/** Extracts the next page from a `Link: <…>; rel="next"` header, when it points to this API. */
function parseNextLink(header) {
  if (!header) return null;
  for (const part of header.split(',')) {
    const match = /<([^>]*)>\s*;\s*rel="?next"?/i.exec(part);
    if (!match) continue;
    const url = new URL(match[1], window.location.origin);
    if (url.origin === window.location.origin && url.pathname === '/api/notifications/') {
      return url.pathname + url.search;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Token and session

/** Decodes the claims of a JWT without verifying them, because the server verifies every request. */
function decodeClaims(token) {
  try {
    const payload = token.split('.')[1];
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

function clockSkew() {
  const stored = Number(sessionStorage.getItem(CLOCK_SKEW_KEY));
  return Number.isFinite(stored) ? stored : 0;
}

function expiryOf(claims) {
  return typeof claims.exp === 'number' ? claims.exp * 1000 + clockSkew() : null;
}

function tokenExpired() {
  return session.expiresAt !== null && Date.now() >= session.expiresAt;
}

function scheduleExpiry() {
  window.clearTimeout(session.expiryTimer);
  window.clearTimeout(session.warningTimer);
  hideSessionBanner();
  if (session.expiresAt === null) return;

  const remaining = session.expiresAt - Date.now();
  if (remaining <= 0) {
    expireSession();
    return;
  }
  session.expiryTimer = window.setTimeout(checkExpiry, Math.min(remaining + 250, MAX_TIMER_MS));
  scheduleRefresh(remaining);
  const untilWarning = remaining - EXPIRY_WARNING_MS;
  if (untilWarning <= 0) {
    showSessionBanner();
  } else {
    session.warningTimer = window.setTimeout(showSessionBanner, Math.min(untilWarning, MAX_TIMER_MS));
  }
}

function scheduleRefresh(remaining) {
  window.clearTimeout(session.refreshTimer);
  const delay = Math.max(remaining - REFRESH_BEFORE_MS, REFRESH_MIN_DELAY_MS);
  if (delay >= remaining) return;
  session.refreshTimer = window.setTimeout(refreshToken, Math.min(delay, MAX_TIMER_MS));
}

/**
 * Swaps the token for a fresh one with `POST /api/auth/refresh`. The open socket keeps the old
 * token until the server closes it with 4001; it then reconnects with the new one and `since`.
 */
async function refreshToken() {
  if (!session.token) return;
  const generation = session.generation;
  try {
    const { body } = await api('/api/auth/refresh', { method: 'POST' });
    const claims = body && typeof body.access_token === 'string' ? decodeClaims(body.access_token) : null;
    if (generation !== session.generation || !claims || claims.sub !== session.username) return;
    session.token = body.access_token;
    session.expiresAt = expiryOf(claims);
    sessionStorage.setItem(TOKEN_KEY, session.token);
    scheduleExpiry();
  } catch (error) {
    if (error instanceof SessionEnded) return;
    // 404: tokens come from an identity provider, which refreshes them; nothing to retry.
    if (error instanceof ApiError && error.status === 404) return;
    if (generation !== session.generation) return;
    window.clearTimeout(session.refreshTimer);
    session.refreshTimer = window.setTimeout(refreshToken, REFRESH_RETRY_MS);
  }
}

function checkExpiry() {
  if (!session.token) return;
  if (tokenExpired()) {
    expireSession();
  } else {
    scheduleExpiry();
  }
}

function showSessionBanner() {
  if (!session.token || session.expiresAt === null) return;
  ui.sessionBannerText.textContent = t('expiryWarning', { time: formatDateTime(new Date(session.expiresAt)) });
  ui.sessionBanner.hidden = false;
}

function hideSessionBanner() {
  ui.sessionBanner.hidden = true;
}

function startSession(token, { fresh = false } = {}) {
  const claims = decodeClaims(token);
  if (!claims || typeof claims.sub !== 'string') {
    showLogin({ error: t('loginBadToken') });
    return;
  }
  if (fresh && typeof claims.iat === 'number') {
    sessionStorage.setItem(CLOCK_SKEW_KEY, String(Date.now() - claims.iat * 1000));
  }

  session.generation += 1;
  session.token = token;
  session.username = claims.sub;
  session.expiresAt = expiryOf(claims);
  sessionStorage.setItem(TOKEN_KEY, token);
  if (tokenExpired()) {
    expireSession();
    return;
  }

  resetData();
  showApp();
  scheduleExpiry();
  live.attempt = 0;
  connectLive();
}

/** Ends the session: drops the token, closes the socket and clears everything loaded. */
function endSession() {
  session.generation += 1;
  session.token = null;
  session.username = null;
  session.expiresAt = null;
  window.clearTimeout(session.expiryTimer);
  window.clearTimeout(session.warningTimer);
  window.clearTimeout(session.refreshTimer);
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(CLOCK_SKEW_KEY);
  hideSessionBanner();
  closeSocket();
  closeDesktopNotifications();
  resetData();
}

/** Returns to the login form after a 401, a 4001 close or the token's exp, keeping the draft. */
function expireSession(message = t('sessionExpired')) {
  if (!session.token) return;
  const username = session.username;
  const content = ui.sendContent.value;
  session.draft = content.trim()
    ? { username, content, receiver: ui.sendReceiver.value, priority: ui.sendPriority.value }
    : null;
  endSession();
  resetSendForm();
  showLogin({ notice: message, username });
}

function logout() {
  session.draft = null;
  endSession();
  resetSendForm();
  showLogin({ notice: t('loggedOut') });
}

function resetData() {
  window.clearTimeout(data.unreadRefreshTimer);
  window.clearTimeout(data.resyncTimer);
  Object.assign(data, {
    groups: [],
    displayNames: new Map(),
    lastSeq: new Map(),
    items: new Map(),
    elements: new Map(),
    nextUrl: null,
    oldestLoadedId: null,
    listRequest: data.listRequest + 1,
    selected: new Set(),
    openHistory: new Set(),
    history: new Map(),
    expanded: new Set(),
    counted: new Set(),
    unread: 0,
    unreadVersion: data.unreadVersion + 1,
    unreadRefreshTimer: null,
    confirming: new Set(),
    loading: 0,
    buffered: [],
    loaded: false,
    resyncTimer: null,
    resyncing: false,
    resyncAgain: false,
    sendAttempt: null,
    sending: false,
  });
  ui.list.replaceChildren();
  ui.batchResult.hidden = true;
  ui.loadMore.hidden = true;
  ui.listLoading.hidden = true;
  ui.loadError.hidden = true;
  renderUnread();
  updateListMeta();
}

// ---------------------------------------------------------------------------------------------
// Views

function showLogin({ notice = '', error = '', username = '' } = {}) {
  for (const element of ui.sessionOnly) element.hidden = true;
  ui.appView.hidden = true;
  ui.loginView.hidden = false;
  setConnectionState('disconnected');
  setText(ui.loginNotice, notice);
  setText(ui.loginError, error);
  ui.loginPassword.value = '';
  ui.loginUsername.value = username || localStorage.getItem(LAST_USERNAME_KEY) || '';
  (ui.loginUsername.value ? ui.loginPassword : ui.loginUsername).focus();
  updateTitle();
}

function showApp() {
  ui.loginView.hidden = true;
  ui.appView.hidden = false;
  for (const element of ui.sessionOnly) element.hidden = false;
  ui.currentUser.textContent = t('signedInAs', { user: session.username });
  setText(ui.loginError, '');
  setText(ui.loginNotice, '');
  renderDesktopToggle();
  updateTitle();
}

function updateTitle() {
  const base = t('appName');
  document.title = session.token && data.unread > 0 ? `(${data.unread}) ${base}` : base;
}

// ---------------------------------------------------------------------------------------------
// Login

async function submitLogin(event) {
  event.preventDefault();
  if (ui.loginSubmit.disabled) return;

  const username = ui.loginUsername.value.trim();
  const password = ui.loginPassword.value;
  if (!username || !password) {
    setText(ui.loginError, t('loginMissing'));
    (username ? ui.loginPassword : ui.loginUsername).focus();
    return;
  }

  setText(ui.loginError, '');
  ui.loginSubmit.disabled = true;
  ui.loginSubmit.textContent = t('loginBusy');
  try {
    const { body } = await api('/api/auth/token', {
      method: 'POST',
      body: { username, password },
      auth: false,
    });
    localStorage.setItem(LAST_USERNAME_KEY, username);
    ui.loginPassword.value = '';
    startSession(body.access_token, { fresh: true });
  } catch (error) {
    setText(ui.loginError, describeLoginError(error));
    ui.loginPassword.select();
    ui.loginPassword.focus();
  } finally {
    ui.loginSubmit.disabled = false;
    ui.loginSubmit.textContent = t('loginSubmit');
  }
}

function describeLoginError(error) {
  if (!(error instanceof ApiError)) return t('errUnexpected');
  switch (error.status) {
    case 401:
      return t('loginInvalid');
    case 404:
      return t('loginDisabled');
    case 422:
      return t('loginMissing');
    default:
      return describeError(error);
  }
}

// ---------------------------------------------------------------------------------------------
// Loading through REST

function beginLoading() {
  data.loading += 1;
}

/** Ends one load. When none is left, it applies the event frames that arrived meanwhile. */
function endLoading() {
  data.loading = Math.max(0, data.loading - 1);
  if (data.loading > 0) return;
  const frames = data.buffered.splice(0);
  for (const frame of frames) applyEvent(frame);
}

/**
 * Loads groups, the unread count and the list. Each group's seq is read before the list, so
 * a socket that resumes from those seqs misses nothing that happened in between.
 */
async function loadAll() {
  beginLoading();
  try {
    const { body: groups } = await api('/api/groups/');
    applyGroups(Array.isArray(groups) ? groups : []);
    await Promise.all([loadList(), refreshUnreadCount()]);
    data.loaded = true;
    ui.loadError.hidden = true;
  } catch (error) {
    data.loaded = false;
    throw error;
  } finally {
    endLoading();
  }
}

function applyGroups(groups) {
  data.groups = groups;
  // After a resync the server's seqs may be lower than the client's, and they replace them.
  data.lastSeq = new Map(groups.map((g) => [g.name, Number(g.seq) || 0]));
  for (const group of groups) {
    rememberGroup(group.name, group.display_name);
    for (const target of group.can_send_to || []) rememberGroup(target.name, target.display_name);
    for (const source of group.can_receive_from || []) rememberGroup(source.name, source.display_name);
  }
  renderSendForm();
  renderGroupFilterOptions();
}

/** Reloads the first page of the list with the active filters. */
async function loadList() {
  const request = ++data.listRequest;
  beginLoading();
  ui.listLoading.hidden = false;
  try {
    const { body: rows, response } = await api(`/api/notifications/?${filterQuery(data.filters)}`);
    if (request !== data.listRequest) return;

    data.items = new Map();
    let newGroups = false;
    for (const row of Array.isArray(rows) ? rows : []) {
      data.items.set(row.id, row);
      newGroups = rememberGroup(row.sender_group) || newGroups;
      newGroups = rememberGroup(row.receiver_group) || newGroups;
    }
    data.nextUrl = parseNextLink(response.headers.get('Link'));
    data.oldestLoadedId = rows.length ? rows[rows.length - 1].id : null;
    for (const id of [...data.selected]) if (!data.items.has(id)) data.selected.delete(id);
    for (const id of [...data.openHistory]) if (!data.items.has(id)) data.openHistory.delete(id);
    if (newGroups) renderGroupFilterOptions();
    renderList();
  } finally {
    if (request === data.listRequest) ui.listLoading.hidden = true;
    endLoading();
  }
}

async function loadMore() {
  if (!data.nextUrl || ui.loadMore.disabled) return;
  const request = data.listRequest;
  ui.loadMore.disabled = true;
  ui.loadMore.textContent = t('loading');
  beginLoading();
  try {
    const { body: rows, response } = await api(data.nextUrl);
    if (request !== data.listRequest) return;
    let newGroups = false;
    for (const row of rows) {
      if (data.items.has(row.id)) continue;
      data.items.set(row.id, row);
      newGroups = rememberGroup(row.sender_group) || newGroups;
      newGroups = rememberGroup(row.receiver_group) || newGroups;
      const element = renderItem(row);
      data.elements.set(row.id, element);
      ui.list.append(element);
    }
    data.nextUrl = parseNextLink(response.headers.get('Link'));
    if (rows.length) data.oldestLoadedId = Math.min(data.oldestLoadedId ?? Infinity, rows[rows.length - 1].id);
    if (newGroups) renderGroupFilterOptions();
    updateListMeta();
  } catch (error) {
    reportError(error);
  } finally {
    ui.loadMore.disabled = false;
    ui.loadMore.textContent = t('loadMore');
    endLoading();
  }
}

function showLoadError(error) {
  ui.loadError.textContent = t('loadFailed', { reason: describeError(error) });
  ui.loadError.hidden = false;
}

/** Reloads groups and list after a `resync_required` error frame. Requests within 100 ms coalesce. */
function requestResync() {
  window.clearTimeout(data.resyncTimer);
  data.resyncTimer = window.setTimeout(runResync, 100);
}

async function runResync() {
  if (data.resyncing) {
    data.resyncAgain = true;
    return;
  }
  data.resyncing = true;
  // A replaced database numbers notifications anew, so ids seen before mean nothing now.
  data.counted = new Set();
  data.history = new Map();
  data.expanded = new Set();
  try {
    await loadAll();
    toast(t('resynced'));
  } catch (error) {
    if (!(error instanceof SessionEnded)) showLoadError(error);
  } finally {
    data.resyncing = false;
    if (data.resyncAgain) {
      data.resyncAgain = false;
      requestResync();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Unread count

function renderUnread() {
  ui.unreadBadge.textContent = String(data.unread);
  ui.unreadBadge.classList.toggle('is-zero', data.unread === 0);
  updateTitle();
}

/** Sets the count that the server reported. Zero also means that every loaded notification is read. */
function setUnreadFromServer(count) {
  if (typeof count !== 'number') return;
  data.unreadVersion += 1;
  data.unread = count;
  renderUnread();
  if (count === 0) {
    for (const [id, n] of data.items) {
      if (!n.read) {
        n.read = true;
        patchReadState(id);
      }
    }
  }
}

async function refreshUnreadCount() {
  const version = ++data.unreadVersion;
  const { body } = await api('/api/notifications/unread-count/');
  if (version !== data.unreadVersion) return;
  setUnreadFromServer(body.count);
}

/** Counts a new notification at once, then fetches the exact count from the server. */
function bumpUnread() {
  data.unread += 1;
  renderUnread();
  window.clearTimeout(data.unreadRefreshTimer);
  data.unreadRefreshTimer = window.setTimeout(() => {
    refreshUnreadCount().catch((error) => {
      if (!(error instanceof SessionEnded)) console.warn('Herald: failed to refresh the unread count', error);
    });
  }, UNREAD_REFRESH_DELAY_MS);
}

// ---------------------------------------------------------------------------------------------
// Live socket

function setConnectionState(state, { retryInMs = 0, offline = false } = {}) {
  live.state = state;
  ui.connection.dataset.state = state;
  let label = t(`connection_${state}`);
  if (state === 'disconnected' && session.token) {
    if (offline) label = t('connectionOffline');
    else if (retryInMs > 0) label = t('connectionRetry', { seconds: Math.max(1, Math.round(retryInMs / 1000)) });
  }
  ui.connectionLabel.textContent = label;
  ui.reconnectNow.hidden = !(state === 'disconnected' && session.token);
}

function socketUrl() {
  const url = new URL('/ws/notifications/', window.location.href);
  url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('token', session.token);
  const since = [...data.lastSeq].map(([group, seq]) => `${group}:${seq}`).join(',');
  if (since) url.searchParams.set('since', since);
  return url.href;
}

/** Loads through REST first when needed, then opens the socket. Failures retry with backoff. */
function connectLive() {
  window.clearTimeout(live.retryTimer);
  live.retryTimer = null;
  if (!session.token || live.socket) return;
  if (tokenExpired()) {
    expireSession();
    return;
  }
  if (navigator.onLine === false) {
    setConnectionState('disconnected', { offline: true });
    return;
  }

  setConnectionState('connecting');
  const generation = session.generation;
  (async () => {
    if (!data.loaded) {
      try {
        await loadAll();
      } catch (error) {
        if (error instanceof SessionEnded || generation !== session.generation) return;
        showLoadError(error);
        scheduleReconnect();
        return;
      }
    }
    if (generation === session.generation && !live.socket) openSocket();
  })();
}

function openSocket() {
  let socket;
  try {
    socket = new WebSocket(socketUrl());
  } catch (error) {
    console.error('Herald: failed to open the socket; retrying with backoff', error);
    scheduleReconnect();
    return;
  }
  live.socket = socket;
  live.openedAt = 0;

  socket.addEventListener('open', () => {
    if (live.socket !== socket) return;
    live.openedAt = Date.now();
    live.lastFrameAt = Date.now();
    live.pingSentAt = 0;
    setConnectionState('connected');
    startHeartbeat();
  });
  socket.addEventListener('message', (event) => {
    if (live.socket !== socket) return;
    live.lastFrameAt = Date.now();
    handleFrame(event.data);
  });
  socket.addEventListener('close', (event) => {
    if (live.socket !== socket) return;
    handleDrop(event.code);
  });
}

/** Reacts to a socket that closed or was given up, by code (see the close codes in README.md). */
function handleDrop(code) {
  const openedAt = live.openedAt;
  live.socket = null;
  live.openedAt = 0;
  stopHeartbeat();
  if (!session.token) return;

  // 4001 means the socket's token expired. After a refresh the session has a newer one, so
  // only an expired session token ends the session; otherwise reconnect with the new token.
  if (tokenExpired()) {
    expireSession();
    return;
  }
  if (openedAt && Date.now() - openedAt >= STABLE_CONNECTION_MS) live.attempt = 0;
  if (!openedAt) {
    // A refused handshake (such as 401 for a token the server no longer accepts) reaches the
    // browser only as a failed connection, so ask the REST API, which reports a 401.
    refreshUnreadCount().catch(() => {});
  }
  // NOTE: close code 1000 from the server also reconnects: README.md lists it as normal closure,
  // but an all-day client should not stay offline when the server ends a socket this way.
  scheduleReconnect();
}

function scheduleReconnect() {
  window.clearTimeout(live.retryTimer);
  if (!session.token) return;
  const base = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** live.attempt);
  const delay = Math.round(base * (1 + Math.random() * RECONNECT_JITTER));
  live.attempt = Math.min(live.attempt + 1, 10);
  live.retryAt = Date.now() + delay;
  live.retryTimer = window.setTimeout(connectLive, delay);
  setConnectionState('disconnected', { retryInMs: delay, offline: navigator.onLine === false });
}

function reconnectNow() {
  if (!session.token || live.socket) return;
  live.attempt = 0;
  connectLive();
}

function closeSocket() {
  window.clearTimeout(live.retryTimer);
  live.retryTimer = null;
  stopHeartbeat();
  const socket = live.socket;
  live.socket = null;
  live.openedAt = 0;
  if (socket) {
    try {
      socket.close(1000, 'logout');
    } catch {
      // Already closing.
    }
  }
  setConnectionState('disconnected');
}

function startHeartbeat() {
  stopHeartbeat();
  live.heartbeatTimer = window.setInterval(checkHeartbeat, HEARTBEAT_CHECK_MS);
}

function stopHeartbeat() {
  window.clearInterval(live.heartbeatTimer);
  live.heartbeatTimer = null;
}

/**
 * Detects a connection that died without a close frame (sleep, a network change): after a
 * silence the client pings, and when nothing at all arrives within the timeout it reconnects.
 */
function checkHeartbeat() {
  const socket = live.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const now = Date.now();
  if (live.pingSentAt && live.lastFrameAt < live.pingSentAt) {
    if (now - live.pingSentAt >= HEARTBEAT_TIMEOUT_MS) {
      console.warn(`Herald: no frame within ${HEARTBEAT_TIMEOUT_MS} ms of a ping; reconnecting`);
      // handleDrop clears live.socket first, so the close event of this socket is ignored.
      handleDrop(4002);
      try {
        socket.close(4000, 'ping timeout');
      } catch {
        // Already closing.
      }
    }
    return;
  }
  if (now - live.lastFrameAt >= HEARTBEAT_IDLE_MS) {
    socket.send(JSON.stringify({ type: 'ping' }));
    live.pingSentAt = now;
  }
}

function handleFrame(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    console.warn('Herald: ignored a frame that is not JSON');
    return;
  }
  switch (frame?.type) {
    case 'notification.created':
    case 'notification.confirmed':
      if (!isEventFrame(frame)) {
        console.warn('Herald: ignored a malformed event frame', frame);
        return;
      }
      if (data.loading > 0) {
        data.buffered.push(frame);
      } else {
        applyEvent(frame);
      }
      break;
    case 'unread_count':
      setUnreadFromServer(frame.count);
      break;
    case 'error':
      if (frame.code === 'resync_required') {
        requestResync();
      } else {
        console.warn('Herald: socket error frame', frame.code, frame.message);
      }
      break;
    case 'pong':
    case 'ack':
      break;
    default:
      console.debug('Herald: ignored frame type', frame?.type);
  }
}

function isEventFrame(frame) {
  return (
    typeof frame.group === 'string' &&
    Number.isInteger(frame.seq) &&
    frame.notification &&
    Number.isInteger(frame.notification.id)
  );
}

/**
 * Applies one event. Events of a group arrive in seq order, at least once, so a seq at or
 * below the group's last one is a duplicate. A notification between two of the user's groups
 * arrives once per group, and the list shows it once by its id.
 */
function applyEvent(frame) {
  const last = data.lastSeq.get(frame.group);
  if (last !== undefined && frame.seq <= last) return;
  data.lastSeq.set(frame.group, frame.seq);

  const n = frame.notification;
  const newSender = rememberGroup(n.sender_group);
  const newReceiver = rememberGroup(n.receiver_group);
  if (newSender || newReceiver) renderGroupFilterOptions();

  if (frame.type === 'notification.created') {
    applyCreated(n);
  } else {
    applyConfirmed(n);
  }
}

function applyCreated(n) {
  const existing = data.items.get(n.id);
  const firstSight = !existing && !data.counted.has(n.id);
  data.counted.add(n.id);
  const fromOthers = n.sender !== session.username;
  // Event frames leave out the per-user `read` flag. A new notification is unread for everyone
  // except its sender, whose own notifications the server counts as read.
  const incoming = { ...n, read: existing ? existing.read : !fromOthers };

  if (firstSight && fromOthers) {
    bumpUnread();
    notifyDesktop(n);
    announce(t('announceNew', { priority: t(`priority_${n.priority}`), group: displayGroup(n.sender_group) }));
  }
  upsertLive(incoming, { highlight: firstSight });
}

function applyConfirmed(n) {
  const existing = data.items.get(n.id);
  if (existing) {
    const wasPending = existing.status === 'pending';
    upsertLive({ ...n, read: existing.read }, { highlight: wasPending });
    if (wasPending && n.confirmed_by !== session.username) noteConfirmation(n);
    return;
  }
  if (!withinLoadedRange(n.id) || !matchesFilters(n, { ignoreRead: true })) return;

  // Not in the list yet, but it belongs there under the active filters: its per-user read
  // flag is not in the frame, so load it.
  const generation = session.generation;
  api(`/api/notifications/${n.id}/`)
    .then(({ body }) => {
      if (generation === session.generation && !data.items.has(body.id)) upsertLive(body, { highlight: true });
    })
    .catch((error) => {
      if (!(error instanceof SessionEnded)) console.warn('Herald: failed to load notification', n.id, error);
    });
}

/** Tells the user about a confirmation made elsewhere. A burst, such as a batch, gives one toast. */
function noteConfirmation(n) {
  confirmNotices.items.push(n);
  if (confirmNotices.timer) return;
  confirmNotices.timer = window.setTimeout(() => {
    confirmNotices.timer = null;
    const items = confirmNotices.items.splice(0);
    if (!items.length || !session.token) return;
    const first = items[0];
    const params = { id: first.id, group: displayGroup(first.receiver_group), user: first.confirmed_by || '?' };
    const oneConfirmer = items.every(
      (n) => n.confirmed_by === first.confirmed_by && n.receiver_group === first.receiver_group,
    );
    let message;
    if (items.length === 1) message = t('confirmedLive', params);
    else if (oneConfirmer) message = t('confirmedLiveMany', { ...params, count: items.length });
    else message = t('confirmedLiveSeveral', { count: items.length });
    // The toast container is a live region, so screen readers read this too.
    toast(message, 'success');
  }, CONFIRM_TOAST_MS);
}

// ---------------------------------------------------------------------------------------------
// The list

/**
 * Combines a stored notification with a newer view of it. A confirmation is never undone
 * (a replayed creation event or an older REST answer still says pending), and neither is a
 * read mark.
 */
function mergeNotification(existing, incoming) {
  const merged = { ...existing, ...incoming };
  if (existing.status === 'confirmed') {
    merged.status = 'confirmed';
    merged.confirmed_by = existing.confirmed_by ?? incoming.confirmed_by;
    merged.confirmed_at = existing.confirmed_at ?? incoming.confirmed_at;
  }
  merged.read = Boolean(existing.read || incoming.read);
  return merged;
}

/** Checks whether notification `id` falls within the pages loaded so far (newest first). */
function withinLoadedRange(id) {
  return data.nextUrl === null || data.oldestLoadedId === null || id > data.oldestLoadedId;
}

function matchesFilters(n, { ignoreRead = false } = {}) {
  const f = data.filters;
  if (f.status && n.status !== f.status) return false;
  if (f.sender_group && n.sender_group !== f.sender_group) return false;
  if (f.receiver_group && n.receiver_group !== f.receiver_group) return false;
  if (f.priority && n.priority !== f.priority) return false;
  const created = Date.parse(n.created_at);
  // The API compares strictly: created_at > created_after and created_at < created_before.
  if (f.created_after && !(created > Date.parse(f.created_after))) return false;
  if (f.created_before && !(created < Date.parse(f.created_before))) return false;
  if (f.unread && !ignoreRead && n.read) return false;
  return true;
}

/**
 * Updates a notification in place, or inserts it when it matches the active filters. A
 * notification that stops matching (confirmed while the filter is "pending") stays until the
 * next reload, so an item never vanishes under the user's pointer.
 */
function upsertLive(n, { highlight = false } = {}) {
  const existing = data.items.get(n.id);
  if (existing) {
    const merged = mergeNotification(existing, n);
    data.items.set(n.id, merged);
    if (merged.status === 'confirmed') data.selected.delete(n.id);
    refreshItem(n.id, { highlight });
    if (data.openHistory.has(n.id)) loadHistory(n.id);
  } else {
    if (!matchesFilters(n) || !withinLoadedRange(n.id)) return;
    data.items.set(n.id, n);
    insertItem(n, { highlight });
  }
  updateListMeta();
}

function renderList() {
  data.elements = new Map();
  const fragment = document.createDocumentFragment();
  const sorted = [...data.items.values()].sort((a, b) => b.id - a.id);
  for (const n of sorted) {
    const element = renderItem(n);
    data.elements.set(n.id, element);
    fragment.append(element);
  }
  ui.list.replaceChildren(fragment);
  updateListMeta();
}

function insertItem(n, { highlight = false } = {}) {
  const element = renderItem(n, { highlight });
  let before = null;
  for (const child of ui.list.children) {
    if (Number(child.dataset.notificationId) < n.id) {
      before = child;
      break;
    }
  }
  ui.list.insertBefore(element, before);
  data.elements.set(n.id, element);
}

/** Rebuilds one item's element, keeping keyboard focus on the same control. */
function refreshItem(id, { highlight = false } = {}) {
  const old = data.elements.get(id);
  const n = data.items.get(id);
  if (!old || !n) return;
  // The audit trail may have been opened by a click whose toggle event has not run yet.
  if (old.querySelector('details.history')?.open && !data.openHistory.has(id)) {
    data.openHistory.add(id);
    loadHistory(id);
  }
  const fresh = renderItem(n, { highlight });
  const focused = old.contains(document.activeElement) ? document.activeElement : null;
  const focusedAction = focused?.dataset?.action;
  old.replaceWith(fresh);
  data.elements.set(id, fresh);
  if (focused) {
    const target = (focusedAction && fresh.querySelector(`[data-action="${focusedAction}"]`)) || fresh;
    target.focus({ preventScroll: true });
  }
}

/**
 * Shows a notification as read without rebuilding its element, so that a click that marks it
 * read still reaches the control it was aimed at (such as the summary of the audit trail).
 */
function patchReadState(id) {
  const element = data.elements.get(id);
  if (!element) return;
  element.classList.remove('is-unread');
  element.dataset.read = 'true';
  element.querySelector('.unread-tag')?.remove();
  const button = element.querySelector('[data-action="mark-read"]');
  if (button) {
    if (button === document.activeElement) element.focus({ preventScroll: true });
    button.remove();
  }
}

function canConfirm(n) {
  return n.status === 'pending' && isMember(n.receiver_group);
}

function shouldFold(content) {
  return content.length > FOLD_CHARS || content.split('\n').length > FOLD_LINES;
}

/** Creates a <time> element showing `iso` compactly, with the full date and zone as its tooltip. */
function timeElement(iso, { seconds = false, ...attributes } = {}) {
  return h('time', {
    ...attributes,
    datetime: iso,
    title: formatFullDateTime(iso),
    text: formatDateTime(iso, { seconds }),
  });
}

function renderItem(n, { highlight = false } = {}) {
  const pending = n.status === 'pending';
  const confirmable = canConfirm(n);
  const unread = !n.read;
  const priority = PRIORITIES.includes(n.priority) ? n.priority : 'normal';
  const metaId = `notification-${n.id}-meta`;

  const item = h('li', {
    class: [
      'notification',
      `priority-${priority}`,
      pending ? 'is-pending' : 'is-confirmed',
      unread && 'is-unread',
      highlight && 'is-highlighted',
    ],
    'data-testid': 'notification-item',
    'data-notification-id': n.id,
    'data-status': n.status,
    'data-priority': priority,
    'data-read': String(!unread),
    'aria-labelledby': metaId,
    tabindex: '-1',
  });

  const select = h(
    'div',
    { class: 'item-select' },
    confirmable
      ? h('input', {
          type: 'checkbox',
          'data-testid': 'select-item',
          'data-action': 'select',
          'aria-label': t('selectItem', { id: n.id }),
          checked: data.selected.has(n.id),
        })
      : null,
  );

  const meta = h(
    'div',
    { class: 'item-meta', id: metaId },
    priority !== 'normal'
      ? h('span', { class: ['priority-tag', `priority-tag-${priority}`], text: t(`priority_${priority}`) })
      : null,
    unread ? h('span', { class: 'unread-tag', text: t('unreadTag') }) : null,
    h(
      'span',
      { class: 'route' },
      h('span', { text: displayGroup(n.sender_group) }),
      h('span', { class: 'route-arrow', 'aria-label': t('routeTo'), text: ' → ' }),
      h('span', { text: displayGroup(n.receiver_group) }),
    ),
    h('span', { class: 'sender', text: t('sentBy', { user: n.sender }) }),
    timeElement(n.created_at, { class: 'created-at' }),
    h('span', { class: 'item-id', text: `#${n.id}` }),
  );

  const folded = shouldFold(n.content) && !data.expanded.has(n.id);
  const content = h('p', {
    class: ['item-content', folded && 'is-folded'],
    'data-testid': 'notification-content',
    id: `notification-${n.id}-content`,
    text: n.content,
  });
  const foldToggle = shouldFold(n.content)
    ? h('button', {
        type: 'button',
        class: 'button-link fold-toggle',
        'data-action': 'fold',
        'aria-expanded': String(!folded),
        'aria-controls': `notification-${n.id}-content`,
        text: folded ? t('showMore') : t('showLess'),
      })
    : null;

  let status;
  if (pending) {
    status = h('span', {
      class: 'status-tag status-pending',
      text: confirmable ? t('statusPendingYou') : t('statusPendingOther', { group: displayGroup(n.receiver_group) }),
    });
  } else {
    status = h(
      'span',
      { class: 'status-tag status-confirmed' },
      t('statusConfirmedBy', { user: n.confirmed_by || '?' }),
      n.confirmed_at ? ' · ' : null,
      n.confirmed_at
        ? timeElement(n.confirmed_at)
        : null,
    );
  }

  const actions = h(
    'div',
    { class: 'item-actions' },
    status,
    confirmable
      ? h('button', {
          type: 'button',
          class: 'button-primary button-small',
          'data-testid': 'confirm-button',
          'data-action': 'confirm',
          'aria-describedby': metaId,
          disabled: data.confirming.has(n.id),
          text: data.confirming.has(n.id) ? t('confirmBusy') : t('confirm'),
        })
      : null,
    unread
      ? h('button', { type: 'button', class: 'button-link', 'data-action': 'mark-read', text: t('markRead') })
      : null,
  );

  const historyOpen = data.openHistory.has(n.id);
  const history = h(
    'details',
    { class: 'history', open: historyOpen },
    h('summary', { 'data-action': 'history', text: t('historyTitle') }),
    h('div', { class: 'history-body' }, renderHistoryBody(n.id)),
  );

  item.append(select, h('div', { class: 'item-body' }, meta, content, foldToggle, actions, history));
  return item;
}

function updateListMeta() {
  const count = data.items.size;
  const filtered = Object.keys(data.filters).length > 0;
  ui.listEmpty.textContent = filtered ? t('emptyFiltered') : t('empty');
  ui.listEmpty.hidden = count > 0 || !session.token || !data.loaded;
  if (!count) {
    ui.listSummary.textContent = '';
  } else if (data.nextUrl) {
    ui.listSummary.textContent = t('summaryMore', { count });
  } else {
    ui.listSummary.textContent = t('summary', { count });
  }
  ui.loadMore.hidden = !data.nextUrl;
  updateSelectionUi();
}

function focusItem(id) {
  const element = data.elements.get(id);
  if (!element) return;
  element.scrollIntoView({ block: 'center' });
  element.focus({ preventScroll: true });
}

// ---------------------------------------------------------------------------------------------
// Audit trail

function renderHistoryBody(id) {
  const entries = data.history.get(id);
  if (entries === undefined) return h('p', { class: 'history-status', text: t('loading') });
  if (entries === null) return h('p', { class: 'history-status', text: t('historyFailed') });
  if (!entries.length) return h('p', { class: 'history-status', text: t('historyEmpty') });
  return h(
    'ol',
    { class: 'history-list' },
    entries.map((entry) =>
      h(
        'li',
        { class: ['history-entry', `history-${entry.action}`] },
        h('span', { class: 'history-action', text: t(`history_${entry.action}`, {}, entry.action) }),
        h('span', { class: 'history-user', text: entry.user }),
        timeElement(entry.at, { seconds: true }),
      ),
    ),
  );
}

async function loadHistory(id) {
  try {
    const { body } = await api(`/api/notifications/${id}/history/`);
    data.history.set(id, Array.isArray(body) ? body : []);
  } catch (error) {
    if (error instanceof SessionEnded) return;
    data.history.set(id, null);
  }
  const body = data.elements.get(id)?.querySelector('.history-body');
  if (body) body.replaceChildren(renderHistoryBody(id));
}

// ---------------------------------------------------------------------------------------------
// Read state

async function markRead(id) {
  const n = data.items.get(id);
  if (!n || n.read) return;
  n.read = true;
  data.unread = Math.max(0, data.unread - 1);
  renderUnread();
  patchReadState(id);
  try {
    await api(`/api/notifications/${id}/read/`, { method: 'POST' });
  } catch (error) {
    if (error instanceof SessionEnded) return;
    const current = data.items.get(id);
    if (current) {
      current.read = false;
      refreshItem(id);
    }
    // NOTE: after a failed mark (such as a 404) the item shows as unread again, and the count
    // is fetched from the server.
    refreshUnreadCount().catch(() => {});
    reportError(error);
  }
}

async function markAllRead() {
  if (ui.markAllRead.disabled) return;
  ui.markAllRead.disabled = true;
  try {
    const { body } = await api('/api/notifications/read/', { method: 'POST', body: { all: true } });
    setUnreadFromServer(0);
    toast(t('markedAllRead', { count: body?.updated ?? 0 }), 'success');
  } catch (error) {
    reportError(error);
  } finally {
    ui.markAllRead.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Confirmation

async function confirmOne(id, button) {
  if (data.confirming.has(id)) return;
  data.confirming.add(id);
  button.disabled = true;
  button.textContent = t('confirmBusy');
  try {
    const { body } = await api(`/api/notifications/${id}/confirm/`, { method: 'POST' });
    upsertLive(body);
    announce(t('confirmedOne', { id }));
    // Confirming a notification means having read it; the server keeps the two marks apart.
    markRead(id);
  } catch (error) {
    if (error instanceof SessionEnded) return;
    if (error.status === 409 && error.problem?.notification) {
      upsertLive(error.problem.notification);
      toast(
        t('alreadyConfirmedBy', {
          id,
          user: error.problem.confirmed_by || '?',
          time: error.problem.confirmed_at ? formatDateTime(error.problem.confirmed_at) : '',
        }),
        'warning',
      );
    } else {
      reportError(error);
    }
  } finally {
    data.confirming.delete(id);
    // The element may have been rebuilt meanwhile, so the button is looked up again.
    const current = data.elements.get(id)?.querySelector('[data-action="confirm"]');
    if (current) {
      current.disabled = false;
      current.textContent = t('confirm');
    }
  }
}

function confirmableIds() {
  return [...data.items.values()].filter(canConfirm).map((n) => n.id);
}

function updateSelectionUi() {
  const confirmable = new Set(confirmableIds());
  for (const id of [...data.selected]) if (!confirmable.has(id)) data.selected.delete(id);
  const count = data.selected.size;
  ui.batchConfirm.textContent = t('batchConfirm', { count });
  ui.batchConfirm.disabled = count === 0 || ui.batchConfirm.classList.contains('is-busy');
  ui.selectAll.disabled = confirmable.size === 0;
  ui.selectAll.checked = confirmable.size > 0 && count === confirmable.size;
  ui.selectAll.indeterminate = count > 0 && count < confirmable.size;
}

function toggleSelectAll() {
  if (ui.selectAll.checked) {
    for (const id of confirmableIds()) data.selected.add(id);
  } else {
    data.selected.clear();
  }
  for (const [id, element] of data.elements) {
    const box = element.querySelector('[data-action="select"]');
    if (box) box.checked = data.selected.has(id);
  }
  updateSelectionUi();
}

async function confirmSelected() {
  const ids = [...data.selected].sort((a, b) => a - b);
  if (!ids.length || ui.batchConfirm.disabled) return;
  ui.batchConfirm.classList.add('is-busy');
  ui.batchConfirm.disabled = true;
  ui.batchConfirm.textContent = t('confirmBusy');

  const results = [];
  let failure = null;
  try {
    for (let start = 0; start < ids.length; start += BATCH_LIMIT) {
      const chunk = ids.slice(start, start + BATCH_LIMIT);
      const { body } = await api('/api/notifications/confirm/', { method: 'POST', body: { ids: chunk } });
      results.push(...(body?.results || []));
    }
  } catch (error) {
    if (error instanceof SessionEnded) return;
    failure = error;
  } finally {
    ui.batchConfirm.classList.remove('is-busy');
  }

  const confirmed = [];
  for (const result of results) {
    data.selected.delete(result.id);
    if (result.notification) upsertLive(result.notification);
    if (result.result === 'confirmed') confirmed.push(result.id);
  }
  for (const id of confirmed) markRead(id);
  updateSelectionUi();
  if (results.length) showBatchResult(results);
  if (failure) reportError(failure);
}

function showBatchResult(results) {
  const counts = new Map();
  for (const result of results) counts.set(result.result, (counts.get(result.result) || 0) + 1);
  ui.batchResultSummary.textContent = [...counts]
    .map(([outcome, count]) => t(`batchCount_${outcome}`, { count }, `${outcome}: ${count}`))
    .join(t('listSeparator'));
  ui.batchResultList.replaceChildren(
    ...results.map((result) => {
      const n = result.notification;
      let detail = t(`batch_${result.result}`, {}, result.result);
      if (result.result === 'already_confirmed' && n?.confirmed_by) {
        detail = t('batch_already_confirmed_by', {
          user: n.confirmed_by,
          time: n.confirmed_at ? formatDateTime(n.confirmed_at) : '',
        });
      }
      return h(
        'li',
        { class: ['batch-item', `batch-${result.result}`] },
        h('span', { class: 'batch-id', text: `#${result.id}` }),
        h('span', { text: detail }),
      );
    }),
  );
  ui.batchResult.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Sending

/** Lists the user's groups that may send to `receiver`. */
function senderChoices(receiver) {
  return data.groups.filter((g) => (g.can_send_to || []).some((target) => target.name === receiver));
}

function renderSendForm() {
  const receivers = new Map();
  for (const group of data.groups) {
    for (const target of group.can_send_to || []) receivers.set(target.name, displayGroup(target.name));
  }
  ui.sendPanel.hidden = receivers.size === 0;
  if (!receivers.size) return;

  const previous = session.draft?.username === session.username ? session.draft.receiver : ui.sendReceiver.value;
  const sorted = [...receivers].sort((a, b) => a[1].localeCompare(b[1], getLanguage()));
  ui.sendReceiver.replaceChildren(...sorted.map(([name, label]) => h('option', { value: name, text: label })));
  if (receivers.has(previous)) ui.sendReceiver.value = previous;
  renderSenderChoice();

  if (session.draft && session.draft.username === session.username) {
    ui.sendContent.value = session.draft.content;
    if (PRIORITIES.includes(session.draft.priority)) ui.sendPriority.value = session.draft.priority;
    toast(t('draftRestored'));
  }
  session.draft = null;
  updateCounter();
}

/** Shows the sender group select only when several of the user's groups may send to the receiver. */
function renderSenderChoice() {
  const choices = senderChoices(ui.sendReceiver.value);
  const previous = ui.sendSender.value;
  ui.sendSender.replaceChildren(...choices.map((g) => h('option', { value: g.name, text: displayGroup(g.name) })));
  if (choices.some((g) => g.name === previous)) ui.sendSender.value = previous;
  ui.sendSenderField.hidden = choices.length < 2;
}

function updateCounter() {
  const count = countCodePoints(ui.sendContent.value);
  ui.sendCounter.textContent = t('counter', { count, max: MAX_CONTENT_CHARS });
  ui.sendCounter.classList.toggle('is-near', count > CONTENT_WARNING_CHARS && count <= MAX_CONTENT_CHARS);
  ui.sendCounter.classList.toggle('is-over', count > MAX_CONTENT_CHARS);
  const shownKind = ui.fieldErrors.content.dataset.kind;
  if (count > MAX_CONTENT_CHARS) {
    showFieldError('content', tooLongMessage(count), 'length');
  } else if (shownKind === 'length' || shownKind === 'blank') {
    // The user is editing, so a client-side content error no longer applies.
    clearFieldError('content');
  }
}

function tooLongMessage(count) {
  return t('contentTooLong', { over: count - MAX_CONTENT_CHARS, max: MAX_CONTENT_CHARS });
}

/** Returns the send form's control for an API field name. */
function sendControl(field) {
  const controls = {
    receiver_group: ui.sendReceiver,
    sender_group: ui.sendSender,
    priority: ui.sendPriority,
    content: ui.sendContent,
  };
  return controls[field];
}

function showFieldError(field, message, kind = 'server') {
  const element = ui.fieldErrors[field];
  const control = sendControl(field);
  element.textContent = message;
  element.dataset.kind = kind;
  element.hidden = false;
  control?.setAttribute('aria-invalid', 'true');
}

function clearFieldError(field) {
  const element = ui.fieldErrors[field];
  element.textContent = '';
  element.dataset.kind = '';
  element.hidden = true;
  const control = sendControl(field);
  control?.removeAttribute('aria-invalid');
}

function clearSendErrors() {
  for (const field of Object.keys(ui.fieldErrors)) clearFieldError(field);
  setText(ui.sendError, '');
}

function resetSendForm() {
  ui.sendContent.value = '';
  ui.sendPriority.value = 'normal';
  clearSendErrors();
  updateCounter();
}

async function submitSend(event) {
  event.preventDefault();
  if (data.sending) return;
  clearSendErrors();

  const content = ui.sendContent.value;
  const count = countCodePoints(content);
  if (isBlank(content)) {
    showFieldError('content', t('contentBlank'), 'blank');
    ui.sendContent.focus();
    return;
  }
  if (count > MAX_CONTENT_CHARS) {
    showFieldError('content', tooLongMessage(count), 'length');
    ui.sendContent.focus();
    return;
  }
  if (!ui.sendReceiver.value) {
    showFieldError('receiver_group', t('receiverMissing'));
    ui.sendReceiver.focus();
    return;
  }

  const body = {
    content,
    receiver_group: ui.sendReceiver.value,
    priority: ui.sendPriority.value,
  };
  if (!ui.sendSenderField.hidden && ui.sendSender.value) body.sender_group = ui.sendSender.value;

  // One key per distinct message: a double click or a retry after a network failure sends the
  // same key, so the server stores the notification once.
  const fingerprint = JSON.stringify(body);
  if (!data.sendAttempt || data.sendAttempt.fingerprint !== fingerprint) {
    data.sendAttempt = { key: newIdempotencyKey(), fingerprint };
  }

  data.sending = true;
  ui.sendSubmit.disabled = true;
  ui.sendSubmit.textContent = t('sendBusy');
  try {
    const { body: notification } = await api('/api/notifications/', {
      method: 'POST',
      body,
      headers: { 'Idempotency-Key': data.sendAttempt.key },
    });
    data.sendAttempt = null;
    data.counted.add(notification.id);
    upsertLive({ ...notification, read: true }, { highlight: true });
    resetSendForm();
    ui.sendContent.focus();
    toast(t('sent', { group: displayGroup(notification.receiver_group) }), 'success');
  } catch (error) {
    if (!(error instanceof SessionEnded)) showSendProblem(error);
  } finally {
    data.sending = false;
    ui.sendSubmit.disabled = false;
    ui.sendSubmit.textContent = t('sendSubmit');
  }
}

function showSendProblem(error) {
  const problem = error instanceof ApiError ? error.problem : null;
  if (problem?.code === 'sender_group_required') {
    renderSenderChoice();
    ui.sendSenderField.hidden = false;
    showFieldError('sender_group', t('senderGroupRequired'));
    ui.sendSender.focus();
    return;
  }
  if (problem?.code === 'unknown_group' && problem.field in ui.fieldErrors) {
    showFieldError(problem.field, t('unknownGroup'));
    return;
  }
  if (problem?.field && problem.field in ui.fieldErrors) {
    // The server's detail starts with the field name ("content: must …"), which the label already shows.
    const detail = String(problem.detail || '').replace(new RegExp(`^${problem.field}:\\s*`), '');
    showFieldError(problem.field, t('fieldRejected', { detail }));
    return;
  }
  if (error instanceof ApiError && error.status === 0) {
    setText(ui.sendError, t('sendNetworkError'));
    return;
  }
  if (error instanceof ApiError && error.status === 403) {
    setText(ui.sendError, t('sendForbidden', { detail: problem?.detail || '' }));
    return;
  }
  setText(ui.sendError, describeError(error));
}

// ---------------------------------------------------------------------------------------------
// Filters

function renderGroupFilterOptions() {
  const byDisplayName = (a, b) => displayGroup(a).localeCompare(displayGroup(b), getLanguage());
  const names = [...data.displayNames.keys()].sort(byDisplayName);
  for (const select of [ui.filterSender, ui.filterReceiver]) {
    const previous = select.value;
    select.replaceChildren(
      h('option', { value: '', text: t('filterAny') }),
      ...names.map((name) => h('option', { value: name, text: displayGroup(name) })),
    );
    select.value = names.includes(previous) ? previous : '';
  }
}

/** Formats a datetime-local value as RFC 3339 with this browser's offset at that moment. */
function localInputToRfc3339(value) {
  if (!value) return null;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return null;
  const pad = (n) => String(n).padStart(2, '0');
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const abs = Math.abs(offset);
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`
  );
}

function readFilters() {
  const filters = {};
  if (ui.filterStatus.value) filters.status = ui.filterStatus.value;
  if (ui.filterSender.value) filters.sender_group = ui.filterSender.value;
  if (ui.filterReceiver.value) filters.receiver_group = ui.filterReceiver.value;
  if (ui.filterPriority.value) filters.priority = ui.filterPriority.value;
  const after = localInputToRfc3339(ui.filterAfter.value);
  const before = localInputToRfc3339(ui.filterBefore.value);
  if (after) filters.created_after = after;
  if (before) filters.created_before = before;
  if (ui.filterUnread.checked) filters.unread = true;
  return filters;
}

function filterQuery(filters) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) query.set(key, value === true ? 'true' : value);
  query.set('limit', String(PAGE_SIZE));
  return query.toString();
}

function applyFilters() {
  const filters = readFilters();
  const after = Date.parse(filters.created_after);
  const before = Date.parse(filters.created_before);
  if (after >= before) {
    setText(ui.filterError, t('filterRangeInvalid'));
    return;
  }
  setText(ui.filterError, '');
  data.filters = filters;
  if (!session.token) return;
  loadList().catch(reportError);
}

// ---------------------------------------------------------------------------------------------
// Desktop notifications

function desktopSupported() {
  return 'Notification' in window;
}

function desktopEnabled() {
  return desktopSupported() && Notification.permission === 'granted' && localStorage.getItem(DESKTOP_KEY) !== 'off';
}

function renderDesktopToggle() {
  const button = ui.desktopToggle;
  if (!session.token || !desktopSupported()) {
    button.hidden = true;
    return;
  }
  button.hidden = false;
  button.disabled = false;
  button.removeAttribute('aria-pressed');
  button.title = '';
  if (Notification.permission === 'granted') {
    const on = desktopEnabled();
    button.textContent = on ? t('desktopOn') : t('desktopOff');
    button.setAttribute('aria-pressed', String(on));
  } else if (Notification.permission === 'denied') {
    button.textContent = t('desktopBlocked');
    button.title = t('desktopBlockedHint');
  } else {
    button.textContent = t('desktopEnable');
  }
}

/** Asks for permission only here, after the user clicked the control. */
async function toggleDesktop() {
  if (!desktopSupported()) return;
  if (Notification.permission === 'granted') {
    localStorage.setItem(DESKTOP_KEY, desktopEnabled() ? 'off' : 'on');
  } else if (Notification.permission === 'denied') {
    toast(t('desktopBlockedHint'), 'warning');
  } else {
    const result = await Notification.requestPermission();
    if (result === 'granted') {
      localStorage.setItem(DESKTOP_KEY, 'on');
      toast(t('desktopEnabled'), 'success');
    }
  }
  renderDesktopToggle();
}

function notifyDesktop(n) {
  if (!document.hidden || !desktopEnabled()) return;
  desktop.queue.push(n);
  if (!desktop.timer) desktop.timer = window.setTimeout(flushDesktop, DESKTOP_BATCH_MS);
}

function priorityPrefix(priority) {
  return priority === 'urgent' || priority === 'high' ? t(`desktopPrefix_${priority}`) : '';
}

function truncate(text, max) {
  const chars = [...text.replace(/\s+/g, ' ').trim()];
  return chars.length > max ? `${chars.slice(0, max).join('')}…` : chars.join('');
}

function flushDesktop() {
  desktop.timer = null;
  const queued = desktop.queue.splice(0);
  if (!queued.length || !desktopEnabled()) return;

  const top = queued.reduce((a, b) => (PRIORITIES.indexOf(b.priority) > PRIORITIES.indexOf(a.priority) ? b : a));
  let title;
  let body;
  if (queued.length === 1) {
    title = priorityPrefix(top.priority) + t('desktopTitle', { group: displayGroup(top.sender_group) });
    body = `${truncate(top.content, 180)}\n— ${top.sender}`;
  } else {
    title = priorityPrefix(top.priority) + t('desktopTitleMany', { count: queued.length });
    body = queued
      .slice(0, 3)
      .map((n) => `${displayGroup(n.sender_group)}: ${truncate(n.content, 60)}`)
      .join('\n');
  }

  try {
    const notification = new Notification(title, {
      body,
      tag: `herald-${top.id}`,
      icon: '/static/favicon.svg',
      lang: getLanguage(),
      requireInteraction: top.priority === 'urgent',
    });
    notification.addEventListener('click', () => {
      window.focus();
      focusItem(top.id);
      notification.close();
    });
    desktop.displayed.push(notification);
  } catch (error) {
    // Some browsers (Chrome on Android) allow notifications only from a service worker.
    console.warn('Herald: cannot show a desktop notification', error);
  }
}

function closeDesktopNotifications() {
  for (const notification of desktop.displayed.splice(0)) notification.close();
}

// ---------------------------------------------------------------------------------------------
// Language

function applyLanguage() {
  const language = getLanguage();
  document.documentElement.lang = language;
  translateStatic(document);

  const other = LANGUAGES.find((l) => l !== language);
  ui.languageSwitch.textContent = t(`languageName_${other}`);
  ui.languageSwitch.setAttribute('lang', other);
  ui.languageSwitch.title = t('switchLanguage');

  setConnectionState(live.state, {
    retryInMs: live.retryTimer ? live.retryAt - Date.now() : 0,
    offline: navigator.onLine === false,
  });
  renderUnread();
  updateCounter();
  renderDesktopToggle();
  if (session.token) {
    ui.currentUser.textContent = t('signedInAs', { user: session.username });
    renderGroupFilterOptions();
    if (data.groups.length) renderSendForm();
    renderList();
    if (!ui.sessionBanner.hidden) showSessionBanner();
  }
  updateListMeta();
  updateTitle();
}

function switchLanguage() {
  const other = LANGUAGES.find((l) => l !== getLanguage());
  setLanguage(other);
  applyLanguage();
}

// ---------------------------------------------------------------------------------------------
// Events

function onListClick(event) {
  const item = event.target.closest('[data-testid="notification-item"]');
  if (!item || !ui.list.contains(item)) return;
  const id = Number(item.dataset.notificationId);
  const control = event.target.closest('[data-action]');
  const action = control?.dataset.action;

  if (action === 'confirm') {
    confirmOne(id, control);
  } else if (action === 'fold') {
    if (data.expanded.has(id)) data.expanded.delete(id);
    else data.expanded.add(id);
    refreshItem(id);
  }
  // Clicking a notification, or opening its audit trail, marks it read. Selecting it does not.
  if (action !== 'select') markRead(id);
}

function onListChange(event) {
  const box = event.target;
  if (box.dataset?.action !== 'select') return;
  const id = Number(box.closest('[data-testid="notification-item"]').dataset.notificationId);
  if (box.checked) data.selected.add(id);
  else data.selected.delete(id);
  updateSelectionUi();
}

function onListToggle(event) {
  const details = event.target;
  if (!(details instanceof HTMLDetailsElement) || !details.classList.contains('history')) return;
  const id = Number(details.closest('[data-testid="notification-item"]').dataset.notificationId);
  if (details.open) {
    // An element rebuilt while open fires toggle too, and refreshItem has loaded its history.
    if (data.openHistory.has(id)) return;
    data.openHistory.add(id);
    loadHistory(id);
  } else {
    data.openHistory.delete(id);
  }
}

function wireEvents() {
  ui.loginForm.addEventListener('submit', submitLogin);
  ui.languageSwitch.addEventListener('click', switchLanguage);
  ui.logout.addEventListener('click', logout);
  ui.reconnectNow.addEventListener('click', reconnectNow);
  ui.desktopToggle.addEventListener('click', toggleDesktop);
  ui.sessionBannerRelogin.addEventListener('click', () => expireSession(t('reloginPrompt')));

  ui.sendForm.addEventListener('submit', submitSend);
  ui.sendContent.addEventListener('input', updateCounter);
  ui.sendContent.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      ui.sendForm.requestSubmit();
    }
  });
  ui.sendReceiver.addEventListener('change', () => {
    clearFieldError('receiver_group');
    clearFieldError('sender_group');
    renderSenderChoice();
  });
  ui.sendSender.addEventListener('change', () => clearFieldError('sender_group'));

  ui.filterForm.addEventListener('change', applyFilters);
  ui.filterForm.addEventListener('submit', (event) => {
    event.preventDefault();
    applyFilters();
  });
  // The reset event fires before the fields are cleared.
  ui.filterForm.addEventListener('reset', () => window.setTimeout(applyFilters, 0));

  ui.list.addEventListener('click', onListClick);
  ui.list.addEventListener('change', onListChange);
  ui.list.addEventListener('toggle', onListToggle, true);
  ui.selectAll.addEventListener('change', toggleSelectAll);
  ui.batchConfirm.addEventListener('click', confirmSelected);
  ui.markAllRead.addEventListener('click', markAllRead);
  ui.loadMore.addEventListener('click', loadMore);
  ui.batchResultClose.addEventListener('click', () => {
    ui.batchResult.hidden = true;
  });

  window.addEventListener('online', reconnectNow);
  window.addEventListener('offline', () => {
    if (!live.socket) setConnectionState('disconnected', { offline: true });
  });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) return;
    closeDesktopNotifications();
    renderDesktopToggle();
    checkExpiry();
    if (session.token && !live.socket && live.state === 'disconnected') reconnectNow();
  });
  // Another tab that switches the language switches this one too.
  window.addEventListener('storage', (event) => {
    if (event.key === LANGUAGE_STORAGE_KEY && event.newValue && event.newValue !== getLanguage()) {
      setLanguage(event.newValue);
      applyLanguage();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Start

function boot() {
  initLanguage();
  wireEvents();
  applyLanguage();
  if (window.matchMedia('(max-width: 899px)').matches) ui.filterPanel.open = false;
  document.documentElement.classList.remove('booting');

  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (!stored) {
    showLogin();
    return;
  }
  const claims = decodeClaims(stored);
  if (!claims || (expiryOf(claims) !== null && Date.now() >= expiryOf(claims))) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin({ notice: t('sessionExpired') });
    return;
  }
  startSession(stored);
}

boot();
