// Adapters at runtime: /v1/load_lora_adapter and /v1/unload_lora_adapter (off unless enabled; vLLM's bodies and
// texts), name and path checks, a failing load that leaves everyone else served, the filesystem resolver (never
// outside its root), a plugin resolver hit by concurrent first requests (one load), the Hub resolver against a
// local Hub, the state dir restored by a new server, --default-lora and the per-request lora_scale.
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../../src/engine/llm.js';
import { fsResolver, hubResolver, type LoraResolver } from '../../src/server/resolvers.js';
import { createServer, type PolyloraServer, type ServerOptions } from '../../src/server/server.js';
import { STATE_FILE } from '../../src/server/state-store.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';
import { golden, type GoldenCase } from '../helpers/shared.js';
import { adapterDir, client, modelDir, waitFor } from './helpers.js';

const g = golden();
const HUB_REPO = 'tiny-org/pirate-hub';
const ENV_KEYS = ['HF_HOME', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'XDG_CACHE_HOME', 'HF_TOKEN', 'HF_HUB_OFFLINE', 'HF_ENDPOINT'];
const savedEnv: Record<string, string | undefined> = {};
let tmp: string;
let root: string;
let stateDir: string;
let hub: HubServer;
let llm: LLM;
const servers: PolyloraServer[] = [];

/** A server over the shared LLM, listening; closed after the file. */
async function start(options: ServerOptions): Promise<{ server: PolyloraServer; url: string; openai: OpenAI }> {
  const server = createServer(llm, { servedModelNames: ['tiny'], ...options });
  servers.push(server);
  const url = await server.listen(0);
  await server.ready;
  return { server, url, openai: client(url) };
}

const once = (adapter: string | null): GoldenCase => g.cases.find((c) => c.name === 'once-there-was' && c.adapter === adapter)!;

/** Greedy text of the golden prompt "once-there-was" for `model`. */
async function text(openai: OpenAI, model: string, extra: Record<string, unknown> = {}): Promise<{ text: string; model: string }> {
  const res = await openai.completions.create({ model, prompt: once(null).prompt_ids, max_tokens: 32, temperature: 0, ...extra });
  return { text: res.choices[0]!.text, model: res.model };
}

async function post(url: string, path: string, body: unknown) {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const t = await res.text();
  return { status: res.status, text: t, error: res.status === 200 ? undefined : (JSON.parse(t) as { error: { message: string; param: string | null } }).error };
}

async function stateNames(): Promise<string[]> {
  const s = JSON.parse(await readFile(join(stateDir, STATE_FILE), 'utf8')) as { adapters: { name: string }[] };
  return s.adapters.map((a) => a.name);
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'polylora-server-adapters-'));
  root = join(tmp, 'loras');
  stateDir = join(tmp, 'state');
  // The resolver root: a real copy of robot, a symlink that leads outside the root, a folder with a broken tensor file.
  await mkdir(join(root, 'robot'), { recursive: true });
  for (const f of ['adapter_config.json', 'adapter_model.safetensors']) await copyFile(join(adapterDir('robot'), f), join(root, 'robot', f));
  await symlink(adapterDir('zara'), join(root, 'evil'));
  await mkdir(join(tmp, 'broken'));
  await copyFile(join(adapterDir('zara'), 'adapter_config.json'), join(tmp, 'broken', 'adapter_config.json'));
  await writeFile(join(tmp, 'broken', 'adapter_model.safetensors'), new Uint8Array([200, 0, 0, 0, 0, 0, 0, 0, 123, 34]));
  hub = await startHubServer({ repos: { [HUB_REPO]: adapterDir('pirate') } });
  for (const k of ENV_KEYS) {
    savedEnv[k] = process.env[k];
    delete process.env[k];
  }
  process.env.HF_HOME = join(tmp, 'hf-home');
  process.env.HF_ENDPOINT = hub.url;
  llm = await LLM.load(modelDir(), { enableLora: true, maxLoras: 4, maxNumSeqs: 16, onWarning: () => {} });
});

afterAll(async () => {
  for (const s of servers) await s.close();
  await llm?.close();
  await hub?.close();
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('runtime loading', () => {
  it('is off unless enabled: the routes answer 404 saying how to turn them on', async () => {
    const { url } = await start({});
    for (const path of ['/v1/load_lora_adapter', '/v1/unload_lora_adapter']) {
      const a = await post(url, path, { lora_name: 'zara', lora_path: adapterDir('zara') });
      expect(a.status).toBe(404);
      expect(a.error!.message).toMatch(/--allow-runtime-lora-updating.*VLLM_ALLOW_RUNTIME_LORA_UPDATING=True/);
    }
  });

  describe('enabled, with a state dir and resolvers', () => {
    let url: string;
    let openai: OpenAI;
    let server: PolyloraServer;
    const resolverCalls = new Map<string, number>();
    const counting: LoraResolver = {
      name: 'counting',
      async resolve(name) {
        resolverCalls.set(name, (resolverCalls.get(name) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, 50)); // a slow lookup: every concurrent request arrives meanwhile
        return name === 'zara-plugin' ? { source: adapterDir('zara') } : null;
      },
    };

    beforeAll(async () => {
      ({ server, url, openai } = await start({
        allowRuntimeLoraUpdating: true,
        stateDir,
        resolvers: [fsResolver(root)],
        loraModules: [{ name: 'pirate', path: adapterDir('pirate') }],
      }));
      server.addResolver(counting);
      server.addResolver(hubResolver('tiny-org'));
    });

    it("loads and unloads with vLLM's bodies and answers, recorded in the state dir", async () => {
      let a = await post(url, '/v1/load_lora_adapter', { lora_name: 'zara', lora_path: adapterDir('zara') });
      expect([a.status, a.text]).toEqual([200, "Success: LoRA adapter 'zara' added successfully."]);
      expect(await stateNames()).toEqual(['zara']);
      const card = (await openai.models.retrieve('zara')) as OpenAI.Models.Model & { parent: string; root: string };
      expect(card).toMatchObject({ parent: 'tiny', root: adapterDir('zara') });
      expect(await text(openai, 'zara')).toEqual({ text: once('zara').expected_text, model: 'zara' });

      a = await post(url, '/v1/load_lora_adapter', { lora_name: 'zara', lora_path: adapterDir('zara') });
      expect(a.status).toBe(400);
      expect(a.error!.message).toBe("The lora adapter 'zara' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.");

      a = await post(url, '/v1/unload_lora_adapter', { lora_name: 'zara' });
      expect([a.status, a.text]).toEqual([200, "Success: LoRA adapter 'zara' removed successfully."]);
      expect(await stateNames()).toEqual([]);
      expect((await openai.models.list()).data.map((m) => m.id)).toEqual(['tiny', 'pirate']);
      const err = await text(openai, 'zara').catch((e) => e);
      expect(err).toBeInstanceOf(OpenAI.NotFoundError);

      a = await post(url, '/v1/unload_lora_adapter', { lora_name: 'zara' });
      expect([a.status, a.error!.message]).toEqual([404, "The lora adapter 'zara' cannot be found."]);
    });

    it('unloading an adapter with a request running: new requests 404, the running one finishes, then the engine forgets it', async () => {
      expect((await post(url, '/v1/load_lora_adapter', { lora_name: 'zara2', lora_path: adapterDir('zara') })).status).toBe(200);
      // Long enough (ignore_eos) to be still running when the unload arrives.
      const stream = await openai.completions.create({
        model: 'zara2',
        prompt: once(null).prompt_ids,
        max_tokens: 300,
        temperature: 0,
        ignore_eos: true,
        stream: true,
      } as OpenAI.Completions.CompletionCreateParamsStreaming);
      const it = stream[Symbol.asyncIterator]();
      let streamed = ((await it.next()).value as OpenAI.Completions.Completion).choices[0]!.text;
      expect((await post(url, '/v1/unload_lora_adapter', { lora_name: 'zara2' })).status).toBe(200);
      expect(await text(openai, 'zara2').catch((e) => e)).toBeInstanceOf(OpenAI.NotFoundError);
      expect(llm.listLoras()).toContain('zara2'); // still running
      for (let r = await it.next(); !r.done; r = await it.next()) streamed += (r.value as OpenAI.Completions.Completion).choices[0]!.text;
      expect(streamed.startsWith(once('zara').expected_text)).toBe(true);
      await waitFor('the engine to forget zara2', () => !llm.listLoras().includes('zara2'));
      expect(await stateNames()).toEqual([]);
    });

    it('load_inplace replaces an adapter under the same name (files read again)', async () => {
      expect((await post(url, '/v1/load_lora_adapter', { lora_name: 'swap', lora_path: adapterDir('zara') })).status).toBe(200);
      expect((await text(openai, 'swap')).text).toBe(once('zara').expected_text);
      const a = await post(url, '/v1/load_lora_adapter', { lora_name: 'swap', lora_path: adapterDir('robot'), load_inplace: true });
      expect([a.status, a.text]).toEqual([200, "Success: LoRA adapter 'swap' added successfully."]);
      expect((await text(openai, 'swap')).text).toBe(once('robot').expected_text);
      expect((await post(url, '/v1/unload_lora_adapter', { lora_name: 'swap' })).status).toBe(200);
      expect(await stateNames()).toEqual([]);
    });

    it('checks names and paths: no shadowing the base, no traversal, an adapter folder', async () => {
      const cases: [Record<string, unknown>, number, RegExp][] = [
        [{ lora_name: 'tiny', lora_path: adapterDir('zara') }, 400, /cannot shadow/],
        [{ lora_name: '../zara', lora_path: adapterDir('zara') }, 400, /invalid adapter name/],
        [{ lora_name: 'a\\b', lora_path: adapterDir('zara') }, 400, /invalid adapter name/],
        [{ lora_name: 'z2', lora_path: `${adapterDir('zara')}/../pirate` }, 400, /path traversal/],
        [{ lora_name: 'z2', lora_path: '~/zara' }, 400, /not expanded/],
        [{ lora_name: 'z2' }, 400, /Both 'lora_name' and 'lora_path' must be provided/],
        [{ lora_name: 'z2', lora_path: modelDir() }, 404, /not a PEFT adapter folder/],
      ];
      for (const [body, status, message] of cases) {
        const a = await post(url, '/v1/load_lora_adapter', body);
        expect([a.status, a.error?.message], JSON.stringify(body)).toEqual([status, expect.stringMatching(message)]);
      }
      expect((await openai.models.list()).data.map((m) => m.id)).toEqual(['tiny', 'pirate']);
    });

    it('a failing adapter answers its error and everything else is still served', async () => {
      const a = await post(url, '/v1/load_lora_adapter', { lora_name: 'broken', lora_path: join(tmp, 'broken') });
      expect(a.status).toBe(400);
      expect(a.error!.message).toContain(join(tmp, 'broken'));
      expect(llm.listLoras()).not.toContain('broken');
      expect(await text(openai, 'pirate')).toEqual({ text: once('pirate').expected_text, model: 'pirate' });
      expect(await text(openai, 'tiny')).toEqual({ text: once(null).expected_text, model: 'tiny' });
    });

    it('the filesystem resolver serves a folder under its root, and never one outside it', async () => {
      expect(await text(openai, 'robot')).toEqual({ text: once('robot').expected_text, model: 'robot' });
      const card = (await openai.models.retrieve('robot')) as OpenAI.Models.Model & { root: string };
      expect(card.root).toBe(join(root, 'robot'));
      expect(await stateNames()).toEqual(['robot']);
      const evil = await text(openai, 'evil').catch((e) => e);
      expect(evil).toBeInstanceOf(OpenAI.NotFoundError);
      expect(evil.message).toMatch(/leads outside the resolver root/);
      for (const name of ['../loras/robot', '/etc', 'robot/../../zara']) {
        const err = await text(openai, name).catch((e) => e);
        expect(err, name).toBeInstanceOf(OpenAI.NotFoundError);
      }
      expect(llm.listLoras()).not.toContain('evil');
    });

    it('concurrent first requests for a name a plugin resolver finds load it once', async () => {
      const loadsBefore = llm.loraStats!.cpu.loads;
      const results = await Promise.all(Array.from({ length: 8 }, () => text(openai, 'zara-plugin')));
      for (const r of results) expect(r).toEqual({ text: once('zara').expected_text, model: 'zara-plugin' });
      expect(resolverCalls.get('zara-plugin')).toBe(1);
      expect(llm.loraStats!.cpu.loads - loadsBefore).toBe(1);
    });

    it('the Hub resolver downloads <org>/<name> (a local stand-in for the Hub)', async () => {
      expect(await text(openai, 'pirate-hub')).toEqual({ text: once('pirate').expected_text, model: 'pirate-hub' });
      const card = (await openai.models.retrieve('pirate-hub')) as OpenAI.Models.Model & { root: string };
      expect(card.root).toBe(HUB_REPO);
      expect(hub.downloads().length).toBeGreaterThan(0);
      expect(await stateNames()).toEqual(['robot', 'zara-plugin', 'pirate-hub']);
    });

    it('a new server on the same state dir serves the same adapters with the same tokens', async () => {
      await server.close();
      const again = await start({
        allowRuntimeLoraUpdating: true,
        stateDir,
        resolvers: [fsResolver(root)],
        loraModules: [{ name: 'pirate', path: adapterDir('pirate') }],
      });
      expect((await again.openai.models.list()).data.map((m) => m.id)).toEqual(['tiny', 'pirate', 'robot', 'zara-plugin', 'pirate-hub']);
      expect(await text(again.openai, 'robot')).toEqual({ text: once('robot').expected_text, model: 'robot' });
      expect(await text(again.openai, 'pirate-hub')).toEqual({ text: once('pirate').expected_text, model: 'pirate-hub' });
      const a = await post(again.url, '/v1/unload_lora_adapter', { lora_name: 'zara-plugin' });
      expect(a.status).toBe(200);
      expect(await stateNames()).toEqual(['robot', 'pirate-hub']);
    });
  });
});

describe('default adapter and scale', () => {
  it('--default-lora: requests for the base name get the adapter, and the response names it', async () => {
    const { openai } = await start({ loraModules: [{ name: 'pirate', path: adapterDir('pirate') }], defaultLora: 'pirate' });
    expect(await text(openai, 'tiny')).toEqual({ text: once('pirate').expected_text, model: 'pirate' });
    const cards = (await openai.models.list()).data as (OpenAI.Models.Model & { lora?: { default: boolean } })[];
    expect(cards.find((m) => m.id === 'pirate')!.lora!.default).toBe(true);
  });

  it('--default-lora naming nothing servable fails the start', async () => {
    const s = createServer(llm, { servedModelNames: ['tiny'], defaultLora: 'nobody' });
    servers.push(s);
    await expect(s.ready).rejects.toThrow(/The model `nobody` does not exist/);
  });

  it('lora_scale multiplies the adapter for one request (0 = the base model)', async () => {
    const { openai } = await start({ loraModules: [{ name: 'zara', path: adapterDir('zara') }] });
    expect(await text(openai, 'zara', { lora_scale: 0 })).toEqual({ text: once(null).expected_text, model: 'zara' });
    expect(await text(openai, 'zara', { lora_scale: 1 })).toEqual({ text: once('zara').expected_text, model: 'zara' });
  });
});
