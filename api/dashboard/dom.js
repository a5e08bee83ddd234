// DOM building and formatting shared by the views. Everything that came
// from a webhook is untrusted: it only ever reaches the page as text.

/** An element: h('a', {href: '#/'}, 'text', child, …). `on*` keys add listeners. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      node.className = value;
    } else if (key === 'dataset') {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** An SVG element (for the charts). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  append(node, children);
  return node;
}

export const STATUSES = [
  'INITIATE', 'IN_PROGRESS', 'ENDED', 'COMPLETED', 'TIMEOUT', 'FAILED',
  'VALIDATION_FAILED', 'BUSY', 'NO_ANSWER', 'SKIP', 'RESCHEDULED', 'ABORTED',
  'VOICEMAIL',
];

/** `NO_ANSWER` → `No answer`. */
export function label(word) {
  const text = String(word).toLowerCase().replaceAll('_', ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A status badge: text and colour (the colour never carries meaning alone). */
export function statusBadge(status) {
  return h('span', {class: `status s-${status.toLowerCase()}`, dataset: {status}}, label(status));
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

/** A <time> with a short local rendering; the full instant in its title. */
export function time(iso) {
  if (!iso) return h('span', {class: 'none'}, '—');
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return h('span', {}, String(iso));
  return h('time', {datetime: iso, title: at.toISOString()}, dateTime.format(at));
}

/**
 * An RFC 3339 UTC instant as text that sorts as time, to the nanosecond
 * (the server writes 0, 3, 6 or 9 fraction digits; Date keeps milliseconds).
 */
export function instantKey(iso) {
  const [, head, fraction = ''] = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?/.exec(iso) || [null, iso];
  return `${head}.${fraction.padEnd(9, '0')}`;
}

/** 68 → "1m 08s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  return `${m}m ${String(s % 60).padStart(2, '0')}s`;
}

export function percent(fraction) {
  return fraction === null || fraction === undefined ? '—' : `${Math.round(fraction * 100)}%`;
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return '—';
  return value.toLocaleString(undefined, {maximumFractionDigits: digits});
}

/** 6.54 and `INR` → "₹6.54" (in the reader's locale); null → "—". */
export function money(amount, currency) {
  if (amount === null || amount === undefined) return '—';
  try {
    return amount.toLocaleString(undefined, {style: 'currency', currency, minimumFractionDigits: 2, maximumFractionDigits: 2});
  } catch {
    // A currency code Intl does not know: the number and the code as sent.
    return `${number(amount, 2)} ${currency}`;
  }
}

/** The analysis verdict as words and a sign, never colour alone. */
export function success(value) {
  if (value === true) return h('span', {class: 'yes'}, '✓ yes');
  if (value === false) return h('span', {class: 'no'}, '✗ no');
  return h('span', {class: 'none'}, '—');
}

/** A JSON value as short text for a table cell. */
export function jsonText(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Pretty JSON in a <pre>, for payloads and insights. */
export function jsonBlock(value) {
  return h('pre', {class: 'json'}, JSON.stringify(value, null, 2));
}

/** A definition list from [term, description] pairs (descriptions may be nodes). */
export function facts(pairs, cls = 'facts') {
  return h('dl', {class: cls}, pairs.map(([term, desc]) => h('div', {}, h('dt', {}, term), h('dd', {}, desc))));
}

export function callHref(id) {
  return `#/calls/${encodeURIComponent(id)}`;
}

/** Tell screen readers what just happened (the polite live region). */
export function announce(text) {
  const region = document.getElementById('announce');
  region.textContent = '';
  // A fresh text node is announced even when it repeats the last one.
  requestAnimationFrame(() => { region.textContent = text; });
}

/** Show an error above the view, or clear it with null. */
export function showError(error) {
  const box = document.getElementById('alert');
  if (!error) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  box.hidden = false;
  box.textContent = error.message || String(error);
}

/** Run `fn` at most once per `ms`, trailing call included. */
export function throttle(fn, ms) {
  let timer = null;
  let pending = false;
  return (...args) => {
    if (timer) {
      pending = true;
      return;
    }
    fn(...args);
    timer = setTimeout(function tick() {
      if (pending) {
        pending = false;
        fn(...args);
        timer = setTimeout(tick, ms);
      } else {
        timer = null;
      }
    }, ms);
  };
}
