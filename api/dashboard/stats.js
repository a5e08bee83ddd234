// The stats strip: `callStats` over the calls the table's filter selects,
// and a bar chart of calls per status (inline SVG).

import {gql} from './api.js';
import {h, svg, label, number, percent, duration, STATUSES} from './dom.js';

const STATS = `query Stats($filter: CallFilter) {
  callStats(filter: $filter) {
    total successRate connectRate attemptsPerCall averageDurationSeconds creditsUsed
    byStatus { status count }
  }
}`;

/** The strip's section; `refresh(filter)` reloads it. */
export function statsStrip() {
  const figures = h('dl', {class: 'figures'});
  const chart = h('figure', {class: 'chart'});
  const section = h('section', {class: 'stats', 'aria-labelledby': 'stats-title', hidden: true},
    h('h2', {id: 'stats-title', class: 'sr-only'}, 'Figures'),
    figures, chart);

  async function refresh(filter) {
    const {callStats: s} = await gql(STATS, {filter});
    figures.replaceChildren(...[
      ['Calls', number(s.total)],
      ['Success rate', percent(s.successRate)],
      ['Connect rate', percent(s.connectRate)],
      ['Attempts / call', number(s.attemptsPerCall, 2)],
      ['Avg. duration', duration(s.averageDurationSeconds)],
      ['Credits used', number(s.creditsUsed, 1)],
    ].map(([term, value]) => h('div', {class: 'figure'}, h('dt', {}, term), h('dd', {}, value))));
    chart.replaceChildren(...outcomeChart(s.byStatus, s.total));
    section.dataset.total = s.total;
    section.hidden = false;
  }

  return {section, refresh};
}

const ROW_HEIGHT = 18;
const LABEL_WIDTH = 118;
const WIDTH = 420;

/** Horizontal bars, one per status that has calls, in the enum's order (caption and chart). */
function outcomeChart(byStatus, total) {
  const rows = STATUSES.map((status) => byStatus.find((b) => b.status === status)).filter(Boolean);
  const caption = h('figcaption', {}, 'Calls by status');
  if (rows.length === 0) return [caption, h('p', {class: 'none'}, 'No calls yet.')];
  const max = Math.max(...rows.map((r) => r.count));
  const barSpace = WIDTH - LABEL_WIDTH - 44;
  const description = rows.map((r) => `${label(r.status)}: ${r.count}`).join(', ');
  const chart = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${rows.length * ROW_HEIGHT}`,
    width: WIDTH, height: rows.length * ROW_HEIGHT,
    role: 'img', 'aria-label': `Calls by status: ${description} (of ${total})`,
  }, rows.map((r, i) => {
    const y = i * ROW_HEIGHT;
    const w = Math.max(2, (r.count / max) * barSpace);
    return svg('g', {class: `bar s-${r.status.toLowerCase()}`},
      svg('text', {x: LABEL_WIDTH - 6, y: y + 13, 'text-anchor': 'end'}, label(r.status)),
      svg('rect', {x: LABEL_WIDTH, y: y + 3, width: w, height: ROW_HEIGHT - 6, rx: 2}),
      svg('text', {x: LABEL_WIDTH + w + 5, y: y + 13, class: 'count'}, String(r.count)));
  }));
  return [caption, chart];
}
