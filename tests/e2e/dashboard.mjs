// The dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), run by tests/tests/api/dashboard.rs against the real
// server:
//
//   node tests/e2e/dashboard.mjs BASE_URL SCREENSHOT_DIR            live, paging, reconnect, filter, call pages (v1, v2), inbox, narrow
//   node tests/e2e/dashboard.mjs BASE_URL SCREENSHOT_DIR --token T  the token prompt, then live with it
//
// It talks to the Rust test over stdio: it prints `READY` once the page is
// open and live, waits for a `SIMULATED` line (the test ran `calltrail
// simulate` meanwhile: without a token, v1 and v2 calls, one of them a
// VOICEMAIL); without a token it then prints `RESTART` and waits
// for `RESTARTED` (the test killed the server, started it again on the same
// address and sent more calls), prints `ACKED <action id>` after
// acknowledging one, and `PASS` at the end. Any failed check exits 1 with
// the reason on stderr.

import {mkdirSync} from 'node:fs';
import {join} from 'node:path';
import {createInterface} from 'node:readline';
import {chromium} from 'playwright-core';

const [base, shots, flag, tokenArg] = process.argv.slice(2);
if (!base || !shots) throw new Error('usage: dashboard.mjs BASE_URL SCREENSHOT_DIR [--token TOKEN]');
const token = flag === '--token' ? tokenArg : null;
mkdirSync(shots, {recursive: true});

const WAIT = 20_000;
const stdin = createInterface({input: process.stdin});
const lines = stdin[Symbol.asyncIterator]();

function say(line) {
  process.stdout.write(`${line}\n`);
}

async function hear(expected) {
  const {value, done} = await lines.next();
  if (done || value.trim() !== expected) throw new Error(`expected ${expected} from the test, got ${done ? 'EOF' : value}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** GraphQL from outside the page, to compare the page with the server. */
async function graphql(query, variables = {}) {
  const headers = {'content-type': 'application/json'};
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}/graphql`, {method: 'POST', headers, body: JSON.stringify({query, variables})});
  const body = await response.json();
  if (body.errors) throw new Error(`GraphQL: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** Poll until `probe` returns a truthy value (or throw what it last said). */
async function until(what, probe, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last && !last.wrong) return last;
    } catch (error) {
      last = {wrong: error.message};
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Each view's screenshot, once the page shows no error and no leaked null. */
async function shot(page, name, fullPage = false) {
  await noAlert(page);
  const text = await page.evaluate(() => {
    const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
    const parts = [];
    while (walker.nextNode()) if (!walker.currentNode.parentElement.closest('pre')) parts.push(walker.currentNode.data);
    return parts.join(' ');
  });
  const junk = /\bnull\b|\bundefined\b|\bNaN\b|\[object /.exec(text);
  check(!junk, `${name}: the page shows "${junk?.[0]}" (JSON blocks aside)`);
  await page.screenshot({path: join(shots, `${name}.png`), fullPage});
}

async function noAlert(page) {
  const alert = page.locator('#alert');
  check(await alert.isHidden(), `the page shows an error: ${await alert.textContent()}`);
}

/** The calls table as [id, status] pairs, top to bottom. */
function tableRows(page) {
  return page.$$eval('table.calls tbody tr[data-call-id]', (rows) => rows.map((r) => [r.dataset.callId, r.dataset.status]));
}

const ROWS = `query($filter: CallFilter, $after: String) {
  calls(first: 25, filter: $filter, after: $after) { totalCount pageInfo { endCursor } nodes { id status } }
}`;

/** Wait until the page's table is exactly the server's page (the first unless `after`). */
async function tableMatchesServer(page, filter = null, after = null) {
  return until('the table to match the server', async () => {
    const {calls} = await graphql(ROWS, {filter, after});
    const shown = await tableRows(page);
    const expected = calls.nodes.map((c) => [c.id, c.status]);
    const total = Number(await page.getAttribute('.calls-view', 'data-total'));
    if (JSON.stringify(shown) !== JSON.stringify(expected) || total !== calls.totalCount) {
      return {wrong: {shown: shown.slice(0, 3), expected: expected.slice(0, 3), total, server: calls.totalCount}};
    }
    return calls;
  });
}

const browser = await chromium.launch({executablePath: '/usr/bin/chromium', headless: true});
const problems = [];
/** While the server is down on purpose, refused connections are expected. */
let outage = false;
/** The variables of every `subscribe` the page sent. */
const subscriptions = [];
try {
  // en-US: the money the page formats with Intl is checked as text.
  const context = await browser.newContext({viewport: {width: 1280, height: 800}, locale: 'en-US'});
  const page = await context.newPage();
  page.on('console', (message) => {
    if (outage && message.text().includes('ERR_CONNECTION_REFUSED')) return;
    if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
  });
  page.on('websocket', (socket) => socket.on('framesent', ({payload}) => {
    const message = JSON.parse(String(payload));
    if (message.type === 'subscribe') subscriptions.push(message.payload.variables);
  }));
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  if (token) await withToken(page);
  else {
    await walkThrough(page);
    await oddUrls(page);
  }
  // With a token, the page's first requests are refused (401) before it asks: Chromium logs those.
  const unexpected = problems.filter((p) => !(token && p.includes('status of 401')));
  check(unexpected.length === 0, `the console reported:\n${unexpected.join('\n')}`);
  say('PASS');
} finally {
  await browser.close();
  stdin.close();
}

/** Hand-edited URLs render a view, never an exception (the console check below sees those). */
async function oddUrls(page) {
  await page.goto(`${base}/#/calls/%E0`);
  await page.waitForSelector('text=calltrail has no call with this id', {timeout: WAIT});
  check((await page.textContent('#view-title')).includes('%E0'), 'an undecodable call id shows as typed');
  await page.goto(`${base}/#/?from=junk&to=2026-13-45`);
  await page.waitForSelector('.calls-view[data-total]', {timeout: WAIT});
  const total = Number(await page.getAttribute('.calls-view', 'data-total'));
  check(total > 0, `unreadable dates filter nothing out (${total} calls)`);
}

/** Live rows, paging, a reconnect, filters, a call page, the inbox and the narrow layout. */
async function walkThrough(page) {
  await page.goto(`${base}/`);
  await page.waitForSelector('#live[data-state="live"]', {timeout: WAIT});
  await page.waitForSelector('.calls-view[data-total]', {timeout: WAIT});
  // Record every row the table shows and each status it shows it with.
  await page.evaluate(() => {
    window.seen = {};
    const note = (tr) => {
      const trail = (window.seen[tr.dataset.callId] ??= []);
      if (trail.at(-1) !== tr.dataset.status) trail.push(tr.dataset.status);
    };
    new MutationObserver((changes) => {
      for (const change of changes) {
        for (const node of change.addedNodes) if (node.matches?.('tr[data-call-id]')) note(node);
      }
    }).observe(document.querySelector('table.calls tbody'), {childList: true});
  });
  say('READY');
  await hear('SIMULATED');

  const all = await tableMatchesServer(page);
  check(all.totalCount > 0, 'simulate stored calls');
  const seen = await page.evaluate(() => window.seen);
  const appeared = Object.keys(seen).length;
  check(appeared === all.totalCount, `every simulated call appeared live (${appeared} of ${all.totalCount})`);
  const changed = Object.entries(seen).filter(([, trail]) => trail.length >= 2);
  check(changed.length > 0, `some row changed status live: ${JSON.stringify(seen)}`);
  check(await page.locator('table.calls tbody tr').count() === all.nodes.length, 'no stale rows stay');
  await until('the stats strip to count every call', async () =>
    Number(await page.getAttribute('.stats', 'data-total')) === all.totalCount);
  check(await page.locator('.chart svg[role="img"] rect').count() > 0, 'the outcome chart has bars');
  await page.mouse.move(0, 0);
  await shot(page, 'calls');

  // Cursor paging, both ways.
  check(all.totalCount > 25, 'more calls than a page');
  await page.click('nav.pager button:has-text("Next")');
  await tableMatchesServer(page, null, all.pageInfo.endCursor);
  check((await page.textContent('nav.pager .range')).startsWith('Calls 26–'), 'the range says page two');
  await page.click('nav.pager button:has-text("Previous")');
  await tableMatchesServer(page);
  check(await page.isDisabled('nav.pager button:has-text("Previous")'), 'the first page has no previous page');

  // The server goes away and comes back with more calls: the page resumes after the last cursor it saw.
  check(subscriptions.length === 1 && subscriptions[0].after === null, `one subscription so far: ${JSON.stringify(subscriptions)}`);
  outage = true;
  say('RESTART');
  await page.waitForSelector('#live[data-state="offline"]', {timeout: WAIT});
  await hear('RESTARTED');
  await page.waitForSelector('#live[data-state="live"]', {timeout: 30_000});
  const resumed = await tableMatchesServer(page);
  outage = false;
  check(resumed.totalCount === all.totalCount + 3, 'the calls sent while the page was away arrived');
  check(subscriptions.length === 2 && typeof subscriptions[1].after === 'string', `it resubscribed after a cursor: ${JSON.stringify(subscriptions)}`);

  // Filter: completed calls of one campaign whose analysis says success.
  await page.click('.dropdown summary');
  await page.check('input[name="status"][value="COMPLETED"]');
  await page.keyboard.press('Escape');
  check(!(await page.locator('.dropdown[open]').count()), 'Escape closes the status list');
  await page.selectOption('#f-success', 'true');
  await page.fill('#f-key', 'campaign');
  await page.fill('#f-equals', 'cod-verification');
  await page.click('form.filters button[type="submit"]');
  await page.waitForFunction(() => location.hash.includes('status=COMPLETED') && location.hash.includes('success=true'));
  const filter = {status: ['COMPLETED'], success: true, metadata: [{key: 'campaign', equals: 'cod-verification'}]};
  const filtered = await tableMatchesServer(page, filter);
  check(filtered.totalCount > 0 && filtered.totalCount < resumed.totalCount, `the filter selects some calls (${filtered.totalCount})`);
  await until('the stats to follow the filter', async () =>
    Number(await page.getAttribute('.stats', 'data-total')) === filtered.totalCount);
  check((await tableRows(page)).every(([, status]) => status === 'COMPLETED'), 'the filter shows completed calls only');
  check(await page.inputValue('#f-success') === 'true', 'the filter form keeps its values');

  // Open the first call with the keyboard: focus its link, Enter.
  const [callId] = (await tableRows(page))[0];
  await page.focus('table.calls tbody tr th a');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('Enter');
  await page.waitForFunction((id) => location.hash === `#/calls/${encodeURIComponent(id)}`, callId);
  const {call} = await graphql(`query($id: ID!) { call(id: $id) {
    status attempts { number } events { id } actions { id } analysis { summary insights } } }`, {id: callId});
  await until('the call page', async () => (await page.locator('.call-view .events > li').count()) === call.events.length);
  check(await page.locator('.timeline > li').count() === call.attempts.length, 'every attempt is on the timeline');
  check(await page.locator('ul.actions > li').count() === call.actions.length, 'every action of the call is listed');
  check((await page.textContent('.summary')).includes(call.analysis.summary), 'the analysis summary is shown');
  check(await page.getAttribute('.call-view', 'data-status') === call.status, 'the call page shows its status');
  check(await page.evaluate(() => document.activeElement?.id === 'view-title'), 'focus moves to the new view');
  check(await page.locator('.call-view [data-fact]').count() === 0, 'a v1 call shows no number, agent, ended reason or cost');
  check((await page.$$eval('.events .tag.format', (tags) => tags.map((t) => t.textContent))).every((f) => f === 'V1'), 'its deliveries say V1');
  await page.click('.events > li:first-child summary');
  await shot(page, 'call', true);

  await v2Calls(page, seen);

  // The inbox: acknowledge the first pending action.
  await page.click('nav a[data-nav="actions"]');
  await page.waitForSelector('.inbox-view[data-total]', {timeout: WAIT});
  const {actions} = await graphql('{ actions(filter: {status: [PENDING]}) { totalCount nodes { id kind } } }');
  check(actions.totalCount > 0, 'simulate asked for actions');
  check(Number(await page.getAttribute('.inbox-view', 'data-total')) === actions.totalCount, 'the inbox counts the pending actions');
  const first = page.locator('li.action[data-status="PENDING"]').first();
  const actionId = await first.getAttribute('data-action-id');
  check(actionId === actions.nodes[0].id, 'the inbox lists the oldest action first');
  await first.locator('input[type="text"]').fill('ordered in the e2e test');
  await first.locator('button[data-ack="HANDLED"]').click();
  await until('the action to show as handled', async () => {
    await noAlert(page);
    return page.locator(`li.action[data-action-id="${actionId}"][data-status="HANDLED"]`).count();
  });
  const {acknowledged} = await graphql('{ acknowledged: actions(filter: {status: [HANDLED]}) { nodes { id note handledAt } } }');
  const handled = acknowledged.nodes.find((a) => a.id === actionId);
  check(handled && handled.note === 'ordered in the e2e test' && handled.handledAt, `GraphQL shows the action handled: ${JSON.stringify(acknowledged)}`);
  say(`ACKED ${actionId}`);
  await shot(page, 'inbox');

  // Its call's page lists it as handled.
  await page.locator(`li.action[data-action-id="${actionId}"] .action-call a`).click();
  await page.waitForSelector(`.call-view li.action[data-action-id="${actionId}"][data-status="HANDLED"]`, {timeout: WAIT});
  await shot(page, 'call-actions', true);

  // A colleague marks it failed behind this page's back: "Reopen" here then
  // changes nothing, says so, and shows what the colleague did.
  await graphql('mutation($id: ID!) { acknowledgeAction(id: $id, status: FAILED, note: "by a colleague") { id } }', {id: actionId});
  await page.locator(`.call-view li.action[data-action-id="${actionId}"] button[data-ack="PENDING"]`).click();
  await page.waitForSelector(`.call-view li.action[data-action-id="${actionId}"][data-status="FAILED"]`, {timeout: WAIT});
  const conflict = await page.locator('#alert').textContent();
  check(await page.locator('#alert').isVisible() && conflict.includes('Not changed'), `the page says the action was changed elsewhere: ${conflict}`);
  const {after} = await graphql('{ after: actions(filter: {status: [FAILED]}) { nodes { id note } } }');
  check(after.nodes.some((a) => a.id === actionId && a.note === 'by a colleague'), `the colleague's acknowledgement stays: ${JSON.stringify(after)}`);

  // A phone-sized screen: the table turns into cards and nothing scrolls sideways.
  await page.setViewportSize({width: 390, height: 844});
  await page.goto(`${base}/#/`);
  await page.waitForSelector('table.calls tbody tr[data-call-id]', {timeout: WAIT});
  await tableMatchesServer(page);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the narrow page scrolls sideways by ${overflow}px`);
  await shot(page, 'narrow');
  await page.locator('table.calls tbody tr').first().scrollIntoViewIfNeeded();
  await shot(page, 'narrow-table');
}

/** v2 calls: live in the table with their number, a VOICEMAIL filter, and a v2 call page. */
async function v2Calls(page, seen) {
  const {v2} = await graphql('{ v2: calls(first: 100) { nodes { id to agentId } } }');
  const v2Ids = v2.nodes.filter((c) => c.to !== null).map((c) => c.id);
  check(v2Ids.length > 0, 'simulate --format v2 stored calls');
  check(v2Ids.every((id) => id in seen), 'every v2 call appeared live');

  // Filter by VOICEMAIL with the status list; the rows show the number dialled and the agent.
  await page.click('nav a[data-nav="calls"]');
  await page.waitForSelector('.calls-view[data-total]', {timeout: WAIT});
  await page.click('.dropdown summary');
  await page.check('input[name="status"][value="VOICEMAIL"]');
  await page.keyboard.press('Escape');
  await page.click('form.filters button[type="submit"]');
  await page.waitForFunction(() => location.hash === '#/?status=VOICEMAIL');
  const voicemail = await tableMatchesServer(page, {status: ['VOICEMAIL']});
  check(voicemail.totalCount > 0, 'there is a VOICEMAIL call');
  check((await tableRows(page)).every(([, status]) => status === 'VOICEMAIL'), 'the filter shows voicemail calls only');
  await until('the stats to count the voicemail calls', async () =>
    Number(await page.getAttribute('.stats', 'data-total')) === voicemail.totalCount);
  check(await page.locator('.chart .bar.s-voicemail').count() === 1, 'the chart has a Voicemail bar');
  const firstRow = page.locator('table.calls tbody tr[data-call-id]').first();
  const callId = await firstRow.getAttribute('data-call-id');
  check(await firstRow.locator('.status').textContent() === 'Voicemail', 'the badge says Voicemail');
  const listed = v2.nodes.find((c) => c.id === callId);
  check(await firstRow.locator('.dialled .to').textContent() === listed.to, 'the row shows the number dialled');
  check(await firstRow.locator('.dialled .agent').textContent() === listed.agentId, 'the row shows the agent');
  await page.mouse.move(0, 0);
  await shot(page, 'calls-voicemail');

  // The call page of that v2 call: what GraphQL says, and nothing v2 never sends.
  await firstRow.locator('th a').click();
  const {call} = await graphql(`query($id: ID!) { call(id: $id) {
    status to agentId endedReason cost { amount currency perMinute } attempts { number }
    events { id format upstreamId } analysis { summary } actions { id } } }`, {id: callId});
  await until('the v2 call page', async () => (await page.locator('.call-view .events > li').count()) === call.events.length);
  check(await page.getAttribute('.call-view', 'data-status') === 'VOICEMAIL', 'the call page shows VOICEMAIL');
  const fact = (name) => page.locator(`.call-view [data-fact="${name}"]`).textContent();
  check(await fact('to') === call.to, `the page shows to ${call.to}`);
  check(await fact('agent') === call.agentId, `the page shows agent ${call.agentId}`);
  const reason = page.locator('.call-view [data-fact="ended-reason"]');
  check(await reason.getAttribute('data-value') === call.endedReason, `the page shows ended reason ${call.endedReason}`);
  const spoken = call.endedReason.replaceAll('_', ' ');
  check(await reason.textContent() === spoken.charAt(0).toUpperCase() + spoken.slice(1), 'the ended reason reads as words');
  check(call.cost.currency === 'INR' && call.cost.amount !== null && call.cost.perMinute !== null, `a v2 cost: ${JSON.stringify(call.cost)}`);
  check(await fact('cost') === `₹${call.cost.amount.toFixed(2)}`, `the page shows the cost ${call.cost.amount} ${call.cost.currency}`);
  check(await fact('per-minute') === `₹${call.cost.perMinute.toFixed(2)}`, `the page shows the rate ${call.cost.perMinute} a minute`);
  check(call.analysis === null && call.actions.length === 0, 'v2 sends no analysis or action');
  check(await page.locator('#analysis-title, #actions-title').count() === 0, 'no empty analysis or actions card for a v2 call');
  check(await page.locator('.timeline > li').count() === call.attempts.length, 'its one attempt is on the timeline');
  const shown = await page.$$eval('.events > li', (items) => items.map((li) => [
    li.querySelector('.tag.format').textContent, li.querySelector('.upstream-id')?.textContent ?? null]));
  const expected = call.events.map((e) => [e.format, e.upstreamId]);
  check(JSON.stringify(shown) === JSON.stringify(expected), `each delivery shows V2 and its event id: ${JSON.stringify(shown)}`);
  await page.click('.events > li:last-child summary');
  await page.mouse.move(0, 0);
  await shot(page, 'call-v2', true);
}

/** The token prompt: a wrong token is refused, the right one works and stays for the session. */
async function withToken(page) {
  await page.goto(`${base}/`);
  const dialog = page.locator('#token-dialog[open]');
  await dialog.waitFor({timeout: WAIT});
  check(await page.evaluate(() => document.activeElement?.id === 'token-input'), 'the prompt has focus');
  await shot(page, 'token');
  await page.fill('#token-input', 'not-the-token');
  await page.keyboard.press('Enter');
  await until('the refusal', async () => (await page.getAttribute('#token-input', 'aria-invalid')) === 'true');
  check(await dialog.isVisible(), 'a wrong token asks again');
  await page.fill('#token-input', token);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#live[data-state="live"]', {timeout: WAIT});
  const before = await tableMatchesServer(page);
  check(before.totalCount > 0, 'the calls sent before show once the token is in');
  check(await page.evaluate(() => sessionStorage.getItem('calltrail.token')) !== null, 'the token is kept for the session');
  say('READY');
  await hear('SIMULATED');
  const after = await tableMatchesServer(page);
  check(after.totalCount > before.totalCount, 'calls arrive live over the WebSocket with the token');
  await page.reload();
  await page.waitForSelector('#live[data-state="live"]', {timeout: WAIT});
  check(!(await dialog.isVisible()), 'a reload does not ask again');
  await tableMatchesServer(page);
}
