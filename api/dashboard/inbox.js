// The actions inbox (#/actions): actions oldest first, filtered by status
// and kind, each with buttons that acknowledge it (`acknowledgeAction`).

import {gql} from './api.js';
import {h, time, label, jsonBlock, callHref, announce, showError} from './dom.js';

const PAGE_SIZE = 25;
const STATUSES = ['PENDING', 'HANDLED', 'FAILED'];

export const ACTION_FIELDS = `fragment ActionFields on Action {
  id kind reason payload status note callId createdAt handledAt
}`;

const ACTIONS = `query Inbox($filter: ActionFilter, $first: Int, $after: String) {
  actions(filter: $filter, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { ...ActionFields }
  }
}`;

// Only from the status the page shows: a colleague's acknowledgement in
// between is a CONFLICT, not silently overwritten.
const ACKNOWLEDGE = `mutation Acknowledge($id: ID!, $status: ActionStatus!, $note: String, $from: ActionStatus) {
  acknowledgeAction(id: $id, status: $status, note: $note, expectedStatus: $from) { ...ActionFields }
}`;

export function inboxView(params) {
  const status = STATUSES.includes(params.get('status')) ? params.get('status') : params.get('status') === 'all' ? 'all' : 'PENDING';
  const kind = params.get('kind') || '';
  const filter = {};
  if (status !== 'all') filter.status = [status];
  if (kind) filter.kind = [kind];

  let after = null;
  let complete = false;
  let total = 0;
  const list = h('ul', {class: 'actions inbox'});
  const count = h('p', {class: 'range', 'aria-live': 'polite'});
  const more = h('button', {type: 'button', hidden: true, onclick: () => next()}, 'Load more');

  const element = h('section', {class: 'view inbox-view', 'aria-labelledby': 'view-title'},
    h('h1', {id: 'view-title', tabindex: '-1'}, 'Actions inbox'),
    h('p', {class: 'lead'}, 'What the AI asked the business to do, oldest first. Acknowledge each one once it is handled (or could not be).'),
    inboxFilters(status, kind),
    count, list, more);

  // One page request at a time: actions arriving together must not fetch the same page twice.
  let loading = null;
  let again = false;
  function next() {
    if (loading) {
      again = true;
      return loading;
    }
    loading = page().finally(() => {
      loading = null;
      if (again) {
        again = false;
        next();
      }
    });
    return loading;
  }

  async function page() {
    try {
      const {actions} = await gql(ACTIONS + ACTION_FIELDS, {filter, first: PAGE_SIZE, after});
      showError(null);
      if (after === null) list.replaceChildren();
      list.append(...actions.nodes.map((a) => actionItem(a, {onChange: changed, onConflict: reload, showCall: true})));
      if (!list.children.length) list.append(h('li', {class: 'none empty'}, status === 'PENDING' ? 'Nothing pending: the inbox is empty.' : 'No actions match.'));
      after = actions.pageInfo.endCursor ?? after;
      complete = !actions.pageInfo.hasNextPage;
      total = actions.totalCount;
      more.hidden = complete;
      recount();
    } catch (error) {
      showError(error);
    }
  }

  /** An acknowledged action stays listed (to undo it) but leaves or joins the count. */
  function changed(updated, before) {
    if (status !== 'all' && before !== updated.status) total += updated.status === status ? 1 : before === status ? -1 : 0;
    recount();
  }

  function recount() {
    const what = status === 'all' ? 'actions' : `${label(status).toLowerCase()} actions`;
    // Acknowledged ones stay listed (to undo) but are no longer of the count.
    const shown = [...list.querySelectorAll('li.action')]
      .filter((item) => status === 'all' || item.dataset.status === status).length;
    count.textContent = `${total} ${what}${shown < total ? `, the first ${shown} shown` : ''}.`;
    element.dataset.total = total;
  }

  function reload() {
    after = null;
    return next();
  }

  next();
  return {
    element,
    // A new action belongs at the end: fetch it when everything before it is shown.
    onEvent: (live) => { if (live.event.type === 'action' && complete) next(); },
    reload,
  };
}

function inboxFilters(status, kind) {
  const form = h('form', {class: 'filters', 'aria-label': 'Filter actions', onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const out = new URLSearchParams();
    if (data.get('status') !== 'PENDING') out.set('status', data.get('status'));
    if (data.get('kind')) out.set('kind', data.get('kind').trim());
    location.hash = out.toString() ? `#/actions?${out}` : '#/actions';
  }},
  h('div', {class: 'field'}, h('label', {for: 'a-status'}, 'Status'),
    h('select', {id: 'a-status', name: 'status'},
      [...STATUSES.map((s) => [s, label(s)]), ['all', 'All']].map(([v, t]) => h('option', {value: v, selected: v === status}, t)))),
  h('div', {class: 'field'}, h('label', {for: 'a-kind'}, 'Kind'),
    h('input', {id: 'a-kind', name: 'kind', value: kind, placeholder: 'create_order', autocomplete: 'off'})),
  h('div', {class: 'field buttons'}, h('button', {type: 'submit', class: 'primary'}, 'Apply')));
  return form;
}

/**
 * One action with its acknowledge buttons; `onChange` runs after a change,
 * `onConflict` (reload what is shown) when someone else changed it first.
 */
export function actionItem(action, {onChange, onConflict, showCall}) {
  const item = h('li', {class: 'action', dataset: {actionId: action.id, status: action.status}});
  draw(action);
  return item;

  function draw(a) {
    item.dataset.status = a.status;
    const noteId = `note-${a.id}`;
    const note = h('input', {id: noteId, type: 'text', value: a.note || '', autocomplete: 'off', placeholder: 'what was done'});
    const buttons = a.status === 'PENDING'
      ? [button('Mark handled', 'HANDLED', 'primary'), button('Mark failed', 'FAILED', 'danger')]
      : [button('Reopen', 'PENDING', '')];
    item.replaceChildren(...[
      h('div', {class: 'action-head'},
        h('h3', {}, h('code', {}, a.kind)),
        h('span', {class: `status a-${a.status.toLowerCase()}`}, label(a.status)),
        a.reason ? h('span', {class: 'tag warn'}, label(a.reason)) : null,
        h('span', {class: 'muted'}, 'asked ', time(a.createdAt)),
        a.handledAt ? h('span', {class: 'muted'}, `${label(a.status).toLowerCase()} `, time(a.handledAt)) : null),
      showCall
        ? h('p', {class: 'action-call'}, 'Call ', a.callId ? h('a', {href: callHref(a.callId)}, a.callId) : h('span', {class: 'none'}, 'none named'))
        : null,
      payloadSummary(a),
      h('div', {class: 'ack'},
        h('label', {for: noteId}, 'Note'), note, ...buttons),
    ].filter(Boolean));

    function button(text, status, cls) {
      return h('button', {
        type: 'button', class: cls, dataset: {ack: status},
        'aria-label': `${text}: ${a.kind}${a.callId ? ` of call ${a.callId}` : ''}`,
        onclick: async (event) => {
          const pressed = event.currentTarget;
          pressed.disabled = true;
          try {
            const {acknowledgeAction: updated} = await gql(ACKNOWLEDGE + ACTION_FIELDS, {id: a.id, status, note: note.value.trim() || null, from: a.status});
            showError(null);
            const focus = item.contains(document.activeElement);
            draw(updated);
            if (focus) item.querySelector('.ack button').focus();
            announce(`${a.kind} marked ${label(updated.status).toLowerCase()}`);
            onChange?.(updated, a.status);
          } catch (error) {
            if (error.errors?.some((e) => e.extensions?.code === 'CONFLICT')) {
              // Someone else acknowledged it meanwhile: show what they did.
              await onConflict?.();
              showError(new Error(`Not changed: this ${a.kind} was acknowledged elsewhere in the meantime (${error.message}).`));
              return;
            }
            showError(error);
            pressed.disabled = false;
          }
        },
      }, text);
    }
  }
}

/** The payload's useful lines (an order's address and total), and all of it on demand. */
function payloadSummary(a) {
  const p = a.payload || {};
  const lines = [];
  if (p.shippingAddress) {
    const s = p.shippingAddress;
    lines.push([s.firstName, s.lastName].filter(Boolean).join(' '), [s.address1, s.city, s.zip, s.country].filter(Boolean).join(', '));
  }
  if (p.cartTotal !== undefined) lines.push(`Total ${p.cartTotal}${p.paymentMode ? ` (${p.paymentMode})` : ''}`);
  if (p.number) lines.push(`WhatsApp ${p.number}`);
  const summary = lines.filter(Boolean).join(' · ');
  return h('div', {class: 'payload'},
    summary ? h('p', {}, summary) : null,
    Object.keys(p).length ? h('details', {}, h('summary', {}, 'Payload'), jsonBlock(p)) : null);
}
