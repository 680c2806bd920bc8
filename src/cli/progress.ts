// A one-line terminal progress bar for downloads: file name, bar, bytes done / total, percent, speed. It draws on
// stderr, and only when stderr is a terminal (or when forced), so piped stdout stays clean. On a terminal the line
// is redrawn in place (at most every `intervalMs`); forced onto a non-terminal (a log file) it writes one line per
// finished file instead.

/** What the bar writes to: process.stderr, or anything with the same `write` (and, on a terminal, `isTTY`). */
export interface ProgressOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  /** Terminal width in characters. */
  readonly columns?: number;
}

export interface ProgressBarOptions {
  /** Default process.stderr. */
  output?: ProgressOutput;
  /** Draw even when `output` is not a terminal. */
  force?: boolean;
  /** Clock in milliseconds (tests pass a fake one). Default performance.now. */
  now?: () => number;
  /** Least time between two redraws of the same line, in ms. Default 100. */
  intervalMs?: number;
}

/** Progress of one file: the shape of HubOptions.onProgress. */
export interface FileProgress {
  file: string;
  /** Bytes received so far. */
  loaded: number;
  /** Bytes in the file. */
  total: number;
}

export interface ProgressBar {
  /** Pass as HubOptions.onProgress. */
  update(p: FileProgress): void;
  /** Ends an unfinished line (e.g. after an error). */
  done(): void;
}

const BAR_WIDTH = 24;

export function progressBar(options: ProgressBarOptions = {}): ProgressBar {
  const output = options.output ?? process.stderr;
  const now = options.now ?? (() => performance.now());
  const intervalMs = options.intervalMs ?? 100;
  const tty = output.isTTY === true;
  const enabled = tty || options.force === true;
  let current: { file: string; start: number; drawn: number } | undefined;
  let lineOpen = false;

  return {
    update(p) {
      if (!enabled) return;
      const t = now();
      if (current?.file !== p.file) current = { file: p.file, start: t, drawn: -Infinity };
      const finished = p.loaded >= p.total;
      const line = renderProgress(p, t - current.start, output.columns ?? 80);
      if (tty && (finished || t - current.drawn >= intervalMs)) {
        output.write(`\r${line}\x1b[K`);
        current.drawn = t;
        lineOpen = true;
      }
      if (finished) {
        output.write(tty ? '\n' : `${line}\n`);
        lineOpen = false;
        current = undefined;
      }
    },
    done() {
      if (lineOpen) output.write('\n');
      lineOpen = false;
      current = undefined;
    },
  };
}

/**
 * `name  [#########---------------]  1.2 MiB / 2.5 MiB   48%  3.4 MiB/s`, the name shortened from the left to fit
 * `columns`. `elapsedMs` is the time since the file started (speed is its average).
 */
export function renderProgress(p: FileProgress, elapsedMs: number, columns: number): string {
  const fraction = p.total > 0 ? Math.min(1, p.loaded / p.total) : 1;
  const filled = Math.round(fraction * BAR_WIDTH);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const speed = elapsedMs > 0 ? `${formatBytes((p.loaded * 1000) / elapsedMs)}/s` : '';
  const tail = `  ${bar}  ${formatBytes(p.loaded)} / ${formatBytes(p.total)}  ${percent}  ${speed}`.trimEnd();
  const room = Math.max(8, columns - 1 - tail.length);
  const name = p.file.length > room ? `…${p.file.slice(p.file.length - room + 1)}` : p.file;
  return name + tail;
}

/** 1023 -> "1023 B", 1536 -> "1.50 KiB", 2.5e9 -> "2.33 GiB": binary units, three significant digits. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  if (i === 0) return `${Math.round(n)} B`;
  return `${n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)} ${units[i]}`;
}
