// Adapters from the Hub go through the same download code as base models (a repo with adapter_config.json gets the
// adapter files): the real @huggingface/hub client against a local server laid out like the Hub, into a fresh
// HF cache. Covers the registry's string sources (`org/name[@revision]`) and `polylora merge` with Hub ids.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mergeCommand } from '../../src/cli/merge.js';
import { resolveModelFiles } from '../../src/engine/load.js';
import { parseModelConfig } from '../../src/model/config.js';
import { AdapterRegistry } from '../../src/lora/cpu-cache.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';
import { golden, sharedPath } from '../helpers/shared.js';

const g = golden();
const MODEL = 'raincandy-u/TinyStories-656K';
const LORA = 'polylora-test/tinystories-lora'; // main = zara, branch "pirate" = pirate
const ENV_KEYS = ['HF_HOME', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'XDG_CACHE_HOME', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_OFFLINE', 'HF_ENDPOINT'];
const savedEnv: Record<string, string | undefined> = {};
let server: HubServer;
let tmp: string;

beforeAll(async () => {
  server = await startHubServer({
    repos: {
      [MODEL]: sharedPath(g.model_path),
      [LORA]: { main: sharedPath(g.adapters.zara!.path), pirate: sharedPath(g.adapters.pirate!.path) },
    },
  });
  tmp = await mkdtemp(join(tmpdir(), 'polylora-lora-hub-'));
  for (const k of ENV_KEYS) {
    savedEnv[k] = process.env[k];
    delete process.env[k];
  }
  process.env.HF_HOME = join(tmp, 'hf-home');
  process.env.HF_ENDPOINT = server.url;
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
});
afterAll(async () => {
  vi.restoreAllMocks();
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

describe('adapters from the Hub', () => {
  it('the registry resolves `org/name` and `org/name@revision` through the Hub code', async () => {
    const base = await resolveModelFiles(MODEL);
    const config = parseModelConfig(JSON.parse(await base.text('config.json')), 'config.json').config;
    const r = new AdapterRegistry({ base: config, baseName: MODEL, maxCpuLoras: 2, resolve: (s) => resolveModelFiles(s) });
    r.register('zara', LORA);
    r.register('pirate', `${LORA}@pirate`);
    const [zara, pirate] = [await r.get('zara'), await r.get('pirate')];
    expect([zara.rank, zara.modules.size, zara.warnings]).toEqual([8, 14, []]);
    expect([pirate.rank, pirate.modules.size]).toEqual([4, 4]);
    expect(pirate.source).toMatch(/models--polylora-test--tinystories-lora\/snapshots\/[0-9a-f]{40}$/); // the HF cache folder
    // Only the two adapter files were downloaded for the adapter repo.
    const fetched = server.downloads().map((d) => d.url).filter((u) => u.includes('tinystories-lora'));
    expect(fetched.every((u) => /adapter_(config\.json|model\.safetensors)$/.test(u))).toBe(true);
  });

  it('polylora merge takes Hub ids for both the model and the adapter', async () => {
    const out = join(tmp, 'merged-pirate');
    const err: string[] = [];
    vi.mocked(process.stderr.write).mockImplementation((s) => (err.push(String(s)), true));
    await mergeCommand(['--model', MODEL, '--lora', LORA, '--lora-revision', 'pirate', '--out', out]);
    expect(await readdir(out)).toContain('model.safetensors');
    expect(err.join('')).toMatch(/merged "tinystories-lora" \(rank 4, 4 modules/);
  });
});
