// GET /metrics in Prometheus' text format (version 0.0.4). vLLM's names where vLLM has the metric, so existing
// dashboards keep working; `polylora:` for what vLLM lacks (per-adapter counts, GPU slot residency, KV blocks).
// Every series carries `model_name` (the base's first served name), as vLLM's do.

import type { LLM } from '../engine/llm.js';
import type { FinishReason } from '../engine/sequence.js';
import type { RequestOutput } from '../engine/request.js';
import type { AdapterManager } from './adapters.js';
import type { EngineGauges } from './engine-hooks.js';

/** vLLM's buckets, in seconds. */
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];
const E2E_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60];

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: number[]) {
    this.counts = new Array<number>(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }
}

/** Counters the server keeps itself (the engine's token counters come from LLM.stats). */
export class ServerMetrics {
  /** Requests per served name (adapter name, or the base's name). */
  readonly requestsByModel = new Map<string, number>();
  /** Finished engine requests per finish reason. */
  readonly finished = new Map<FinishReason, number>();
  readonly ttft = new Histogram(TTFT_BUCKETS);
  readonly e2e = new Histogram(E2E_BUCKETS);
  /** HTTP answers per status. */
  readonly responses = new Map<number, number>();

  /** One API request for `model` (a request with n choices or several prompts counts once). */
  countRequest(model: string): void {
    this.requestsByModel.set(model, (this.requestsByModel.get(model) ?? 0) + 1);
  }

  countResponse(status: number): void {
    this.responses.set(status, (this.responses.get(status) ?? 0) + 1);
  }

  /** One finished engine request (one choice). */
  observe(out: RequestOutput): void {
    this.finished.set(out.finishReason, (this.finished.get(out.finishReason) ?? 0) + 1);
    if (out.metrics.firstTokenMs !== null) this.ttft.observe(out.metrics.firstTokenMs / 1000);
    if (out.metrics.finishedMs !== null) this.e2e.observe(out.metrics.finishedMs / 1000);
  }
}

/** Label values escaped as the text format wants (backslash, double quote, newline). */
function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labels(l: Record<string, string | number>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${esc(String(v))}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** The /metrics page. */
export function renderMetrics(m: ServerMetrics, g: EngineGauges, llm: LLM, adapters: AdapterManager): string {
  const model = adapters.baseNames[0]!;
  const out: string[] = [];
  const family = (name: string, type: 'gauge' | 'counter', help: string, rows: [Record<string, string | number>, number][]) => {
    // Text format 0.0.4 (as Python's prometheus_client writes it): a counter's family is named with its _total.
    const full = type === 'counter' ? `${name}_total` : name;
    out.push(`# HELP ${full} ${help}`, `# TYPE ${full} ${type}`);
    for (const [l, v] of rows) out.push(`${full}${labels({ model_name: model, ...l })} ${v}`);
  };
  const histogram = (name: string, help: string, h: Histogram) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    h.buckets.forEach((b, i) => out.push(`${name}_bucket${labels({ model_name: model, le: b })} ${h.counts[i]}`));
    out.push(`${name}_bucket${labels({ model_name: model, le: '+Inf' })} ${h.count}`);
    out.push(`${name}_sum${labels({ model_name: model })} ${h.sum}`, `${name}_count${labels({ model_name: model })} ${h.count}`);
  };

  family('vllm:num_requests_running', 'gauge', 'Requests in the running batch.', [[{}, g.running]]);
  family('vllm:num_requests_waiting', 'gauge', 'Requests waiting to be admitted.', [[{}, g.waiting]]);
  const usage = g.kvBlocksTotal > 0 ? g.kvBlocksUsed / g.kvBlocksTotal : 0;
  family('vllm:kv_cache_usage_perc', 'gauge', 'KV-cache usage: 1 means 100 percent.', [[{}, usage]]);
  family('vllm:gpu_cache_usage_perc', 'gauge', 'KV-cache usage (the name before vLLM 0.10).', [[{}, usage]]);
  family('polylora:kv_cache_blocks_used', 'gauge', 'KV blocks held by requests.', [[{}, g.kvBlocksUsed]]);
  family('polylora:kv_cache_blocks_total', 'gauge', 'KV blocks in the pool.', [[{}, g.kvBlocksTotal]]);
  family('vllm:prompt_tokens', 'counter', 'Prompt tokens processed.', [[{}, llm.stats.promptTokens]]);
  family('vllm:generation_tokens', 'counter', 'Tokens generated.', [[{}, llm.stats.generatedTokens]]);
  family(
    'vllm:request_success',
    'counter',
    'Finished requests (one per choice), by finish reason.',
    [...m.finished].map(([reason, n]) => [{ finished_reason: reason }, n]),
  );
  histogram('vllm:time_to_first_token_seconds', 'Time to first token.', m.ttft);
  histogram('vllm:e2e_request_latency_seconds', 'Request latency, arrival to last token.', m.e2e);

  const lora = llm.loraRequests();
  const names = (m: ReadonlyMap<string, number>) => [...m.keys()].sort().join(',');
  const slots = llm.loraSlots();
  family('vllm:lora_requests_info', 'gauge', 'Adapters of running and of waiting requests (the value is the time of the sample).', [
    [{ running_lora_adapters: names(lora.running), waiting_lora_adapters: names(lora.waiting), max_lora: slots.length }, Date.now() / 1000],
  ]);
  family(
    'polylora:lora_requests',
    'counter',
    'API requests per served model name (adapter, or the base).',
    [...m.requestsByModel].map(([name, n]) => [{ lora_name: name }, n]),
  );
  family(
    'polylora:lora_requests_running',
    'gauge',
    'Engine requests running per adapter.',
    [...adapters.activeCounts()].map(([name, n]) => [{ lora_name: name }, n]),
  );
  family(
    'polylora:lora_gpu_slot_resident',
    'gauge',
    'Adapter resident in each GPU slot (1), with the running sequences that reference it as `refs`.',
    slots.filter((s) => s.name !== null).map((s) => [{ slot: s.slot, lora_name: s.name!, refs: s.refs, pinned: String(s.pinned) }, 1]),
  );
  family('polylora:lora_gpu_slots', 'gauge', 'GPU slots for adapters (--max-loras).', [[{}, slots.length]]);
  family('polylora:lora_adapters_served', 'gauge', 'Adapters served (static, loaded and resolved).', [[{}, adapters.list().length]]);
  const stats = llm.loraStats;
  if (stats) {
    family('polylora:lora_slot_loads', 'counter', 'Adapters written into a GPU slot.', [[{}, stats.slots.loads]]);
    family('polylora:lora_slot_evictions', 'counter', 'Resident adapters overwritten by another.', [[{}, stats.slots.evictions]]);
    family('polylora:lora_cpu_loads', 'counter', 'Adapters read and parsed into the CPU cache.', [[{}, stats.cpu.loads]]);
  }
  family(
    'polylora:http_responses',
    'counter',
    'HTTP answers by status.',
    [...m.responses].map(([status, n]) => [{ status }, n]),
  );
  return `${out.join('\n')}\n`;
}
