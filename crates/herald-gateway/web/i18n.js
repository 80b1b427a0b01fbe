// Interface strings in Simplified Chinese and English, the language choice, and date formatting.
//
// A message is a string with {name} placeholders, or a function of the parameters where the
// wording depends on a number (English plurals).

export const LANGUAGES = ['zh-CN', 'en'];

export const LANGUAGE_STORAGE_KEY = 'herald.language';

const plural = (count, singular, pluralForm) => (count === 1 ? singular : pluralForm);

const MESSAGES = {
  'zh-CN': {
    appName: 'Herald 通知中心',
    skipToList: '跳到通知列表',
    languageName_en: 'English',
    'languageName_zh-CN': '中文',
    switchLanguage: '切换界面语言',

    loginTitle: '登录',
    loginIntro: '使用工作账号登录，实时接收和确认组间通知。',
    username: '用户名',
    password: '密码',
    loginSubmit: '登录',
    loginBusy: '正在登录…',
    loginInvalid: '用户名或密码错误，请重试。',
    loginMissing: '请输入用户名和密码。',
    loginDisabled: '此服务未开放密码登录，请通过单位的统一身份认证登录。',
    loginBadToken: '登录凭据无效，请重新登录。',
    sessionExpired: '登录已失效，请重新登录。',
    loggedOut: '已退出登录。',
    reloginPrompt: '请重新登录以继续使用。',
    expiryWarning: '登录将于 {time} 过期，过期后需要重新登录。',
    reloginNow: '立即重新登录',
    signedInAs: '当前用户 {user}',
    logout: '退出登录',

    connection_connected: '已连接',
    connection_connecting: '正在连接…',
    connection_disconnected: '已断开',
    connectionRetry: '已断开，{seconds} 秒后重连',
    connectionOffline: '已断开（网络离线）',
    reconnectNow: '立即重连',
    unreadLabel: '未读',

    desktopEnable: '开启桌面通知',
    desktopOn: '桌面通知：开',
    desktopOff: '桌面通知：关',
    desktopBlocked: '桌面通知已被阻止',
    desktopBlockedHint: '浏览器已阻止本站的通知，请在浏览器的网站设置中允许通知。',
    desktopEnabled: '桌面通知已开启：页面在后台时，新通知会弹出提醒。',
    desktopTitle: '{group}发来新通知',
    desktopTitleMany: '{count} 条新通知',
    desktopPrefix_high: '【高】',
    desktopPrefix_urgent: '【紧急】',

    sendTitle: '发送通知',
    receiverGroup: '接收组',
    senderGroup: '发送组',
    senderGroupHint: '你所在的多个组都可以发送给该组，请选择以哪个组的名义发送。',
    priority: '优先级',
    priority_low: '低',
    priority_normal: '普通',
    priority_high: '高',
    priority_urgent: '紧急',
    content: '内容',
    contentPlaceholder: '输入通知内容…',
    counter: '{count} / {max}',
    contentBlank: '请输入内容，不能只有空格或换行。',
    contentTooLong: '内容超出 {over} 个字符，最多 {max} 个字符。',
    receiverMissing: '请选择接收组。',
    senderGroupRequired: '请选择发送组。',
    unknownGroup: '该组不存在，请刷新页面后重试。',
    fieldRejected: '服务器拒绝了此项：{detail}',
    sendSubmit: '发送',
    sendBusy: '正在发送…',
    sendShortcut: '按 Ctrl+Enter（Mac 上为 ⌘+Enter）发送',
    sent: '已发送给{group}。',
    sendNetworkError: '网络错误，通知可能未发出。再次点击“发送”即可重试，不会重复发送。',
    sendForbidden: '无权发送：{detail}',
    draftRestored: '已恢复登录过期前未发送的内容。',

    filtersTitle: '筛选',
    status: '状态',
    status_pending: '待确认',
    status_confirmed: '已确认',
    filterAny: '全部',
    createdAfter: '创建时间晚于',
    createdBefore: '创建时间早于',
    unreadOnly: '只看未读',
    filterReset: '清除筛选',
    filterRangeInvalid: '开始时间必须早于结束时间。',

    listTitle: '通知',
    summary: '共 {count} 条',
    summaryMore: '已显示 {count} 条，还有更多',
    selectAllPending: '全选待确认',
    batchConfirm: '确认所选（{count}）',
    markAllRead: '全部标为已读',
    markedAllRead: '已将 {count} 条通知标为已读。',
    batchResultTitle: '批量确认结果',
    batchCount_confirmed: '已确认 {count} 条',
    batchCount_already_confirmed: '{count} 条已被他人确认',
    batchCount_forbidden: '{count} 条无权确认',
    batchCount_not_found: '{count} 条不存在',
    listSeparator: '，',
    batch_confirmed: '已确认',
    batch_already_confirmed: '已被他人确认',
    batch_already_confirmed_by: '已被 {user} 于 {time} 确认',
    batch_forbidden: '无权确认（你不在接收组中）',
    batch_not_found: '不存在或你无权查看',
    dismiss: '关闭',
    loading: '正在加载…',
    loadMore: '加载更多',
    empty: '暂无通知。',
    emptyFiltered: '没有符合筛选条件的通知。',
    loadFailed: '加载失败：{reason} 正在自动重试。',
    resynced: '服务器数据已重置，列表已重新加载。',

    selectItem: '选择通知 #{id}',
    unreadTag: '未读',
    routeTo: '发往',
    sentBy: '发送人 {user}',
    statusPendingYou: '待确认',
    statusPendingOther: '等待{group}确认',
    statusConfirmedBy: '{user} 已确认',
    confirm: '确认',
    confirmBusy: '正在确认…',
    confirmedOne: '已确认通知 #{id}。',
    alreadyConfirmedBy: '通知 #{id} 已被 {user} 于 {time} 确认。',
    confirmedLive: '{group}的 {user} 确认了通知 #{id}。',
    confirmedLiveMany: '{group}的 {user} 确认了 {count} 条通知。',
    confirmedLiveSeveral: '有 {count} 条通知已被确认。',
    announceNew: '收到{group}的新通知，优先级：{priority}。',
    markRead: '标为已读',
    showMore: '展开全文',
    showLess: '收起',
    historyTitle: '处理记录',
    history_created: '创建',
    history_read: '已读',
    history_confirmed: '确认',
    historyEmpty: '暂无记录。',
    historyFailed: '无法加载处理记录。',

    errNetwork: '无法连接服务器，请检查网络后重试。',
    errForbidden: '你无权执行此操作。',
    errNotFound: '通知不存在或你无权查看。',
    errTooLarge: '请求内容过大。',
    errUnavailable: '服务暂时不可用，请稍后重试。',
    errInvalidDetail: '请求无效：{detail}',
    errStatus: '请求失败（HTTP {status}）。',
    errUnexpected: '发生意外错误，请刷新页面后重试。',
  },

  en: {
    appName: 'Herald notifications',
    skipToList: 'Skip to the notifications',
    languageName_en: 'English',
    'languageName_zh-CN': '中文',
    switchLanguage: 'Change the interface language',

    loginTitle: 'Sign in',
    loginIntro: 'Sign in with your work account to receive and confirm notifications between groups as they happen.',
    username: 'Username',
    password: 'Password',
    loginSubmit: 'Sign in',
    loginBusy: 'Signing in…',
    loginInvalid: 'Wrong username or password. Try again.',
    loginMissing: 'Enter your username and password.',
    loginDisabled: 'This service does not accept passwords. Sign in through your organization’s single sign-on.',
    loginBadToken: 'The sign-in token is invalid. Sign in again.',
    sessionExpired: 'Your session has expired or is no longer valid. Sign in again.',
    loggedOut: 'You signed out.',
    reloginPrompt: 'Sign in again to continue.',
    expiryWarning: 'Your session expires at {time}. You will need to sign in again then.',
    reloginNow: 'Sign in again now',
    signedInAs: 'Signed in as {user}',
    logout: 'Sign out',

    connection_connected: 'Connected',
    connection_connecting: 'Connecting…',
    connection_disconnected: 'Disconnected',
    connectionRetry: 'Disconnected, retrying in {seconds} s',
    connectionOffline: 'Disconnected (offline)',
    reconnectNow: 'Reconnect now',
    unreadLabel: 'Unread',

    desktopEnable: 'Enable desktop notifications',
    desktopOn: 'Desktop notifications: on',
    desktopOff: 'Desktop notifications: off',
    desktopBlocked: 'Desktop notifications blocked',
    desktopBlockedHint: 'The browser blocks notifications from this site. Allow them in the browser’s site settings.',
    desktopEnabled: 'Desktop notifications are on: new notifications pop up while this page is in the background.',
    desktopTitle: 'New notification from {group}',
    desktopTitleMany: ({ count }) => `${count} new ${plural(count, 'notification', 'notifications')}`,
    desktopPrefix_high: '[High] ',
    desktopPrefix_urgent: '[URGENT] ',

    sendTitle: 'Send a notification',
    receiverGroup: 'Receiving group',
    senderGroup: 'Sending group',
    senderGroupHint: 'Several of your groups may send to this group. Choose the one that sends.',
    priority: 'Priority',
    priority_low: 'Low',
    priority_normal: 'Normal',
    priority_high: 'High',
    priority_urgent: 'Urgent',
    content: 'Message',
    contentPlaceholder: 'Type the notification…',
    counter: '{count} / {max}',
    contentBlank: 'Enter a message. Spaces and line breaks alone are not enough.',
    contentTooLong: ({ over, max }) => `The message is ${over} ${plural(over, 'character', 'characters')} over the limit of ${max}.`,
    receiverMissing: 'Choose a receiving group.',
    senderGroupRequired: 'Choose the sending group.',
    unknownGroup: 'This group does not exist. Reload the page and try again.',
    fieldRejected: 'The server rejected this field: {detail}',
    sendSubmit: 'Send',
    sendBusy: 'Sending…',
    sendShortcut: 'Press Ctrl+Enter (⌘+Enter on a Mac) to send',
    sent: 'Sent to {group}.',
    sendNetworkError: 'Network error: the notification may not have been sent. Click Send again to retry; it will not be sent twice.',
    sendForbidden: 'You may not send this: {detail}',
    draftRestored: 'The message you had not sent before your session expired is back.',

    filtersTitle: 'Filters',
    status: 'Status',
    status_pending: 'Pending',
    status_confirmed: 'Confirmed',
    filterAny: 'All',
    createdAfter: 'Created after',
    createdBefore: 'Created before',
    unreadOnly: 'Unread only',
    filterReset: 'Clear filters',
    filterRangeInvalid: 'The start must be earlier than the end.',

    listTitle: 'Notifications',
    summary: ({ count }) => `${count} ${plural(count, 'notification', 'notifications')}`,
    summaryMore: ({ count }) => `Showing ${count}, more available`,
    selectAllPending: 'Select all pending',
    batchConfirm: 'Confirm selected ({count})',
    markAllRead: 'Mark all read',
    markedAllRead: ({ count }) => `Marked ${count} ${plural(count, 'notification', 'notifications')} read.`,
    batchResultTitle: 'Batch confirmation results',
    batchCount_confirmed: 'Confirmed: {count}',
    batchCount_already_confirmed: 'already confirmed by someone else: {count}',
    batchCount_forbidden: 'not allowed: {count}',
    batchCount_not_found: 'not found: {count}',
    listSeparator: '; ',
    batch_confirmed: 'Confirmed',
    batch_already_confirmed: 'Already confirmed by someone else',
    batch_already_confirmed_by: 'Already confirmed by {user} at {time}',
    batch_forbidden: 'Not allowed: you are not in the receiving group',
    batch_not_found: 'Not found, or not visible to you',
    dismiss: 'Dismiss',
    loading: 'Loading…',
    loadMore: 'Load more',
    empty: 'No notifications yet.',
    emptyFiltered: 'No notifications match the filters.',
    loadFailed: 'Loading failed: {reason} Retrying automatically.',
    resynced: 'The server’s data was reset, so the list was reloaded.',

    selectItem: 'Select notification #{id}',
    unreadTag: 'Unread',
    routeTo: 'to',
    sentBy: 'from {user}',
    statusPendingYou: 'Pending',
    statusPendingOther: 'Waiting for {group} to confirm',
    statusConfirmedBy: 'Confirmed by {user}',
    confirm: 'Confirm',
    confirmBusy: 'Confirming…',
    confirmedOne: 'Notification #{id} confirmed.',
    alreadyConfirmedBy: 'Notification #{id} was already confirmed by {user} at {time}.',
    confirmedLive: '{user} ({group}) confirmed notification #{id}.',
    confirmedLiveMany: '{user} ({group}) confirmed {count} notifications.',
    confirmedLiveSeveral: '{count} notifications were confirmed.',
    announceNew: 'New notification from {group}, priority {priority}.',
    markRead: 'Mark read',
    showMore: 'Show all',
    showLess: 'Show less',
    historyTitle: 'Audit trail',
    history_created: 'Created',
    history_read: 'Read',
    history_confirmed: 'Confirmed',
    historyEmpty: 'No entries.',
    historyFailed: 'The audit trail could not be loaded.',

    errNetwork: 'Cannot reach the server. Check the network and try again.',
    errForbidden: 'You are not allowed to do this.',
    errNotFound: 'The notification does not exist or is not visible to you.',
    errTooLarge: 'The request is too large.',
    errUnavailable: 'The service is temporarily unavailable. Try again in a moment.',
    errInvalidDetail: 'Invalid request: {detail}',
    errStatus: 'The request failed (HTTP {status}).',
    errUnexpected: 'Something unexpected failed. Reload the page and try again.',
  },
};

let current = 'en';

/** Chinese when the browser's first Chinese or English preference is Chinese, else English. */
export function detectLanguage(preferences = navigator.languages?.length ? navigator.languages : [navigator.language]) {
  for (const tag of preferences) {
    const lower = String(tag || '').toLowerCase();
    if (lower === 'zh' || lower.startsWith('zh-')) return 'zh-CN';
    if (lower === 'en' || lower.startsWith('en-')) return 'en';
  }
  return 'en';
}

/** Picks the stored choice, or else the browser's preference. */
export function initLanguage() {
  let stored = null;
  try {
    stored = localStorage.getItem(LANGUAGE_STORAGE_KEY);
  } catch {
    // Storage can be disabled, and then the browser's preference applies.
  }
  current = LANGUAGES.includes(stored) ? stored : detectLanguage();
  return current;
}

export function getLanguage() {
  return current;
}

/** Switches the language and remembers the choice in localStorage. */
export function setLanguage(language) {
  if (!LANGUAGES.includes(language)) return;
  current = language;
  try {
    localStorage.setItem(LANGUAGE_STORAGE_KEY, language);
  } catch {
    // The choice then lasts until the page is reloaded.
  }
}

/** Formats message `key` in the current language. An unknown key gives `fallback`, or else the key. */
export function t(key, params = {}, fallback = undefined) {
  const message = MESSAGES[current][key] ?? MESSAGES.en[key];
  if (message === undefined) {
    console.warn('Herald: missing message', key);
    return fallback ?? key;
  }
  if (typeof message === 'function') return message(params);
  return message.replace(/\{(\w+)\}/g, (placeholder, name) => (name in params ? String(params[name]) : placeholder));
}

/**
 * Translates the static markup: `data-i18n` sets the text, `data-i18n-placeholder`,
 * `data-i18n-title` and `data-i18n-aria-label` set those attributes.
 */
export function translateStatic(root) {
  for (const element of root.querySelectorAll('[data-i18n]')) element.textContent = t(element.dataset.i18n);
  for (const element of root.querySelectorAll('[data-i18n-placeholder]')) element.placeholder = t(element.dataset.i18nPlaceholder);
  for (const element of root.querySelectorAll('[data-i18n-title]')) element.title = t(element.dataset.i18nTitle);
  for (const element of root.querySelectorAll('[data-i18n-aria-label]')) {
    element.setAttribute('aria-label', t(element.dataset.i18nAriaLabel));
  }
}

const formatters = new Map();

function formatter(options) {
  const key = `${current}|${JSON.stringify(options)}`;
  if (!formatters.has(key)) formatters.set(key, new Intl.DateTimeFormat(current, options));
  return formatters.get(key);
}

function toDate(value) {
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Formats a compact date and time in the browser's time zone, with the year only when it is not this year. */
export function formatDateTime(value, { seconds = false } = {}) {
  const date = toDate(value);
  if (!date) return String(value ?? '');
  const options = { month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' };
  if (date.getFullYear() !== new Date().getFullYear()) options.year = 'numeric';
  if (seconds) options.second = '2-digit';
  return formatter(options).format(date);
}

/** Formats the full date and time with the time zone, for tooltips. */
export function formatFullDateTime(value) {
  const date = toDate(value);
  if (!date) return String(value ?? '');
  return formatter({ dateStyle: 'full', timeStyle: 'long' }).format(date);
}
