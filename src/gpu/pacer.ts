// Waiting for the GPU without taking a CPU core from it.
//
// dawn.node keeps the JS thread polling the device while a mapAsync / onSubmittedWorkDone promise is pending. On
// a CPU driver (lavapipe, whose workers use every core) that thread competes with the "GPU": measured on a 2-core
// VM, a 600 ms SmolLM2-shape step burned 400-500 ms of main-thread CPU and took ~1.5x as long as one waited for by
// sleeping. So where the platform polls (Platform.waitPolls), the pacer sleeps through most of a step's predicted
// GPU time before the wait starts, and polls only for the last tenth.
//
// Prediction: per step shape (a numeric key), from accurate durations. A wait that had to poll measures the
// duration exactly (a shorter one replaces the estimate; a longer one moves it up a quarter of the way, and by at
// most a quarter of itself); one that found the work already done only bounds it from above, so the estimate
// shrinks a little each time that happens and converges to just below the true time. A shape's first duration is
// only provisional: a driver that compiles shaders on first use (lavapipe with a cold cache) makes it many times
// too long, and trusting it made a 200-token TinyStories run sleep 22 s instead of 8 s. Until a second duration
// confirms it (the smaller of the two counts), and for a shape not seen yet (a new prompt length), the wait is
// predicted from the caller's work figure (tokens) at three quarters of the best confirmed time per unit.
// Steps on the same queue run in order: a step's GPU time starts when it was submitted or when the previous one
// finished, whichever is later.
//
// Waking late: where the caller reads each step's end from a GPU timestamp, a wait that finds its step done still
// learns the exact duration (the GPU clock is mapped to ours by the smallest gap seen between a timestamp and a
// polled wait's end, which errs towards early ends). Then, with another step queued behind the one waited for (the
// engine records step n + 1 before it reads step n back), waking late costs the GPU nothing, and the sleep aims past
// the end: at the LATE_QUANTILE quantile of the shape's duration (tracked stochastically: up a little when a step
// outlasts it, down a little when not), but never more than (1 + SLEEP_FRACTION) x the shortest duration, so the
// wake comes before the queued step can have finished. Most such waits find their step done and poll not at all.
// Measured on a 2-core VM (lavapipe), 16-sequence decode, 6 alternating rounds: the JS thread's CPU per step
// 14-39 -> 4-17 ms, median step 138 -> 112 ms (base model) and 158 -> 125 ms (16 LoRA adapters). Without
// timestamps an oversleep only bounds the duration, and aiming past the end would compound: each sleep would be
// aimed from the previous late wake.

/** Fraction of the predicted time slept before polling. */
const SLEEP_FRACTION = 0.9;
/**
 * Below this (ms) a sleep costs more in timer slack than the polling it saves: TinyStories-656K steps (2-4 ms)
 * decoded at 139-226 tok/s with 2 ms here against 317-537 without pacing.
 */
const MIN_SLEEP_MS = 8;
/** Timers fire late by about this much (ms); sleeps end this much early. */
const TIMER_SLACK_MS = 2;
/** How much an estimate shrinks when a wait found the work already done. */
const SHRINK = 0.95;
/** Fraction of the gap an estimate rises by when a step took longer than predicted... */
const RISE = 0.25;
/** ...and the most it can rise in one step, as a factor (a lone compile or GC pause must not inflate it). */
const MAX_RISE = 1.25;
/** Estimates kept (distinct step shapes); the map is cleared when it grows past this. */
const MAX_KEYS = 512;
/** An unseen shape sleeps this fraction of work × best time per unit of work (steps are rarely that cheap). */
const UNSEEN_FRACTION = 0.75;
/** With a step queued behind (and GPU end times), the sleep ends at this quantile of the step's duration... */
const LATE_QUANTILE = 0.8;
/** ...tracked in steps of this fraction of the estimate (up LATE_QUANTILE of it, down the rest). */
const LATE_STEP = 0.05;

/** Time source and timer (real ones by default; tests drive a virtual clock). */
export interface PacerClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: PacerClock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise<void>((resolve) => setTimeout(resolve, ms)),
};

/** Per-submission bookkeeping, kept by the caller in its own reusable in-flight record (no allocation per step). */
export interface Paced {
  key: number;
  /** Size of the work (tokens): predicts a shape not seen yet. */
  work: number;
  submittedAt: number;
  /** End of the sleep before the wait, or 0 when the wait did not sleep. */
  sleptUntil: number;
}

export class WaitPacer {
  /** ms per step shape; negative: a provisional first duration (its magnitude), not yet used to sleep. */
  private readonly estimate = new Map<number, number>();
  /** ms per step shape, from exact durations (GPU end times): the LATE_QUANTILE quantile, and the shortest. */
  private readonly late = new Map<number, number>();
  private readonly shortest = new Map<number, number>();
  /** Our clock minus the GPU timestamps' (ms): the smallest gap seen at the end of a wait that polled. */
  private gpuClockOffset = Infinity;
  private lastGpuEnd = -Infinity;
  private lastDone = 0;
  /** Lowest measured ms per unit of work (from waits that polled). */
  private perUnit = Infinity;

  constructor(
    readonly enabled: boolean,
    private readonly clock: PacerClock = realClock,
  ) {}

  /** Call right after queue.submit. */
  submitted(p: Paced, key: number, work: number): void {
    p.key = key;
    p.work = work;
    p.submittedAt = this.clock.now();
    p.sleptUntil = 0;
  }

  /**
   * Sleeps through most of p's predicted remaining time (no-op where waiting does not poll); with `queuedBehind` (a
   * later step is already submitted) and GPU end times, until p is probably done. Waits come in submission order.
   */
  async beforeWait(p: Paced, queuedBehind = false): Promise<void> {
    if (!this.enabled) return;
    const est = this.estimate.get(p.key);
    let ahead = est !== undefined && est > 0 ? SLEEP_FRACTION * est : UNSEEN_FRACTION * p.work * this.perUnit;
    const late = queuedBehind ? this.late.get(p.key) : undefined;
    if (late !== undefined) ahead = Math.min(Math.max(ahead, late), (1 + SLEEP_FRACTION) * this.shortest.get(p.key)!);
    if (!Number.isFinite(ahead)) return; // nothing measured yet
    const ms = Math.max(p.submittedAt, this.lastDone) + ahead - this.clock.now() - TIMER_SLACK_MS;
    if (ms < MIN_SLEEP_MS) return;
    await this.clock.sleep(ms);
    p.sleptUntil = this.clock.now();
  }

  /**
   * Call when p's wait resolved; `gpuEnd`: when p's work ended by the GPU's timestamp clock (ms; any origin), NaN
   * where unknown.
   */
  done(p: Paced, gpuEnd = NaN): void {
    const now = this.clock.now();
    const start = Math.max(p.submittedAt, this.lastDone);
    this.lastDone = now;
    if (!this.enabled) return;
    const est = this.estimate.get(p.key);
    // Resolved within a millisecond of waking: the work was (probably) done while asleep, so `measured` is only an
    // upper bound, unless the GPU says when it ended.
    let overslept = p.sleptUntil > 0 && now - p.sleptUntil < 1;
    // Steps end in order: a timestamp that does not advance (a device whose timestamps read 0) is no end time.
    const prevGpuEnd = this.lastGpuEnd;
    if (!(gpuEnd > prevGpuEnd)) gpuEnd = NaN;
    else this.lastGpuEnd = gpuEnd;
    if (!overslept && !Number.isNaN(gpuEnd)) this.gpuClockOffset = Math.min(this.gpuClockOffset, now - gpuEnd);
    const timed = Number.isFinite(gpuEnd + this.gpuClockOffset);
    let measured = now - start;
    if (timed) {
      this.lastDone = Math.max(start, Math.min(now, gpuEnd + this.gpuClockOffset));
      // By the GPU's clock the step ran from the previous step's end or from its submission, whichever was later:
      // queued behind another, the difference of two timestamps, exact even while the clock mapping is still loose
      // (a first wait that resolved late, the JS thread being busy, would otherwise shorten the next duration).
      measured = gpuEnd - Math.max(prevGpuEnd, p.submittedAt - this.gpuClockOffset);
      overslept = false;
    }
    if (this.estimate.size >= MAX_KEYS && est === undefined) {
      this.estimate.clear();
      this.late.clear();
      this.shortest.clear();
    }
    let next: number;
    if (est === undefined) {
      next = -Math.max(measured, 1e-3); // provisional (kept negative, so never zero)
    } else if (est < 0) {
      next = Math.min(-est, measured) * (overslept ? SHRINK : 1);
    } else if (overslept) {
      next = Math.min(est, measured) * SHRINK;
    } else {
      // A slower step than predicted moves the estimate up only part way: a lone slow step (a GC pause, another
      // process, a shader compiled on first use) must not make the next few sleep past their end.
      next = measured < est ? measured : Math.min(est + RISE * (measured - est), est * MAX_RISE);
    }
    if (next > 0 && !overslept && p.work > 0) this.perUnit = Math.min(this.perUnit, next / p.work);
    this.estimate.set(p.key, next);
    if (timed && next > 0) this.trackLate(p.key, measured);
  }

  /** Moves key's quantile estimate towards an exact duration, and its shortest duration. */
  private trackLate(key: number, measured: number): void {
    const late = this.late.get(key);
    this.late.set(key, late === undefined ? measured : late * (measured > late ? 1 + LATE_STEP * LATE_QUANTILE : 1 - LATE_STEP * (1 - LATE_QUANTILE)));
    this.shortest.set(key, Math.min(this.shortest.get(key) ?? Infinity, measured));
  }
}
