// The adapter list: one card per adapter with its rank, targets, layers, size and dtype, a checkbox that makes it
// a column, a scale slider (LoRARequest scale) and a remove button; adapters that failed to load show their error.

import type { AdapterSummary } from '../protocol.js';
import { formatBytes, h } from './dom.js';

/** self_attn.q_proj -> q, mlp.gate_proj -> gate; lm_head and embed_tokens stay as they are. */
const shortTarget = (t: string) => t.split('.').pop()!.replace(/_proj$/, '');

export interface SelectedAdapter {
  name: string;
  scale: number;
}

interface Card {
  li: HTMLLIElement;
  use: HTMLInputElement;
  scale: HTMLInputElement;
  remove: HTMLButtonElement;
}

export class AdapterList {
  private readonly cards = new Map<string, Card>();

  constructor(
    private readonly list: HTMLElement,
    private readonly onRemove: (name: string) => void,
  ) {}

  add(a: AdapterSummary): void {
    const id = `adapter-${this.cards.size}-${a.name.replace(/[^\w-]/g, '_')}`;
    const use = h('input', { type: 'checkbox', checked: true, id: `${id}-use` });
    const scale = h('input', { type: 'range', min: '0', max: '2', step: '0.05', value: '1', id: `${id}-scale` });
    const scaleOut = h('output', { attrs: { for: `${id}-scale` } }, '×1.00');
    scale.addEventListener('input', () => {
      scaleOut.textContent = `×${Number(scale.value).toFixed(2)}`;
      scale.setAttribute('aria-valuetext', `${Number(scale.value).toFixed(2)} times`);
    });
    const remove = h('button', { type: 'button', className: 'remove', attrs: { 'aria-label': `Remove adapter ${a.name}` } }, 'Remove');
    remove.addEventListener('click', () => this.onRemove(a.name));
    const facts = [
      `rank ${a.rank}`,
      a.targets.map(shortTarget).join(' '),
      `${a.layers} layer${a.layers === 1 ? '' : 's'}`,
      formatBytes(a.byteSize),
      a.dtypes.join('/'),
    ];
    const li = h(
      'li',
      { className: 'adapter', attrs: { 'data-adapter': a.name } },
      h('div', { className: 'adapter-head' }, h('label', { className: 'check', htmlFor: use.id }, use, h('span', { className: 'name' }, a.name)), remove),
      h('p', { className: 'adapter-facts', title: `${a.source}\ntargets: ${a.targets.join(', ')}\nown scale (alpha/r): ${a.baseScale}` }, facts.join(' · ')),
      h('div', { className: 'scale' }, h('label', { htmlFor: scale.id }, 'Scale'), scale, scaleOut),
      ...a.warnings.map((w) => h('p', { className: 'warning' }, w)),
    );
    this.cards.set(a.name, { li, use, scale, remove });
    this.list.append(li);
  }

  /** An adapter (or source) that could not be read: the error stays listed until dismissed. */
  addError(label: string, message: string): void {
    const dismiss = h('button', { type: 'button', className: 'remove', attrs: { 'aria-label': `Dismiss the error for ${label}` } }, 'Dismiss');
    const li = h(
      'li',
      { className: 'adapter failed', attrs: { 'data-adapter-error': label } },
      h('div', { className: 'adapter-head' }, h('span', { className: 'name' }, label), dismiss),
      h('p', { className: 'error', attrs: { role: 'alert' } }, message),
    );
    dismiss.addEventListener('click', () => li.remove());
    this.list.append(li);
  }

  removed(name: string): void {
    this.cards.get(name)?.li.remove();
    this.cards.delete(name);
  }

  /** Checked adapters in list order, with their slider scales. */
  selected(): SelectedAdapter[] {
    return [...this.cards.entries()].filter(([, c]) => c.use.checked).map(([name, c]) => ({ name, scale: Number(c.scale.value) }));
  }

  /** Removing is refused while a run uses the adapters. */
  setRemovable(on: boolean): void {
    for (const c of this.cards.values()) c.remove.disabled = !on;
  }

  get size(): number {
    return this.cards.size;
  }
}
