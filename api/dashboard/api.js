// GraphQL over HTTP (`/graphql`) and the live feed over WebSocket
// (`/graphql/ws`, graphql-transport-ws through the vendored graphql-ws
// client), with the bearer token when the server asks for one.

const TOKEN_KEY = 'calltrail.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let askForToken = async () => { throw new Error('this server needs an API token'); };
let asking = null;

/** `ask(reason)` shows the prompt and resolves to the entered token. */
export function onTokenNeeded(ask) {
  askForToken = ask;
}

/** One prompt at a time, however many requests were refused together. */
async function newToken(reason) {
  if (!asking) {
    asking = askForToken(reason).then((entered) => {
      sessionStorage.setItem(TOKEN_KEY, entered);
      return entered;
    }).finally(() => { asking = null; });
  }
  return asking;
}

export class GraphQLError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join('; '));
    this.errors = errors;
  }
}

/** POST a query; a 401 asks for the token and tries again with it. */
export async function gql(query, variables = {}) {
  for (;;) {
    const sent = token();
    const headers = {'content-type': 'application/json', accept: 'application/json'};
    if (sent) headers.authorization = `Bearer ${sent}`;
    const response = await fetch('/graphql', {method: 'POST', headers, body: JSON.stringify({query, variables})});
    if (response.status === 401) {
      // A token entered while this request was on its way: try it first.
      if (token() !== null && token() !== sent) continue;
      if (token() === sent) forgetToken();
      await newToken(sent ? 'refused' : 'needed');
      continue;
    }
    const body = await response.json().catch(() => null);
    if (!body) throw new Error(`/graphql answered HTTP ${response.status} without a GraphQL body`);
    if (body.errors?.length) throw new GraphQLError(body.errors);
    return body.data;
  }
}

/** The dashboard's one subscription: every delivery and its call as of it. */
const LIVE = `subscription Live($after: String) {
  callEvents(after: $after) {
    event { id cursor type callId receivedAt }
    call { ...Row }
  }
}`;

/** The fields of a calls-table row (shared by the table's query and the feed). */
export const ROW = `fragment Row on Call {
  id status metadata attemptCount durationSeconds lifecycleEnded stale
  createdAt updatedAt analysis { success } to agentId
}`;

/**
 * Follow `callEvents` until stopped. On any disconnect it resubscribes
 * (backing off to 15 s) with `after` = the last cursor seen, so nothing is
 * missed or repeated; `onResync` runs once connected when there was no
 * cursor to resume from (the first time, too): the views read again.
 */
export function follow({onEvent, onState, onResync}) {
  let after = null;
  let client = null;
  let failures = 0;
  let timer = null;
  let stopped = false;
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`;

  function start() {
    timer = null;
    onState('connecting');
    const resumed = after !== null;
    client = globalThis.graphqlWs.createClient({
      url,
      lazy: true,
      retryAttempts: 0,
      keepAlive: 20_000,
      connectionParams: () => (token() ? {Authorization: `Bearer ${token()}`} : {}),
      on: {connected: () => {
        failures = 0;
        onState('live');
        // Without a cursor the feed starts live: what committed since the
        // view was read would be missed, so the view reads it again now.
        if (!resumed) onResync();
      }},
    });
    client.subscribe({query: LIVE + ROW, variables: {after}}, {
      next(message) {
        // SUBSCRIPTION_TOO_SLOW arrives as errors, then `complete`: resume from its cursor.
        const resumeAfter = message.errors?.find((e) => e.extensions?.resumeAfter)?.extensions.resumeAfter;
        if (resumeAfter) after = resumeAfter;
        const live = message.data?.callEvents;
        if (!live) return;
        after = live.event.cursor;
        onEvent(live);
      },
      error: (error) => restart(error),
      complete: () => restart(null),
    });
  }

  async function restart(error) {
    if (stopped) return;
    const old = client;
    client = null;
    old?.dispose();
    const resumeAfter = Array.isArray(error) && error.find((e) => e.extensions?.resumeAfter)?.extensions.resumeAfter;
    if (resumeAfter) after = resumeAfter;
    if (error?.code === 4403 || error?.code === 4401) {
      onState('token');
      if (token() !== null) forgetToken();
      await newToken('refused');
      return start();
    }
    failures += 1;
    const wait = Math.min(15_000, 500 * 2 ** failures) + Math.random() * 300;
    onState('offline', wait);
    timer = setTimeout(start, wait);
  }

  start();
  return () => {
    stopped = true;
    clearTimeout(timer);
    client?.dispose();
  };
}
