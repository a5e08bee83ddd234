// The calls view: stats strip, filters (kept in the URL), a page of calls
// (cursor paging both ways) that the live feed keeps current.

import {gql, ROW} from './api.js';
import {statsStrip} from './stats.js';
import {
  h, label, statusBadge, time, duration, success, jsonText, callHref, announce,
  showError, throttle, instantKey, STATUSES,
} from './dom.js';

const PAGE_SIZE = 25;

const CALLS = `query Calls($filter: CallFilter, $orderBy: CallOrder, $first: Int, $after: String, $last: Int, $before: String) {
  calls(filter: $filter, orderBy: $orderBy, first: $first, after: $after, last: $last, before: $before) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { ...Row } }
  }
}`;

const ORDERS = {
  'created-desc': ['Newest first', {field: 'CREATED_AT', direction: 'DESC'}],
  'created-asc': ['Oldest first', {field: 'CREATED_AT', direction: 'ASC'}],
  'updated-desc': ['Recently updated', {field: 'UPDATED_AT', direction: 'DESC'}],
  'duration-desc': ['Longest first', {field: 'DURATION', direction: 'DESC'}],
  'duration-asc': ['Shortest first', {field: 'DURATION', direction: 'ASC'}],
};

const CHOICES = {
  success: [['', 'Any'], ['true', 'Successful'], ['false', 'Unsuccessful']],
  ended: [['', 'Any'], ['true', 'Ended'], ['false', 'Open']],
  stale: [['', 'Any'], ['true', 'Stale'], ['false', 'Not stale']],
};

/** The filter the URL's parameters describe, as the API's CallFilter. */
export function callFilter(params) {
  const filter = {};
  const statuses = (params.get('status') || '').split(',').filter((s) => STATUSES.includes(s));
  if (statuses.length) filter.status = statuses;
  for (const [param, field] of [['success', 'success'], ['ended', 'lifecycleEnded'], ['stale', 'stale']]) {
    if (params.get(param) === 'true' || params.get(param) === 'false') filter[field] = params.get(param) === 'true';
  }
  // A hand-edited URL may hold anything: an unreadable date is no filter.
  const instant = (value) => {
    const at = value ? new Date(value) : null;
    return at && !Number.isNaN(at.getTime()) ? at.toISOString() : null;
  };
  if (instant(params.get('from'))) filter.createdAfter = instant(params.get('from'));
  if (instant(params.get('to'))) filter.createdBefore = instant(params.get('to'));
  if (params.get('key') && params.has('equals')) {
    filter.metadata = [{key: params.get('key'), equals: metadataValue(params.get('equals'))}];
  }
  return filter;
}

/** `2` → 2, `true` → true, `"2"` → "2", anything that is not JSON → that text. */
function metadataValue(text) {
  try {
    const value = JSON.parse(text);
    return value === null ? text : value;
  } catch {
    return text;
  }
}

/** Whether a call the feed brought belongs in the filtered list. */
function matches(call, filter) {
  if (filter.status && !filter.status.includes(call.status)) return false;
  if ('success' in filter && call.analysis?.success !== filter.success) return false;
  if ('lifecycleEnded' in filter && call.lifecycleEnded !== filter.lifecycleEnded) return false;
  if ('stale' in filter && call.stale !== filter.stale) return false;
  const created = Date.parse(call.createdAt);
  if (filter.createdAfter && created < Date.parse(filter.createdAfter)) return false;
  if (filter.createdBefore && created >= Date.parse(filter.createdBefore)) return false;
  return (filter.metadata || []).every((m) => JSON.stringify(call.metadata?.[m.key]) === JSON.stringify(m.equals));
}

/** The later of two states of one call wins (live messages and pages race). */
function newer(incoming, current) {
  return instantKey(incoming.updatedAt) >= instantKey(current.updatedAt);
}

export function callsView(params) {
  const filter = callFilter(params);
  const orderKey = ORDERS[params.get('order')] ? params.get('order') : 'created-desc';
  const orderBy = ORDERS[orderKey][1];
  const stats = statsStrip();
  const refreshStats = throttle(() => stats.refresh(filter).catch(showError), 1500);

  let rows = [];
  let info = {hasNextPage: false, startCursor: null, endCursor: null};
  /** Cursors of the loaded rows (rows the feed inserted have none). */
  let cursors = new Map();
  let total = 0;
  let pageIndex = 0;
  let loaded = false;
  /** Calls already counted in the "new calls" notice. */
  const counted = new Set();
  let early = [];
  let unseen = 0;

  const tbody = h('tbody', {onkeydown: moveFocus}, h('tr', {class: 'empty'}, h('td', {colspan: 7}, 'Loading…')));
  const caption = h('caption', {class: 'sr-only'});
  const range = h('p', {class: 'range'});
  // Back to the first page: the newest calls (where the feed adds new ones), not the page before a cursor.
  const previous = h('button', {
    type: 'button',
    onclick: () => (pageIndex <= 1 ? load({first: PAGE_SIZE}, 0) : load({last: PAGE_SIZE, before: info.startCursor}, pageIndex - 1)),
  }, '← Previous');
  const next = h('button', {type: 'button', onclick: nextPage}, 'Next →');
  const fresh = h('p', {class: 'notice', role: 'status', hidden: true});

  const element = h('section', {class: 'view calls-view', 'aria-labelledby': 'view-title'},
    h('h1', {id: 'view-title', tabindex: '-1'}, 'Calls'),
    stats.section,
    h('details', {class: 'filter-box', open: matchMedia('(min-width: 761px)').matches},
      h('summary', {}, 'Filters', Object.keys(filter).length ? ` (${Object.keys(filter).length} active)` : ''),
      filterForm(params, orderKey)),
    fresh,
    h('div', {class: 'table-wrap'},
      h('table', {class: 'calls'}, caption,
        h('thead', {}, h('tr', {}, ['Call', 'Status', 'Metadata', 'Attempts', 'Duration', 'Success', 'Created']
          .map((name) => h('th', {scope: 'col'}, name)))),
        tbody)),
    h('nav', {class: 'pager', 'aria-label': 'Pages of calls'}, previous, range, next));

  async function load(page, index) {
    try {
      const variables = {filter, orderBy, ...page};
      const {calls} = await gql(CALLS + ROW, variables);
      pageIndex = index;
      if (index === 0) {
        // The newest calls are on screen again: nothing is left to announce.
        unseen = 0;
        counted.clear();
        fresh.hidden = true;
      }
      rows = calls.edges.map((e) => e.node);
      cursors = new Map(calls.edges.map((e) => [e.node.id, e.cursor]));
      info = calls.pageInfo;
      total = calls.totalCount;
      loaded = true;
      for (const live of early.splice(0)) onEvent(live);
      draw();
      showError(null);
    } catch (error) {
      showError(error);
    }
  }

  function draw() {
    tbody.replaceChildren(...(rows.length ? rows.map(row) : [emptyRow()]));
    drawRange();
  }

  function drawRange() {
    const first = pageIndex * PAGE_SIZE + 1;
    const shown = rows.length ? `${first}–${first + rows.length - 1} of ${total}` : `0 of ${total}`;
    range.textContent = `Calls ${shown}`;
    caption.textContent = `Calls, ${ORDERS[orderKey][0].toLowerCase()}: ${shown}`;
    previous.disabled = pageIndex === 0;
    next.disabled = !info.hasNextPage;
    element.dataset.total = total;
  }

  /** After the page's last row; when the feed pushed every loaded row off the page, from the top again. */
  async function nextPage() {
    const after = cursors.get(rows[rows.length - 1]?.id);
    if (after) return load({first: PAGE_SIZE, after}, pageIndex + 1);
    await load({first: PAGE_SIZE}, 0);
    if (info.hasNextPage) await load({first: PAGE_SIZE, after: info.endCursor}, 1);
  }

  function onFirstPage() {
    return pageIndex === 0 && orderKey === 'created-desc';
  }

  function onEvent(live) {
    if (!loaded) {
      early.push(live);
      return;
    }
    refreshStats();
    const call = live.call;
    if (!call) return;
    const at = rows.findIndex((r) => r.id === call.id);
    if (at >= 0) {
      if (!newer(call, rows[at])) return;
      // It left the filter (an IN_PROGRESS call completed, say): off the
      // page. Only for a state strictly newer than the row's: a replayed
      // message judges `stale` at its delivery, the page at its query.
      if (!matches(call, filter) && instantKey(call.updatedAt) > instantKey(rows[at].updatedAt)) {
        const hadFocus = tbody.querySelector(`tr[data-call-id="${CSS.escape(call.id)}"]`)?.contains(document.activeElement);
        rows.splice(at, 1);
        total -= 1;
        draw();
        if (hadFocus) (tbody.querySelectorAll('tr a')[Math.min(at, rows.length - 1)] ?? element.querySelector('h1')).focus();
        return;
      }
      const changed = rows[at].status !== call.status;
      rows[at] = call;
      const old = tbody.querySelector(`tr[data-call-id="${CSS.escape(call.id)}"]`);
      const replacement = row(call);
      if (changed) flash(replacement);
      if (old) {
        const hadFocus = old.contains(document.activeElement);
        old.replaceWith(replacement);
        if (hadFocus) replacement.querySelector('a').focus();
      }
      return;
    }
    if (!matches(call, filter)) return;
    if (!onFirstPage()) {
      // A call first heard of just now, whatever its first delivery (v1
      // `call.initiate`, v2 `call.queued`), counted once.
      if (Date.now() - Date.parse(call.createdAt) < 60_000 && !counted.has(call.id)) {
        counted.add(call.id);
        showFresh();
      }
      return;
    }
    insert(call);
  }

  /** A call the page does not show yet, at its place by creation (newest first). */
  function insert(call) {
    const key = (c) => [instantKey(c.createdAt), c.id];
    const [t, id] = key(call);
    let at = rows.findIndex((r) => {
      const [rt, rid] = key(r);
      return rt < t || (rt === t && rid < id);
    });
    if (at < 0) {
      if (info.hasNextPage) return;
      at = rows.length;
    }
    rows.splice(at, 0, call);
    total += 1;
    if (rows.length > PAGE_SIZE) {
      rows.pop();
      info.hasNextPage = true;
    }
    if (rows.length === 1) tbody.replaceChildren();
    const tr = row(call);
    flash(tr);
    const before = tbody.children[at];
    tbody.insertBefore(tr, before || null);
    while (tbody.children.length > PAGE_SIZE) tbody.lastElementChild.remove();
    drawRange();
  }

  function showFresh() {
    unseen += 1;
    fresh.hidden = false;
    fresh.replaceChildren(`${unseen} new ${unseen === 1 ? 'call' : 'calls'} since this page loaded. `,
      h('button', {type: 'button', class: 'link-button', onclick: () => { unseen = 0; counted.clear(); fresh.hidden = true; load({first: PAGE_SIZE}, 0); }}, 'Show the newest'));
  }

  load({first: PAGE_SIZE}, 0);
  stats.refresh(filter).catch(showError);
  return {element, onEvent, reload: () => { load({first: PAGE_SIZE}, 0); refreshStats(); }};
}

function row(call) {
  return h('tr', {
    dataset: {callId: call.id, status: call.status},
    onclick: (event) => {
      if (!event.target.closest('a, button') && !window.getSelection().toString()) location.hash = callHref(call.id);
    },
  },
  h('th', {scope: 'row', 'data-label': 'Call'}, h('a', {href: callHref(call.id)}, call.id), dialled(call)),
  h('td', {'data-label': 'Status'}, statusBadge(call.status),
    call.stale ? h('span', {class: 'tag warn', title: 'Nothing arrived for longer than the retry window'}, 'stale') : null),
  h('td', {'data-label': 'Metadata', class: 'metadata'}, metadataChips(call.metadata)),
  h('td', {'data-label': 'Attempts', class: 'num'}, String(call.attemptCount)),
  h('td', {'data-label': 'Duration', class: 'num'}, duration(call.durationSeconds)),
  h('td', {'data-label': 'Success'}, success(call.analysis?.success)),
  h('td', {'data-label': 'Created'}, time(call.createdAt)));
}

/** Under a v2 call's id: the number dialled and the agent (v1 calls have neither). */
function dialled(call) {
  if (!call.to && !call.agentId) return null;
  return h('span', {class: 'dialled'},
    call.to ? h('span', {class: 'to', title: 'Number dialled'}, call.to) : null,
    call.to && call.agentId ? ' · ' : null,
    call.agentId ? h('span', {class: 'agent', title: 'Agent'}, call.agentId) : null);
}

function emptyRow() {
  return h('tr', {class: 'empty'}, h('td', {colspan: 7}, 'No calls match. Send some with ', h('code', {}, 'calltrail simulate'), ', or clear the filters.'));
}

function metadataChips(metadata) {
  const entries = Object.entries(metadata || {});
  if (entries.length === 0) return h('span', {class: 'none'}, '—');
  const shown = entries.slice(0, 2).map(([key, value]) =>
    h('span', {class: 'chip', title: `${key}: ${jsonText(value)}`}, h('span', {class: 'chip-key'}, key), ' ', jsonText(value)));
  if (entries.length > 2) {
    const rest = entries.slice(2).map(([key, value]) => `${key}: ${jsonText(value)}`).join('\n');
    shown.push(h('span', {class: 'chip more', title: rest}, `+${entries.length - 2}`));
  }
  return shown;
}

function flash(node) {
  node.classList.add('changed');
  setTimeout(() => node.classList.remove('changed'), 1600);
}

/** ↑/↓ move between the rows' links; Enter follows the focused link. */
function moveFocus(event) {
  if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
  const current = event.target.closest('tr');
  const target = event.key === 'ArrowDown' ? current?.nextElementSibling : current?.previousElementSibling;
  const link = target?.querySelector('a');
  if (link) {
    event.preventDefault();
    link.focus();
  }
}

function filterForm(params, orderKey) {
  const chosen = new Set((params.get('status') || '').split(',').filter(Boolean));
  const statusSummary = h('summary', {}, chosen.size ? `Status: ${[...chosen].map(label).join(', ')}` : 'Status: any');
  const select = (name, text, options, value) => h('div', {class: 'field'},
    h('label', {for: `f-${name}`}, text),
    h('select', {id: `f-${name}`, name}, options.map(([v, t]) => h('option', {value: v, selected: v === value}, t))));
  const input = (name, text, type, extra = {}) => h('div', {class: 'field'},
    h('label', {for: `f-${name}`}, text),
    h('input', {id: `f-${name}`, name, type, value: params.get(name) || '', ...extra}));

  const form = h('form', {class: 'filters', 'aria-label': 'Filter calls', onsubmit: apply},
    h('details', {class: 'dropdown field'}, statusSummary,
      h('fieldset', {}, h('legend', {class: 'sr-only'}, 'Statuses to show'),
        STATUSES.map((s) => h('label', {class: 'check'},
          h('input', {type: 'checkbox', name: 'status', value: s, checked: chosen.has(s)}), label(s))))),
    select('success', 'Analysis', CHOICES.success, params.get('success') || ''),
    select('ended', 'Lifecycle', CHOICES.ended, params.get('ended') || ''),
    select('stale', 'Stale', CHOICES.stale, params.get('stale') || ''),
    input('from', 'Created from', 'datetime-local', {step: 1}),
    input('to', 'Created before', 'datetime-local', {step: 1}),
    input('key', 'Metadata key', 'text', {placeholder: 'customer_id', autocomplete: 'off'}),
    input('equals', 'equals', 'text', {placeholder: 'cus_3001 or 42', autocomplete: 'off', 'aria-describedby': 'f-equals-hint'}),
    select('order', 'Order', Object.entries(ORDERS).map(([k, [t]]) => [k, t]), orderKey),
    h('div', {class: 'field buttons'},
      h('button', {type: 'submit', class: 'primary'}, 'Apply'),
      h('button', {type: 'button', onclick: () => { location.hash = '#/'; }}, 'Clear')),
    h('p', {id: 'f-equals-hint', class: 'hint'}, 'The value is read as JSON when it is JSON (42, true, "42"), else as text.'));

  function apply(event) {
    event.preventDefault();
    const data = new FormData(form);
    const out = new URLSearchParams();
    const statuses = data.getAll('status');
    if (statuses.length) out.set('status', statuses.join(','));
    for (const name of ['success', 'ended', 'stale', 'from', 'to', 'key']) {
      if (data.get(name)) out.set(name, data.get(name));
    }
    if (data.get('key')) out.set('equals', data.get('equals'));
    if (data.get('order') !== 'created-desc') out.set('order', data.get('order'));
    const query = out.toString();
    location.hash = query ? `#/?${query}` : '#/';
    announce('Filters applied');
  }

  closeWhenLeft(form.querySelector('details.dropdown'));
  form.addEventListener('change', (event) => {
    if (event.target.name === 'status') {
      const now = new FormData(form).getAll('status');
      statusSummary.textContent = now.length ? `Status: ${now.map(label).join(', ')}` : 'Status: any';
    }
  });
  return form;
}

/** The status list closes on Escape, and when a click or the focus goes elsewhere. */
function closeWhenLeft(dropdown) {
  const summary = dropdown.querySelector('summary');
  dropdown.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && dropdown.open) {
      event.preventDefault();
      dropdown.open = false;
      summary.focus();
    }
  });
  dropdown.addEventListener('focusout', (event) => {
    if (event.relatedTarget && !dropdown.contains(event.relatedTarget)) dropdown.open = false;
  });
  document.addEventListener('click', function outside(event) {
    if (!dropdown.isConnected) document.removeEventListener('click', outside);
    else if (!dropdown.contains(event.target)) dropdown.open = false;
  });
}
