// How many alternating rounds each bench section runs (every figure keeps its best round): on a shared VM speed
// drifts by 2x over minutes, so the variants a ratio compares take turns instead of running minutes apart.
export const benchRounds = (quick: boolean): number => (quick ? 1 : 3);
