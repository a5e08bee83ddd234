// The call page (#/calls/<id>): facts, analysis, attempt timeline,
// actions (with their acknowledge buttons) and every raw delivery.
// Reloaded (at most every second) while the feed brings its deliveries.

import {gql} from './api.js';
import {actionItem, ACTION_FIELDS} from './inbox.js';
import {
  h, statusBadge, time, duration, success, number, money, jsonText, jsonBlock, facts,
  label, showError, throttle,
} from './dom.js';

const EVENT_LIMIT = 1000;

const CALL = `query Call($id: ID!, $events: Int) {
  call(id: $id) {
    id status metadata startedAt endedAt durationSeconds recordingUrl detailUrl
    attemptCount reAttemptCount rescheduledCount finalStatus lifecycleEnded stale
    creditsUsed createdAt updatedAt to agentId endedReason cost { amount currency perMinute }
    analysis { success summary requiredActions insights outcome creditsUsed creditsAvailable createdAt }
    attempts {
      id number status startedAt endedAt durationSeconds recordingUrl
      analysis { success summary }
      events(first: $events) { id type receivedAt }
    }
    actions { ...ActionFields }
    events(first: $events) { id type format upstreamId receivedAt signatureVerified recognized payload }
  }
}`;

export function callView(id) {
  const body = h('div', {class: 'call-body'}, h('p', {class: 'loading'}, 'Loading…'));
  const title = h('h1', {id: 'view-title', tabindex: '-1'}, 'Call ', h('code', {}, id));
  const element = h('section', {class: 'view call-view', 'aria-labelledby': 'view-title'},
    h('p', {class: 'back'}, h('a', {href: '#/'}, '← All calls')),
    title, body);

  async function load() {
    try {
      const {call} = await gql(CALL + ACTION_FIELDS, {id, events: EVENT_LIMIT});
      showError(null);
      if (!call) {
        body.replaceChildren(h('p', {class: 'none'}, 'calltrail has no call with this id (yet).'));
        return;
      }
      // Keep the raw events that are open open across reloads, and notes
      // being typed (with the focus and caret) as they are.
      const open = new Set([...body.querySelectorAll('details[open][data-event]')].map((d) => d.dataset.event));
      const typed = [...body.querySelectorAll('input[id^="note-"]')]
        .filter((input) => input.value !== input.defaultValue)
        .map((input) => [input.id, input.value]);
      const focused = body.contains(document.activeElement) && document.activeElement.id ? document.activeElement : null;
      const caret = focused?.selectionStart ?? null;
      body.replaceChildren(...sections(call, open, load));
      for (const [inputId, value] of typed) {
        const input = document.getElementById(inputId);
        if (input) input.value = value;
      }
      const refocus = focused && document.getElementById(focused.id);
      if (refocus) {
        refocus.focus();
        if (caret !== null && refocus.setSelectionRange) refocus.setSelectionRange(caret, caret);
      }
      title.replaceChildren('Call ', h('code', {}, call.id), ' ', statusBadge(call.status));
      element.dataset.status = call.status;
    } catch (error) {
      showError(error);
    }
  }
  const reload = throttle(load, 1000);

  load();
  return {
    element,
    onEvent: (live) => { if (live.event.callId === id) reload(); },
    reload: load,
  };
}

function sections(call, open, reloadCall) {
  // v2 webhooks carry no metadata, analyses, actions, credits or recordings,
  // and v1 webhooks no number, agent, ended reason or cost: each call shows
  // what its format can send (and anything it did send).
  const formats = new Set(call.events.map((e) => e.format));
  const v1 = formats.has('V1') || formats.size === 0;
  const v2 = formats.has('V2');
  const v1Fact = (term, value, shown) => (v1 || value !== null ? [term, shown] : null);
  const v2Fact = (term, value, shown) => (v2 || value !== null ? [term, shown] : null);
  const hasMetadata = Object.keys(call.metadata || {}).length > 0;
  return [
    h('section', {class: 'card', 'aria-labelledby': 'summary-title'},
      h('h2', {id: 'summary-title'}, 'Summary'),
      // Who was called and by which agent: wider columns, so an agent id stays on one line.
      v2 || call.to !== null || call.agentId !== null
        ? facts([
          ['To', call.to ? h('span', {dataset: {fact: 'to'}}, call.to) : '—'],
          ['Agent', call.agentId ? h('code', {dataset: {fact: 'agent'}}, call.agentId) : '—'],
        ], 'facts identity')
        : null,
      facts([
        ['Status', statusBadge(call.status)],
        ['Attempts', String(call.attemptCount)],
        ['Duration', duration(call.durationSeconds)],
        ['Started', time(call.startedAt)],
        ['Ended', time(call.endedAt)],
        v2Fact('Ended because', call.endedReason, call.endedReason
          ? h('span', {title: call.endedReason, dataset: {fact: 'ended-reason', value: call.endedReason}}, label(call.endedReason))
          : '—'),
        v2Fact('Cost', call.cost, call.cost ? h('span', {dataset: {fact: 'cost'}}, money(call.cost.amount, call.cost.currency)) : '—'),
        call.cost?.perMinute !== null && call.cost?.perMinute !== undefined
          ? ['Per minute', h('span', {dataset: {fact: 'per-minute'}}, money(call.cost.perMinute, call.cost.currency))]
          : null,
        ['Created', time(call.createdAt)],
        ['Updated', time(call.updatedAt)],
        ['Lifecycle', call.lifecycleEnded ? `ended (${call.finalStatus ?? 'no final status'})` : 'open'],
        // v2 never retries nor reschedules: its 0s say nothing.
        v1 ? ['Re-attempts', call.reAttemptCount ?? '—'] : null,
        v1 ? ['Rescheduled', call.rescheduledCount ?? '—'] : null,
        ['Stale', call.stale ? 'yes: nothing arrived within the retry window' : 'no'],
        v1Fact('Credits used', call.creditsUsed, number(call.creditsUsed, 2)),
        v1Fact('Recording', call.recordingUrl, link(call.recordingUrl, 'listen')),
        v1Fact('Platform page', call.detailUrl, link(call.detailUrl, 'open')),
      ].filter(Boolean)),
      v1 || hasMetadata
        ? [h('h3', {}, 'Metadata'), hasMetadata
          ? facts(Object.entries(call.metadata).map(([k, v]) => [k, jsonText(v)]), 'facts metadata-list')
          : h('p', {class: 'none'}, 'None.')]
        : null),
    v1 || call.analysis ? analysisSection(call.analysis) : null,
    h('section', {class: 'card', 'aria-labelledby': 'attempts-title'},
      h('h2', {id: 'attempts-title'}, `Attempts (${call.attempts.length})`),
      h('ol', {class: 'timeline'}, call.attempts.map(attemptItem))),
    v1 || call.actions.length
      ? h('section', {class: 'card', 'aria-labelledby': 'actions-title'},
        h('h2', {id: 'actions-title'}, `Actions (${call.actions.length})`),
        call.actions.length
          ? h('ul', {class: 'actions'}, call.actions.map((a) => actionItem(a, {showCall: false, onConflict: reloadCall})))
          : h('p', {class: 'none'}, 'The AI asked for no action.'))
      : null,
    eventsSection(call.events, open),
  ].filter(Boolean);
}

function link(url, text) {
  if (!url) return h('span', {class: 'none'}, '—');
  let safe = null;
  try {
    const parsed = new URL(url);
    if (parsed.protocol === 'https:' || parsed.protocol === 'http:') safe = parsed.href;
  } catch { /* not a URL: shown as text */ }
  return safe ? h('a', {href: safe, rel: 'noopener noreferrer', target: '_blank'}, text, h('span', {class: 'sr-only'}, ' (opens a new tab)')) : url;
}

function analysisSection(analysis) {
  const content = analysis
    ? [
      facts([
        ['Success', success(analysis.success)],
        ['Required actions', analysis.requiredActions.length ? analysis.requiredActions.join(', ') : '—'],
        ['Credits', `${number(analysis.creditsUsed, 2)} used, ${number(analysis.creditsAvailable, 2)} left`],
        ['Received', time(analysis.createdAt)],
      ]),
      h('h3', {}, 'Summary'),
      h('blockquote', {class: 'summary'}, analysis.summary || '—'),
      h('h3', {}, 'Insights'),
      insights(analysis.insights),
      analysis.outcome ? [h('h3', {}, 'Outcome'), insights(analysis.outcome)] : null,
    ]
    : h('p', {class: 'none'}, 'No analysis yet: it arrives with ', h('code', {}, 'end-of-call'), '.');
  return h('section', {class: 'card', 'aria-labelledby': 'analysis-title'},
    h('h2', {id: 'analysis-title'}, 'Analysis'), content);
}

/** Flat objects as a list; anything deeper as JSON. */
function insights(value) {
  if (value === null || value === undefined) return h('p', {class: 'none'}, '—');
  const flat = typeof value === 'object' && !Array.isArray(value)
    && Object.values(value).every((v) => v === null || typeof v !== 'object');
  return flat ? facts(Object.entries(value).map(([k, v]) => [label(k), jsonText(v)])) : jsonBlock(value);
}

function attemptItem(attempt) {
  return h('li', {class: 'attempt', dataset: {status: attempt.status}},
    h('div', {class: 'attempt-head'},
      h('h3', {}, `Attempt ${attempt.number}`), statusBadge(attempt.status),
      h('span', {class: 'muted'}, duration(attempt.durationSeconds)),
      attempt.analysis ? h('span', {class: 'muted'}, 'analysis: ', success(attempt.analysis.success)) : null),
    h('ol', {class: 'steps'}, attempt.events.map((e) =>
      h('li', {}, time(e.receivedAt), ' ', h('code', {}, e.type)))));
}

function eventsSection(events, open) {
  return h('section', {class: 'card', 'aria-labelledby': 'events-title'},
    h('h2', {id: 'events-title'}, `Raw deliveries (${events.length}${events.length === EVENT_LIMIT ? ', the first 1000' : ''})`),
    h('ol', {class: 'events'}, events.map((e) =>
      h('li', {},
        h('details', {dataset: {event: e.id}, open: open.has(e.id)},
          h('summary', {},
            h('code', {}, e.type),
            e.type === 'action' && typeof e.payload?.event?.data?.action === 'string' ? [' ', h('code', {}, e.payload.event.data.action)] : null,
            ' ', time(e.receivedAt),
            h('span', {class: 'tag format', title: `Webhook format ${e.format}`, dataset: {format: e.format}}, e.format),
            e.recognized ? null : h('span', {class: 'tag warn'}, 'unrecognized'),
            h('span', {class: e.signatureVerified ? 'tag ok' : 'tag'}, e.signatureVerified ? 'signed' : 'unsigned'),
            e.upstreamId ? [' ', h('code', {class: 'upstream-id muted', title: 'The platform\'s event id'}, e.upstreamId)] : null,
            h('span', {class: 'muted'}, ` #${e.id}`)),
          jsonBlock(e.payload))))));
}
