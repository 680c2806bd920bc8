// adapter_config.json parsing and peft's module-selection rules (target_modules, exclude_modules,
// layers_to_transform / layers_pattern, rank_pattern / alpha_pattern), each case checked against what peft's own
// functions return for it (tuners_utils.check_target_module_exists, utils.other.get_pattern_key).
import { describe, expect, it } from 'vitest';
import { PolyloraError } from '../../src/errors.js';
import { isTargeted, layerIndex, loraScale, matchPatternKey, moduleScaling, parsePeftConfig } from '../../src/lora/peft-config.js';
import { peftConfig } from './fixtures.js';

const parse = (overrides: Record<string, unknown>) => parsePeftConfig(peftConfig(overrides), 'mem/adapter_config.json');

function refusal(overrides: Record<string, unknown>): PolyloraError {
  try {
    parse(overrides);
  } catch (e) {
    expect(e).toBeInstanceOf(PolyloraError);
    return e as PolyloraError;
  }
  throw new Error(`expected ${JSON.stringify(overrides)} to be refused`);
}

const Q0 = 'model.layers.0.self_attn.q_proj';
const V1 = 'model.layers.1.self_attn.v_proj';
const DOWN1 = 'model.layers.1.mlp.down_proj';

describe('scale', () => {
  it('is alpha / r, or alpha / sqrt(r) with rsLoRA', () => {
    expect(loraScale(16, 8, false)).toBe(2);
    expect(loraScale(16, 16, true)).toBe(4); // the robot adapter
    const c = parse({ r: 16, lora_alpha: 16, use_rslora: true });
    expect(moduleScaling(c, Q0)).toEqual({ r: 16, alpha: 16, scale: 4 });
  });
});

describe('rank_pattern / alpha_pattern (peft get_pattern_key: first key with re.match(rf"(.*\\.)?({key})$"))', () => {
  it('matches a key as a suffix at a dot boundary, or the whole path', () => {
    const p: [string, number][] = [['q_proj', 1]];
    expect(matchPatternKey(p, Q0)).toEqual(['q_proj', 1]);
    expect(matchPatternKey(p, 'model.layers.0.self_attn.xq_proj')).toBeUndefined(); // not at a dot
    expect(matchPatternKey(p, 'q_proj')).toEqual(['q_proj', 1]); // the (.*\.)? prefix is optional
    expect(matchPatternKey([[Q0, 2]], Q0)).toEqual([Q0, 2]);
    expect(matchPatternKey([['layers.0.self_attn.q_proj', 3]], 'model.layers.10.self_attn.q_proj')).toBeUndefined();
  });

  it('treats keys as regular expressions and takes the first match in file order', () => {
    const p: [string, number][] = [['layers\\.[01]\\.self_attn\\.(q|v)_proj', 5], ['q_proj', 6]];
    expect(matchPatternKey(p, Q0)?.[1]).toBe(5);
    expect(matchPatternKey(p, 'model.layers.2.self_attn.q_proj')?.[1]).toBe(6);
    // An unescaped "." is a regex dot, as in peft.
    expect(matchPatternKey([['mlp.down_proj', 7]], 'model.layers.1.mlpXdown_proj')?.[1]).toBe(7);
  });

  it('gives per-module rank, alpha and scale', () => {
    const c = parse({ r: 4, lora_alpha: 8, rank_pattern: { q_proj: 2, [DOWN1]: 6 }, alpha_pattern: { 'layers.1.self_attn.v_proj': 3 } });
    expect(moduleScaling(c, Q0)).toEqual({ r: 2, alpha: 8, scale: 4 });
    expect(moduleScaling(c, DOWN1)).toEqual({ r: 6, alpha: 8, scale: 8 / 6 });
    expect(moduleScaling(c, V1)).toEqual({ r: 4, alpha: 3, scale: 3 / 4 });
    expect(moduleScaling(c, 'model.layers.0.self_attn.v_proj')).toEqual({ r: 4, alpha: 8, scale: 2 });
  });

  it('refuses a value that is not a rank, naming the key', () => {
    const e = refusal({ rank_pattern: { q_proj: 0 } });
    expect(e.field).toBe('rank_pattern.q_proj');
  });
});

describe('target_modules', () => {
  it('a list matches the exact path or a `.<name>` suffix', () => {
    const c = parse({ target_modules: ['q_proj', 'mlp.down_proj'] });
    expect(isTargeted(c, Q0, true)).toBe(true);
    expect(isTargeted(c, DOWN1, true)).toBe(true);
    expect(isTargeted(c, 'model.layers.0.self_attn.k_proj', true)).toBe(false);
    expect(isTargeted(c, 'model.layers.0.self_attn.xq_proj', true)).toBe(false);
    expect(isTargeted(parse({ target_modules: ['lm_head', 'embed_tokens'] }), 'lm_head', false)).toBe(true);
    expect(isTargeted(parse({ target_modules: ['lm_head', 'embed_tokens'] }), 'model.embed_tokens', false)).toBe(true);
  });

  it('a string is re.fullmatch against the whole path', () => {
    const c = parse({ target_modules: '.*layers\\.1\\..*(q|v)_proj' });
    expect(isTargeted(c, V1, true)).toBe(true);
    expect(isTargeted(c, 'model.layers.1.self_attn.q_proj', true)).toBe(true);
    expect(isTargeted(c, Q0, true)).toBe(false);
    // fullmatch: a pattern matching only part of the path selects nothing.
    expect(isTargeted(parse({ target_modules: 'q_proj' }), Q0, true)).toBe(false);
  });

  it('translates Python-only regex syntax and names a pattern JavaScript cannot compile', () => {
    const c = parse({ target_modules: '.*\\.(?P<m>q_proj)\\Z' });
    expect(isTargeted(c, Q0, true)).toBe(true);
    const e = refusal({ target_modules: '(?i).*q_proj' });
    expect(e.field).toBe('target_modules');
    expect(e.code).toBe('CONFIG_INVALID');
  });

  it('"all-linear" (any case) is every projection but not lm_head or the embedding', () => {
    const c = parse({ target_modules: 'ALL-LINEAR' });
    expect(c.targetModules.kind).toBe('all-linear');
    expect(isTargeted(c, DOWN1, true)).toBe(true);
    expect(isTargeted(c, 'lm_head', false)).toBe(false);
    expect(isTargeted(c, 'model.embed_tokens', false)).toBe(false);
  });

  it('null means peft\'s default for these architectures (q_proj, v_proj), with a warning', () => {
    const c = parse({ target_modules: null });
    expect(isTargeted(c, Q0, true)).toBe(true);
    expect(isTargeted(c, DOWN1, true)).toBe(false);
    expect(c.warnings.join('\n')).toMatch(/target_modules is not set/);
  });

  it('exclude_modules wins over the targets (list: exact or suffix; string: fullmatch)', () => {
    const list = parse({ target_modules: 'all-linear', exclude_modules: ['down_proj', Q0] });
    expect(isTargeted(list, DOWN1, true)).toBe(false);
    expect(isTargeted(list, Q0, true)).toBe(false);
    expect(isTargeted(list, 'model.layers.1.self_attn.q_proj', true)).toBe(true);
    const re = parse({ target_modules: ['q_proj', 'v_proj'], exclude_modules: '.*layers\\.0\\..*' });
    expect(isTargeted(re, Q0, true)).toBe(false);
    expect(isTargeted(re, V1, true)).toBe(true);
  });
});

describe('layers_to_transform / layers_pattern', () => {
  it('keeps only the listed layers (int or list), read with the default pattern', () => {
    const c = parse({ layers_to_transform: [1] });
    expect(isTargeted(c, V1, true)).toBe(true);
    expect(isTargeted(c, 'model.layers.0.self_attn.v_proj', true)).toBe(false);
    expect(isTargeted(parse({ layers_to_transform: 0 }), Q0, true)).toBe(true);
    expect(isTargeted(parse({ layers_to_transform: 0 }), 'model.layers.1.self_attn.q_proj', true)).toBe(false);
  });

  it('with layers_pattern, reads the index after that name; a path without it is not targeted', () => {
    const c = parse({ layers_to_transform: [0], layers_pattern: 'layers', target_modules: ['q_proj', 'lm_head'] });
    expect(layerIndex(c, Q0)).toBe(0);
    expect(isTargeted(c, Q0, true)).toBe(true);
    // "lm_head" is in the list exactly: peft's exact-name branch skips the layer filter.
    expect(isTargeted(c, 'lm_head', false)).toBe(true);
    const other = parse({ layers_to_transform: [0], layers_pattern: ['h', 'blocks'] });
    expect(layerIndex(other, Q0)).toBeNull();
    expect(isTargeted(other, Q0, true)).toBe(false);
  });

  it('is ignored (with a warning) when target_modules is a regex, as in peft', () => {
    const c = parse({ target_modules: '.*q_proj', layers_to_transform: [1] });
    expect(isTargeted(c, Q0, true)).toBe(true);
    expect(c.warnings.join('\n')).toMatch(/layers_to_transform is ignored/);
  });
});

describe('refusals name the field, its value and what polylora supports', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['modules_to_save', { modules_to_save: ['lm_head'] }, /modules_to_save/],
    ['peft_type', { peft_type: 'ADALORA' }, /not a LoRA adapter/],
    ['lora_bias', { lora_bias: true }, /lora_B/],
    ['layer_replication', { layer_replication: [[0, 2]] }, /layer_replication/],
    ['trainable_token_indices', { trainable_token_indices: [1, 2] }, /trainable_token_indices/],
    ['use_qalora', { use_qalora: true }, /QALoRA/],
  ];
  for (const [field, overrides, what] of cases) {
    it(`${field} = ${JSON.stringify(overrides[field])}`, () => {
      const e = refusal(overrides);
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.field).toBe(field);
      expect(e.found).toBe(JSON.stringify(overrides[field]));
      expect(e.message).toMatch(what);
      expect(e.message).toMatch(/polylora runs LoRA and DoRA/);
      expect(e.message).toContain('mem/adapter_config.json');
    });
  }

  it('bias: "none", "all" and "lora_only" are read (bias tensors are refused by the loader), anything else is refused', () => {
    for (const b of ['none', 'all', 'lora_only']) expect(parse({ bias: b }).bias).toBe(b);
    expect(parse({}).bias).toBe('none');
    expect([refusal({ bias: 'some' }).field, refusal({ bias: 'some' }).found]).toEqual(['bias', '"some"']);
  });

  it('use_dora: true and false are read, anything else is refused', () => {
    expect(parse({ use_dora: true }).useDora).toBe(true);
    expect(parse({ use_dora: false }).useDora).toBe(false);
    expect(parse({}).useDora).toBe(false);
    const e = refusal({ use_dora: 'yes' });
    expect([e.field, e.found]).toEqual(['use_dora', '"yes"']);
  });

  it('accepts the empty / null forms of the same fields', () => {
    expect(() => parse({ modules_to_save: [], layer_replication: null, lora_bias: false, use_dora: false, bias: 'none', trainable_token_indices: null })).not.toThrow();
  });

  it('rejects a bad rank', () => {
    expect(refusal({ r: 0 }).field).toBe('r');
    expect(refusal({ r: 2.5 }).field).toBe('r');
  });
});

describe('warnings for settings that change nothing here', () => {
  it('fan_in_fan_out on nn.Linear targets is reset to false, as peft does', () => {
    expect(parse({ fan_in_fan_out: true }).warnings.join('\n')).toMatch(/fan_in_fan_out is true .* treated as false/);
  });

  it('init_lora_weights that rewrite the base (PiSSA, OLoRA, ...) are flagged', () => {
    expect(parse({ init_lora_weights: 'pissa_niter_4' }).warnings.join('\n')).toMatch(/rewrites the base weights/);
    expect(parse({ init_lora_weights: 'gaussian' }).warnings).toEqual([]);
  });
});
