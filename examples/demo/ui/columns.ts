// The answer columns of one run: one fixed-size card per column (base model or adapter), text appended as it
// streams in. Text arriving from the worker is buffered and written once per animation frame, so a fast stream
// costs one DOM update per frame per column, and nothing changes size while it streams (heights are fixed in CSS).

import { formatRate, h } from './dom.js';

export interface ColumnLabel {
  column: number;
  /** "Base model" or the adapter's name. */
  title: string;
  /** e.g. "scale ×0.50", or "" for none. */
  detail: string;
}

interface ColumnView {
  root: HTMLElement;
  out: HTMLElement;
  /** The streamed text: one Text node that grows, so words wrapping to the next line move nothing else. */
  text: Text;
  count: HTMLElement;
  rate: HTMLElement;
  state: HTMLElement;
  pending: string;
  tokens: number;
  elapsedMs: number;
}

const FINISH_TEXT: Record<string, string> = {
  stop: 'end of text',
  length: 'max tokens',
  abort: 'stopped',
};

export class Columns {
  private views = new Map<number, ColumnView>();
  private frame = 0;

  constructor(private readonly container: HTMLElement) {}

  /** Replaces the columns with empty ones for a new run. */
  start(labels: ColumnLabel[]): void {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.views.clear();
    this.container.replaceChildren(
      ...labels.map((l) => {
        const id = `col-${l.column}`;
        const out = h('div', {
          className: 'out',
          id: `${id}-out`,
          tabIndex: 0,
          attrs: { role: 'log', 'aria-live': 'polite', 'aria-busy': 'true', 'aria-labelledby': `${id}-h` },
        });
        const text = document.createTextNode('');
        out.append(text);
        const count = h('span', { className: 'count' }, '0 tok');
        const rate = h('span', { className: 'rate' }, formatRate(0, 0));
        const state = h('span', { className: 'state' }, 'waiting');
        const root = h(
          'article',
          { className: `col c${l.column % 8}`, attrs: { 'aria-labelledby': `${id}-h`, 'data-column': String(l.column) } },
          h('header', {}, h('h3', { id: `${id}-h`, title: l.title }, l.title), l.detail ? h('span', { className: 'detail' }, l.detail) : null),
          out,
          h('p', { className: 'stats' }, h('span', {}, count, ' · ', rate), state),
        );
        this.views.set(l.column, { root, out, text, count, rate, state, pending: '', tokens: 0, elapsedMs: 0 });
        return root;
      }),
    );
  }

  /** New text of a column; `tokens` and `elapsedMs` are the column's totals so far. */
  append(column: number, text: string, tokens: number, elapsedMs: number): void {
    const v = this.views.get(column);
    if (!v) return;
    v.pending += text;
    v.tokens = tokens;
    v.elapsedMs = elapsedMs;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  finish(column: number, reason: string, tokens: number, elapsedMs: number): void {
    const v = this.views.get(column);
    if (!v) return;
    this.flushView(v);
    v.tokens = tokens;
    v.elapsedMs = elapsedMs;
    this.writeStats(v);
    v.state.textContent = FINISH_TEXT[reason] ?? reason;
    v.root.dataset.state = reason === 'abort' ? 'stopped' : 'done';
    v.out.setAttribute('aria-busy', 'false');
  }

  fail(column: number, message: string): void {
    const v = this.views.get(column);
    if (!v) return;
    this.flushView(v);
    v.root.dataset.state = 'error';
    v.state.textContent = 'error';
    v.out.append(h('span', { className: 'col-error', attrs: { role: 'alert' } }, message));
    v.out.setAttribute('aria-busy', 'false');
  }

  private flush(): void {
    this.frame = 0;
    for (const v of this.views.values()) this.flushView(v);
  }

  private flushView(v: ColumnView): void {
    if (v.pending) {
      const stick = v.out.scrollTop + v.out.clientHeight >= v.out.scrollHeight - 4;
      v.text.appendData(v.pending);
      v.pending = '';
      if (stick) v.out.scrollTop = v.out.scrollHeight;
      v.state.textContent = 'streaming';
      v.root.dataset.state = 'streaming';
    }
    this.writeStats(v);
  }

  private writeStats(v: ColumnView): void {
    v.count.textContent = `${v.tokens} tok`;
    v.rate.textContent = formatRate(v.tokens, v.elapsedMs);
  }
}
