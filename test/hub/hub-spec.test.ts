// The platform-independent rules of src/io/hub.ts and the cache location of src/platform/node-hub.ts: repo ids,
// HF_* settings, which files a model or adapter gets.

import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { PolyloraError } from '../../src/errors.js';
import { applyShardIndex, hubSettings, parseHubId, parseRepoSpec, selectFiles } from '../../src/io/hub.js';
import { hfHome, hubCacheDir, repoFolderName } from '../../src/platform/node-hub.js';

const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

function errorOf(f: () => unknown): PolyloraError {
  try {
    f();
  } catch (e) {
    if (e instanceof PolyloraError) return e;
    throw e;
  }
  throw new Error('expected a PolyloraError');
}

describe('parseRepoSpec', () => {
  test('org/name, @revision, and the revision option', () => {
    expect(parseRepoSpec('raincandy-u/TinyStories-656K')).toEqual({ repo: 'raincandy-u/TinyStories-656K', revision: 'main' });
    expect(parseRepoSpec('org/name@v1.0')).toEqual({ repo: 'org/name', revision: 'v1.0' });
    expect(parseRepoSpec('gpt2')).toEqual({ repo: 'gpt2', revision: 'main' });
    expect(parseRepoSpec('org/name', 'dev')).toEqual({ repo: 'org/name', revision: 'dev' });
    expect(parseRepoSpec('org/name@dev', 'dev')).toEqual({ repo: 'org/name', revision: 'dev' });
  });

  test.each(['', 'a/b/c', 'org/na me', 'org/name@', '../x', 'org--x/name', '/abs/path', 'org/'])('refuses %j', (spec) => {
    const e = errorOf(() => parseRepoSpec(spec));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.found).toBe(JSON.stringify(spec));
  });

  test('parseHubId: the parts, or undefined for what is not a Hub id', () => {
    expect(parseHubId('org/name')).toEqual({ repo: 'org/name' });
    expect(parseHubId('org/name@abc')).toEqual({ repo: 'org/name', revision: 'abc' });
    expect(parseHubId('./models/x')).toBeUndefined();
    expect(parseHubId('a/b/c')).toBeUndefined();
  });

  test('two different revisions are refused', () => {
    expect(errorOf(() => parseRepoSpec('org/name@a', 'b')).message).toContain('"@a" in the id and revision "b"');
  });
});

describe('hubSettings', () => {
  test('options win over the environment; HF_ENDPOINT loses its trailing slash', () => {
    const env = envOf({ HF_ENDPOINT: 'http://mirror.local/', HF_TOKEN: 'hf_env', HF_HUB_OFFLINE: '1' });
    expect(hubSettings({}, env)).toEqual({ endpoint: 'http://mirror.local', token: 'hf_env', offline: true });
    expect(hubSettings({ endpoint: 'http://x', token: 'hf_opt', offline: false }, env)).toEqual({
      endpoint: 'http://x',
      token: 'hf_opt',
      offline: false,
    });
  });

  test('defaults, the older token variable, the stored token, and empty values', () => {
    expect(hubSettings({}, envOf({}))).toEqual({ endpoint: 'https://huggingface.co', offline: false });
    expect(hubSettings({}, envOf({ HUGGING_FACE_HUB_TOKEN: 'hf_old' })).token).toBe('hf_old');
    expect(hubSettings({}, envOf({}), 'hf_file').token).toBe('hf_file');
    expect(hubSettings({}, envOf({ HF_TOKEN: 'hf_env' }), 'hf_file').token).toBe('hf_env');
    expect(hubSettings({}, envOf({ HF_TOKEN: '', HF_ENDPOINT: '' }))).toEqual({
      endpoint: 'https://huggingface.co',
      offline: false,
    });
  });

  test.each([
    ['1', true],
    ['TRUE', true],
    ['yes', true],
    ['On', true],
    ['0', false],
    ['false', false],
    ['', false],
  ])('HF_HUB_OFFLINE=%j -> offline %s', (value, offline) => {
    expect(hubSettings({}, envOf({ HF_HUB_OFFLINE: value })).offline).toBe(offline);
  });

  test('a token that is not an HF token is refused', () => {
    const e = errorOf(() => hubSettings({}, envOf({ HF_TOKEN: 'abc123' })));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.field).toBe('HF_TOKEN');
  });
});

describe('selectFiles', () => {
  const model = [
    '.gitattributes',
    'README.md',
    'config.json',
    'generation_config.json',
    'model-00001-of-00002.safetensors',
    'model-00002-of-00002.safetensors',
    'model.safetensors.index.json',
    'pytorch_model.bin',
    'tokenizer.json',
    'tokenizer_config.json',
    'special_tokens_map.json',
    'chat_template.jinja',
    'tokenizer.model',
    'onnx/model.onnx',
    'original/model.safetensors',
  ];

  test('a model: configs, tokenizer, chat template, index and root safetensors', () => {
    expect(selectFiles('org/m', model).sort()).toEqual(
      [
        'chat_template.jinja',
        'config.json',
        'generation_config.json',
        'model-00001-of-00002.safetensors',
        'model-00002-of-00002.safetensors',
        'model.safetensors.index.json',
        'special_tokens_map.json',
        'tokenizer.json',
        'tokenizer_config.json',
      ].sort(),
    );
  });

  test('an adapter: its config and safetensors only', () => {
    expect(selectFiles('org/a', ['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'tokenizer.json'])).toEqual([
      'adapter_config.json',
      'adapter_model.safetensors',
    ]);
  });

  test('the files option decides alone, and must match something', () => {
    expect(selectFiles('org/m', model, (p) => p.startsWith('onnx/'))).toEqual(['onnx/model.onnx']);
    expect(errorOf(() => selectFiles('org/m', model, () => false)).message).toContain('no file of the repo matches');
  });

  test('pickle-only repos are refused with a conversion hint', () => {
    const m = errorOf(() => selectFiles('org/m', ['config.json', 'pytorch_model.bin']));
    expect(m.code).toBe('HUB_ERROR');
    expect(m.found).toBe('pytorch_model.bin');
    expect(m.hint).toContain('spaces/safetensors/convert');
    const a = errorOf(() => selectFiles('org/a', ['adapter_config.json', 'adapter_model.bin']));
    expect(a.expected).toBe('adapter_model.safetensors');
    expect(a.hint).toContain('save_pretrained');
  });

  test('a model without config.json is refused', () => {
    expect(errorOf(() => selectFiles('org/m', ['model.safetensors'])).message).toContain('no config.json');
  });
});

describe('applyShardIndex', () => {
  const picked = ['config.json', 'model.safetensors.index.json', 'a.safetensors', 'b.safetensors', 'consolidated.safetensors'];
  const index = JSON.stringify({ weight_map: { x: 'a.safetensors', y: 'b.safetensors', z: 'a.safetensors' } });

  test('keeps the shards the index names', () => {
    expect(applyShardIndex('org/m', index, picked)).toEqual([
      'config.json',
      'model.safetensors.index.json',
      'a.safetensors',
      'b.safetensors',
    ]);
  });

  test('an index naming a missing shard, or no weight_map, is refused', () => {
    const missing = JSON.stringify({ weight_map: { x: 'c.safetensors' } });
    expect(errorOf(() => applyShardIndex('org/m', missing, picked)).found).toBe('missing c.safetensors');
    expect(errorOf(() => applyShardIndex('org/m', '{}', picked)).found).toContain('weight_map');
  });
});

describe('HF cache location (as Python huggingface_hub resolves it)', () => {
  test('HF_HUB_CACHE, then HUGGINGFACE_HUB_CACHE, then HF_HOME/hub, then XDG_CACHE_HOME, then ~/.cache', () => {
    expect(hubCacheDir(envOf({ HF_HUB_CACHE: '/a', HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c' }))).toBe('/a');
    expect(hubCacheDir(envOf({ HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c' }))).toBe('/b');
    expect(hubCacheDir(envOf({ HF_HOME: '/c', XDG_CACHE_HOME: '/x' }))).toBe('/c/hub');
    expect(hubCacheDir(envOf({ XDG_CACHE_HOME: '/x' }))).toBe('/x/huggingface/hub');
    expect(hubCacheDir(envOf({}))).toBe(join(homedir(), '.cache', 'huggingface', 'hub'));
    expect(hfHome(envOf({ HF_HOME: '~/hf' }))).toBe(join(homedir(), 'hf'));
  });

  test('repo folder names', () => {
    expect(repoFolderName('raincandy-u/TinyStories-656K')).toBe('models--raincandy-u--TinyStories-656K');
    expect(repoFolderName('gpt2')).toBe('models--gpt2');
  });
});
