// The dashboard's entry: hash routing between the views, the token
// prompt, and the one live subscription that feeds whichever view is open.

import {follow, forgetToken, gql, onTokenNeeded, token} from './api.js';
import {callsView} from './calls.js';
import {callView} from './call.js';
import {inboxView} from './inbox.js';
import {showError} from './dom.js';

const main = document.getElementById('main');
let view = null;
let following = false;

/** A URL-encoded part of the hash; as typed when it is not valid encoding (`%E0`). */
function decodeHashPart(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/** `#/`, `#/?status=…`, `#/calls/<id>`, `#/actions?…`; other hashes (#main) are not routes. */
function route() {
  let hash = location.hash || '#/';
  if (!hash.startsWith('#/')) {
    // Not a route (#main): keep the view, or show the calls on a first load.
    if (view !== null) return;
    hash = '#/';
  }
  const [path, query = ''] = hash.slice(1).split('?');
  const params = new URLSearchParams(query);
  const call = path.match(/^\/calls\/(.+)$/);
  const focusTitle = view !== null;
  showError(null);
  if (call) view = callView(decodeHashPart(call[1]));
  else if (path === '/actions') view = inboxView(params);
  else view = callsView(params);
  main.replaceChildren(view.element);
  for (const link of document.querySelectorAll('[data-nav]')) {
    const current = link.dataset.nav === (path === '/actions' ? 'actions' : call ? '' : 'calls');
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${view.element.querySelector('h1').textContent} · calltrail`;
  // After a navigation (not the first load) keyboard and screen-reader users start at the new title.
  if (focusTitle) view.element.querySelector('h1').focus();
}

const LIVE_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  offline: 'Reconnecting…',
  token: 'Waiting for the token',
};

function liveState(state, wait) {
  document.getElementById('live').dataset.state = state;
  const text = state === 'offline' ? `Offline: retrying in ${Math.ceil(wait / 1000)} s` : LIVE_TEXT[state];
  document.getElementById('live-text').textContent = text;
}

/** Start the feed once GraphQL has answered (so a needed token is known by then). */
async function startFeed() {
  if (following) return;
  following = true;
  try {
    await gql('{ __typename }');
  } catch (error) {
    // The server is not answering yet (a restart, say): try again.
    following = false;
    showError(error);
    setTimeout(startFeed, 3000);
    return;
  }
  follow({
    onEvent: (live) => view?.onEvent(live),
    onState: liveState,
    onResync: () => view?.reload(),
  });
  showForget();
}

function showForget() {
  document.getElementById('forget-token').hidden = token() === null;
}

/** The prompt for `CALLTRAIL_API_TOKEN`; resolves to what was entered. */
function askForToken(reason) {
  const dialog = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  const why = document.getElementById('token-why');
  why.textContent = reason === 'refused'
    ? 'The server refused that token. Enter the value of CALLTRAIL_API_TOKEN.'
    : 'This calltrail server asks for its API token (CALLTRAIL_API_TOKEN) before it answers.';
  input.value = '';
  input.setAttribute('aria-invalid', reason === 'refused' ? 'true' : 'false');
  return new Promise((resolve) => {
    const form = document.getElementById('token-form');
    form.addEventListener('submit', function entered(event) {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return input.focus();
      form.removeEventListener('submit', entered);
      dialog.dataset.waiting = 'false';
      dialog.close();
      resolve(value);
      setTimeout(showForget);
    });
    dialog.dataset.waiting = 'true';
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

const tokenDialog = document.getElementById('token-dialog');
tokenDialog.addEventListener('cancel', (event) => event.preventDefault());
// Chromium lets a second Esc close a modal whatever `cancel` says: while a
// token is still awaited, the prompt comes back.
tokenDialog.addEventListener('close', () => {
  if (tokenDialog.dataset.waiting === 'true') tokenDialog.showModal();
});
document.getElementById('forget-token').addEventListener('click', () => {
  forgetToken();
  location.reload();
});

// The skip link focuses the content without leaving the route (and its filters).
document.querySelector('.skip-link')?.addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

onTokenNeeded(askForToken);
window.addEventListener('hashchange', route);
route();
startFeed();
