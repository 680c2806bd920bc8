// WaitPacer on a virtual clock: the GPU "finishes" a step `gpuMs` after it starts (steps run in submission order),
// a wait that starts before then resolves at that moment, one that starts after resolves at once. The real clock
// and timers are exercised by every Node GPU test (the runner paces its waits there, with GPU end timestamps where
// the device has them).
import { describe, expect, it } from 'vitest';
import { type Paced, type PacerClock, WaitPacer } from '../../src/gpu/pacer.js';

class VirtualGpu implements PacerClock {
  t = 1000;
  private busyUntil = 0;
  slept = 0;
  now(): number {
    return this.t;
  }
  async sleep(ms: number): Promise<void> {
    this.slept += ms;
    this.t += ms;
  }
  /** Submits work of gpuMs; returns when it will be done. */
  submit(gpuMs: number): number {
    this.busyUntil = Math.max(this.t, this.busyUntil) + gpuMs;
    return this.busyUntil;
  }
  /** The wait itself (polling): resolves when the work is done. */
  waitUntil(doneAt: number): void {
    this.t = Math.max(this.t, doneAt);
  }
}

/** The pacer ends sleeps this early (TIMER_SLACK_MS). */
const SLACK = 2;
/** Its SLEEP_FRACTION and LATE_QUANTILE (the quantile of step durations that waits with a step queued behind aim at). */
const SLEEP_FRACTION = 0.9;
const LATE_QUANTILE = 0.8;

const paced = (): Paced => ({ key: 0, work: 0, submittedAt: 0, sleptUntil: 0 });

/** One submit-wait-collect cycle; returns how long the wait took after the sleep (the polling time). */
async function step(pacer: WaitPacer, gpu: VirtualGpu, p: Paced, key: number, work: number, gpuMs: number): Promise<number> {
  const doneAt = gpu.submit(gpuMs);
  pacer.submitted(p, key, work);
  await pacer.beforeWait(p);
  const pollFrom = gpu.t;
  gpu.waitUntil(doneAt);
  pacer.done(p);
  return gpu.t - pollFrom;
}

describe('WaitPacer', () => {
  it('does nothing where waiting does not poll', async () => {
    const gpu = new VirtualGpu();
    const pacer = new WaitPacer(false, gpu);
    const p = paced();
    for (let i = 0; i < 5; i++) await step(pacer, gpu, p, 1, 16, 100);
    expect(gpu.slept).toBe(0);
  });

  it('learns a shape from two polled waits, then sleeps through most of it and polls the rest', async () => {
    const gpu = new VirtualGpu();
    const pacer = new WaitPacer(true, gpu);
    const p = paced();
    expect(await step(pacer, gpu, p, 7, 16, 100)).toBe(100); // unseen, nothing known: polls throughout
    expect(await step(pacer, gpu, p, 7, 16, 100)).toBe(100); // one provisional duration: still polls
    for (let i = 0; i < 10; i++) {
      const before = gpu.slept;
      const poll = await step(pacer, gpu, p, 7, 16, 100);
      // Never sleeps past the end (no added latency) and polls at most the last tenth plus the timer slack.
      expect(gpu.slept - before).toBeLessThanOrEqual(100);
      expect(poll).toBeLessThanOrEqual(100 * 0.1 + SLACK + 1e-9);
    }
  });

  it('recovers from an estimate that became too long (the step got faster): it shrinks until it polls again', async () => {
    const gpu = new VirtualGpu();
    const pacer = new WaitPacer(true, gpu);
    const p = paced();
    await step(pacer, gpu, p, 3, 16, 400);
    await step(pacer, gpu, p, 3, 16, 400);
    let overshoots = 0;
    let lastPoll = 0;
    for (let i = 0; i < 20; i++) {
      const start = gpu.t;
      lastPoll = await step(pacer, gpu, p, 3, 16, 200);
      if (gpu.t - start > 200) overshoots++;
    }
    // 0.9 · 400 = 360 first; each overshoot shrinks the estimate to 0.95 of the time measured (about 0.86x), so it
    // drops below 200 within 5 steps.
    expect(overshoots).toBeGreaterThan(0);
    expect(overshoots).toBeLessThanOrEqual(5);
    expect(lastPoll).toBeGreaterThan(0);
    expect(lastPoll).toBeLessThanOrEqual(200 * 0.1 + SLACK + 1e-9);
  });

  it('does not let one slow step make the next ones oversleep', async () => {
    const gpu = new VirtualGpu();
    const pacer = new WaitPacer(true, gpu);
    const p = paced();
    for (let i = 0; i < 3; i++) await step(pacer, gpu, p, 4, 1, 20);
    await step(pacer, gpu, p, 4, 1, 60); // a hiccup
    const start = gpu.t;
    await step(pacer, gpu, p, 4, 1, 20);
    // A quarter of the gap would be 30; the estimate rises by a quarter of itself at most, to 25, so the sleep
    // ends by 0.9 · 25 − slack = 20.5 ms.
    expect(gpu.t - start).toBeLessThanOrEqual(0.9 * 25 - SLACK + 1e-9);
  });

  it('does not trust a first duration inflated by shaders compiled on first use', async () => {
    const gpu = new VirtualGpu();
    const pacer = new WaitPacer(true, gpu);
    const p = paced();
    await step(pacer, gpu, p, 6, 1, 2000); // the first step of a shape compiles its pipelines
    let late = 0;
    for (let i = 0; i < 20; i++) {
      const start = gpu.t;
      await step(pacer, gpu, p, 6, 1, 40);
      late += Math.max(0, gpu.t - start - 40);
    }
    // The second step polls (one provisional duration) and confirms 40 ms: no step ends after its work did.
    expect(late).toBe(0);
    const before = gpu.slept;
    await step(pacer, gpu, p, 6, 1, 40);
    expect(gpu.slept - before).toBeCloseTo(0.9 * 40 - SLACK, 6); // and it does sleep once confirmed
  });

  it('predicts an unseen shape from the best time per token seen, conservatively', async () => {
    const gpu = new VirtualGpu();
    const pacer = new WaitPacer(true, gpu);
    const p = paced();
    await step(pacer, gpu, p, 1, 16, 160); // 10 ms per token (provisional)
    const provisional = await step(pacer, gpu, p, 2, 64, 640);
    expect(provisional).toBe(640); // no confirmed time per token yet: polls throughout
    await step(pacer, gpu, p, 1, 16, 160); // confirmed
    const before = gpu.slept;
    const poll = await step(pacer, gpu, p, 3, 64, 640); // unseen key, same cost per token
    expect(gpu.slept - before).toBeCloseTo(0.75 * 640 - SLACK, 6);
    expect(poll).toBeCloseTo(0.25 * 640 + SLACK, 6);
  });

  it('counts a step queued behind another from when the GPU reaches it', async () => {
    const gpu = new VirtualGpu();
    const pacer = new WaitPacer(true, gpu);
    const a = paced();
    const b = paced();
    await step(pacer, gpu, a, 5, 1, 50);
    await step(pacer, gpu, a, 5, 1, 50); // learns 50 ms
    // Two in flight: b is submitted while a runs; a's wait ends at a's completion, b then needs its own 50 ms.
    const doneA = gpu.submit(50);
    pacer.submitted(a, 5, 1);
    const doneB = gpu.submit(50);
    pacer.submitted(b, 5, 1);
    await pacer.beforeWait(a);
    gpu.waitUntil(doneA);
    pacer.done(a);
    await pacer.beforeWait(b);
    expect(gpu.t).toBeLessThanOrEqual(doneB); // b's sleep is measured from a's end, not from b's submission
    expect(doneB - gpu.t).toBeLessThanOrEqual(50 * 0.1 + SLACK + 1e-9);
    gpu.waitUntil(doneB);
    pacer.done(b);
  });

  it('sleeps not at all for steps too short to be worth a timer', async () => {
    const gpu = new VirtualGpu();
    const pacer = new WaitPacer(true, gpu);
    const p = paced();
    for (let i = 0; i < 5; i++) await step(pacer, gpu, p, 9, 1, 9); // 0.9 · 9 − slack < 8 ms
    expect(gpu.slept).toBe(0);
  });

  describe('with a step queued behind the one waited for (the engine records step n + 1 before reading step n)', () => {
    /** Durations uniform in [lo, hi) ms from a fixed LCG: a noisy device, the same for every run. */
    function durations(n: number, lo: number, hi: number): number[] {
      let x = 12345;
      return Array.from({ length: n }, () => {
        x = (x * 1103515245 + 12345) % 2 ** 31;
        return lo + ((hi - lo) * x) / 2 ** 31;
      });
    }

    /**
     * The engine's loop: two steps in flight; wait for the older, then submit the next. `gpuEnd`: the GPU timestamp
     * the caller reads for a step that ended at a given time (undefined: no GPU end times). Per wait after `warmup`: the
     * polling (ms after the sleep), and how late the wake came (negative: before the end); `starved`: wakes that
     * came after the queued step had finished too (the GPU ran dry). `firstLate`: the first wait resolves this long
     * after its step ended (the JS thread was busy).
     */
    async function pipeline(ds: number[], queuedBehind: boolean, gpuEnd: ((end: number) => number) | undefined, warmup = 20, firstLate = 0) {
      const gpu = new VirtualGpu();
      const pacer = new WaitPacer(true, gpu);
      const rec = [paced(), paced()];
      const doneAt = [0, 0];
      let next = 0;
      const submit = (k: number) => {
        doneAt[k] = gpu.submit(ds[next++]!);
        pacer.submitted(rec[k]!, 1, 16);
      };
      submit(0);
      submit(1);
      const poll: number[] = [];
      const lateBy: number[] = [];
      let starved = 0;
      for (let i = 0; next < ds.length; i++) {
        const k = i % 2;
        await pacer.beforeWait(rec[k]!, queuedBehind);
        const woke = gpu.t;
        if (woke > doneAt[k ^ 1]!) starved++;
        gpu.waitUntil(doneAt[k]! + (i === 0 ? firstLate : 0));
        if (i >= warmup) {
          poll.push(gpu.t - woke);
          lateBy.push(woke - doneAt[k]!);
        }
        pacer.done(rec[k]!, gpuEnd === undefined ? NaN : gpuEnd(doneAt[k]!));
        submit(k);
      }
      return { poll, lateBy, starved, slept: gpu.slept };
    }
    const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;

    it('with GPU end times, sleeps past most steps and polls for few, and wakes before the queued step can end', async () => {
      // ±40 %: noisier than the ±20 % steps seen on lavapipe.
      const ds = durations(240, 60, 140);
      const gpuClock = (end: number) => end - 5000; // the GPU's clock has its own origin
      const paced = await pipeline(ds, true, gpuClock);
      const plain = await pipeline(ds, false, gpuClock);
      // About 1 - LATE_QUANTILE of the waits poll (for part of the spread; the cap below makes it more at this
      // spread), where waits that aim before the end poll in most steps: a third of the polling is a loose bound.
      expect(mean(paced.poll)).toBeLessThan(mean(plain.poll) / 3);
      expect(paced.lateBy.filter((l) => l > 0).length).toBeGreaterThan(LATE_QUANTILE * 0.75 * paced.lateBy.length);
      // The sleep ends (TIMER_SLACK_MS early) at most (1 + SLEEP_FRACTION) x the shortest duration so far after the
      // previous step's end (known exactly from the GPU end times), so wait i wakes at most that minus its own
      // duration after its step's end: with durations alike, before the queued step can have finished.
      paced.lateBy.forEach((l, j) => {
        const i = j + 20;
        expect(l).toBeLessThanOrEqual((1 + SLEEP_FRACTION) * Math.min(...ds.slice(0, i)) - ds[i]! - SLACK + 1e-9);
      });
      expect(paced.starved).toBe(0);
    });

    it('measures steps queued behind others by their timestamps alone, even while the clock mapping is off', async () => {
      // The first wait resolves 30 ms late, so the first mapping of the GPU clock puts that step's end 30 ms late;
      // taking the next step's start from it would make a 36-44 ms step look 6-14 ms long, and the cap
      // (1 + SLEEP_FRACTION) x the shortest duration would then end every sleep early.
      const ds = durations(240, 36, 44);
      const gpuClock = (end: number) => end + 1e6;
      const paced = await pipeline(ds, true, gpuClock, 20, 30);
      const plain = await pipeline(ds, false, gpuClock, 20, 30);
      expect(mean(paced.poll)).toBeLessThan(mean(plain.poll) / 3);
      expect(paced.starved).toBe(0);
    });

    it('without GPU end times, a queued step changes nothing (an oversleep would hide how late it woke)', async () => {
      const ds = durations(120, 80, 120);
      const plain = await pipeline(ds, false, undefined);
      for (const gpuEnd of [undefined, () => 0]) {
        // No end times, or timestamps that never advance (a device that reads them as 0).
        const flagged = await pipeline(ds, true, gpuEnd);
        expect(flagged.slept).toBe(plain.slept);
        expect(flagged.poll).toEqual(plain.poll);
      }
    });
  });
});
