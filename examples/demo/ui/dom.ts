// Small DOM helpers for the demo page: typed element lookup, element creation, number formatting.

/** The element with this id; throws when the page lacks it (a typo here is a bug, not a state). */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`demo page: no element #${id}`);
  return e as T;
}

type Child = Node | string | null | undefined | false;

/** `h('p', { className: 'x' }, 'text', child)`: an element with properties (and `data-*` / `aria-*` attributes). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> & { attrs?: Record<string, string> } = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const { attrs, ...rest } = props;
  const e = Object.assign(document.createElement(tag), rest);
  for (const [k, v] of Object.entries(attrs ?? {})) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

/** A definition list's rows: [term, value][]. */
export function fillFacts(dl: HTMLElement, rows: [string, string][]): void {
  dl.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  dl.hidden = false;
}

/** 1234567 -> "1.2 MB" (decimal units, as browsers show downloads). */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do {
    v /= 1000;
    i++;
  } while (v >= 1000 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** Tokens per second with one decimal, or an em dash before any time has passed. */
export function formatRate(tokens: number, ms: number): string {
  return ms > 0 && tokens > 0 ? `${((tokens * 1000) / ms).toFixed(1)} tok/s` : '— tok/s';
}
