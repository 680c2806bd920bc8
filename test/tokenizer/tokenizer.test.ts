// The tokenizer wrapper on real tokenizers: TinyStories (SentencePiece-style BPE, as golden.json was made with),
// SmolLM2 (byte-level BPE, ChatML special tokens), and a small byte-fallback tokenizer written here.
import { describe, expect, it } from 'vitest';
import { PolyloraError } from '../../src/errors.js';
import { memoryTree } from '../../src/io/source.js';
import { IncrementalDecoder } from '../../src/tokenizer/incremental.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { golden, sharedTree } from '../helpers/shared.js';

const g = golden();

async function tinyStories(tokenizerConfig?: Record<string, unknown>): Promise<Tokenizer> {
  const tree = await sharedTree(g.model_path);
  if (!tokenizerConfig) return Tokenizer.fromTree(tree);
  const base = JSON.parse(await tree.text('tokenizer_config.json')) as Record<string, unknown>;
  return Tokenizer.fromTree(memoryTree('tinystories-edited', { 'tokenizer.json': await tree.text('tokenizer.json'), 'tokenizer_config.json': JSON.stringify({ ...base, ...tokenizerConfig }) }));
}

/** ChatML as SmolLM2-Instruct's tokenizer_config.json ships it (the shared folder has only its tokenizer.json). */
const SMOLLM2_TEMPLATE =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}" +
  "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

async function smolLM(extra: Record<string, string> = {}, config: Record<string, unknown> = {}): Promise<Tokenizer> {
  const tree = await sharedTree('adapters/third-party/base-configs/smollm-135m-instruct');
  return Tokenizer.fromTree(
    memoryTree('smollm2', {
      'tokenizer.json': await tree.text('tokenizer.json'),
      'tokenizer_config.json': JSON.stringify({ bos_token: '<|im_start|>', eos_token: '<|im_end|>', ...config }),
      ...extra,
    }),
  );
}

/** Streams ids through an IncrementalDecoder; returns the deltas (flush last). */
function stream(tok: Tokenizer, ids: readonly number[], context: readonly number[] = []): string[] {
  const dec = new IncrementalDecoder(tok, { context });
  const deltas = ids.map((id) => dec.push(id));
  deltas.push(dec.flush());
  return deltas;
}

describe('TinyStories tokenizer and golden.json', () => {
  it('encodes every golden prompt_text to its prompt_ids (BOS from the post-processor)', async () => {
    const tok = await tinyStories();
    expect(tok.bosTokenId).toBe(1);
    expect(tok.eosTokenId).toBe(2);
    for (const c of g.cases) expect(tok.encode(c.prompt_text), c.name).toEqual(c.prompt_ids);
    expect(tok.encode(g.cases[0]!.prompt_text, { addSpecialTokens: false })).toEqual(g.cases[0]!.prompt_ids.slice(1));
  });

  it('decode(prompt + output) minus decode(prompt) is expected_text, special tokens skipped', async () => {
    const tok = await tinyStories();
    for (const c of g.cases) {
      const all = tok.decode([...c.prompt_ids, ...c.expected_ids], { skipSpecialTokens: true });
      const prompt = tok.decode(c.prompt_ids, { skipSpecialTokens: true });
      expect(prompt).toBe(c.prompt_text);
      expect(all.slice(prompt.length), `${c.name}/${c.adapter}`).toBe(c.expected_text);
    }
    expect(tok.decode([1, 80, 299])).toBe('<|start_story|> One day, '); // Strip removes a leading space only
    expect(tok.decode([])).toBe('');
  });

  it('streaming with the prompt as context yields expected_text exactly', async () => {
    const tok = await tinyStories();
    for (const c of g.cases) expect(stream(tok, c.expected_ids, c.prompt_ids).join(''), `${c.name}/${c.adapter}`).toBe(c.expected_text);
  });

  it("tokenizer_config.json's add_bos_token / add_eos_token override the post-processor", async () => {
    const text = 'One day, ';
    expect(await tinyStories({ add_bos_token: false }).then((t) => t.encode(text))).toEqual([80, 299]);
    expect(await tinyStories({ add_eos_token: true }).then((t) => t.encode(text))).toEqual([1, 80, 299, 2]);
  });

  it('has no chat template: applyChatTemplate says so', async () => {
    const tok = await tinyStories();
    expect(tok.hasChatTemplate).toBe(false);
    expect(() => tok.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(/no chat template/);
  });
});

describe('chat templates (SmolLM2 tokenizer)', () => {
  const messages = [
    { role: 'user', content: 'What is 2+2?' },
    { role: 'assistant', content: '4.' },
    { role: 'user', content: 'And 3+3?' },
  ];
  const rendered =
    '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' +
    '<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n';

  it('renders from tokenizer_config.json, with and without the generation prompt', async () => {
    const tok = await smolLM({}, { chat_template: SMOLLM2_TEMPLATE });
    expect(tok.applyChatTemplate(messages)).toBe(rendered);
    const prompt = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
    expect(prompt).toBe(`${rendered}<|im_start|>assistant\n`);
    // The markers are single special tokens; decoding gives the text back; skipping drops them.
    const ids = tok.encode(prompt, { addSpecialTokens: false });
    expect(ids.filter((id) => id === 1)).toHaveLength(5); // <|im_start|>
    expect(ids.filter((id) => id === 2)).toHaveLength(4); // <|im_end|>
    expect(tok.decode(ids)).toBe(prompt);
    expect(tok.decode(ids, { skipSpecialTokens: true })).not.toContain('<|im_');
    expect(tok.eosTokenId).toBe(2);
  });

  it('chat_template.jinja wins over tokenizer_config.json; a named list picks "default"', async () => {
    const jinja = await smolLM({ 'chat_template.jinja': '{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}' }, { chat_template: SMOLLM2_TEMPLATE });
    expect(jinja.applyChatTemplate(messages.slice(0, 1))).toBe('<|im_start|>[user]What is 2+2?');
    const listed = await smolLM({}, { chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D{{ messages | length }}' }] });
    expect(listed.applyChatTemplate(messages)).toBe('D3');
    const json = await smolLM({ 'chat_template.json': JSON.stringify({ chat_template: 'J{{ add_generation_prompt }}' }) });
    expect(json.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe('Jtrue');
  });

  it('template errors name the file', async () => {
    const strict = await smolLM({}, { chat_template: "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}" });
    let err: unknown;
    try {
      strict.applyChatTemplate(messages);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolyloraError);
    expect((err as PolyloraError).code).toBe('TOKENIZER_ERROR');
    expect((err as PolyloraError).message).toMatch(/smollm2\/tokenizer_config\.json.*system first/);
    await expect(smolLM({}, { chat_template: '{% for %}' })).rejects.toThrow(/cannot parse the chat template/);
  });
});

describe('IncrementalDecoder on characters split across tokens', () => {
  const text = 'Hi 😀 你好, café 🎉! 日本語のテキスト 👩‍👩‍👧';

  it('byte-level BPE (SmolLM2): deltas concatenate to decode(all), no half character is ever emitted', async () => {
    const tok = await smolLM();
    const ids = tok.encode(text, { addSpecialTokens: false });
    expect(tok.decode(ids)).toBe(text);
    // Some tokens hold only part of a character, so decoding them alone gives U+FFFD.
    expect(ids.some((id) => tok.decode([id]).includes('\uFFFD'))).toBe(true);
    const deltas = stream(tok, ids);
    expect(deltas.join('')).toBe(text);
    expect(deltas.some((d) => d.includes('\uFFFD'))).toBe(false);
    expect(deltas.filter((d) => d === '').length).toBeGreaterThan(1); // held back while incomplete
  });

  // A SentencePiece-style tokenizer with byte fallback, like Llama 2's: characters missing from the vocabulary
  // become <0xXX> byte tokens. Vocabulary: specials, the 256 byte tokens, ▁ and ASCII letters.
  const letters = 'abcdefghijklmnopqrstuvwxyzHT,!';
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  for (const ch of `▁${letters}`) vocab[ch] = Object.keys(vocab).length;
  const byteFallbackTokenizer = {
    version: '1.0',
    added_tokens: ['<unk>', '<s>', '</s>'].map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: [] },
  };

  it('byte fallback: a 4-byte emoji is four tokens, and nothing is emitted until the fourth', async () => {
    const tok = await Tokenizer.fromTree(memoryTree('bytefallback', { 'tokenizer.json': JSON.stringify(byteFallbackTokenizer), 'tokenizer_config.json': JSON.stringify({ bos_token: '<s>', eos_token: '</s>' }) }));
    const sample = 'The cat 😀 sat, 你好!';
    const ids = tok.encode(sample);
    expect(ids[0]).toBe(1);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(sample);
    const emoji = [...new TextEncoder().encode('😀')].map((b) => 3 + b);
    const at = ids.findIndex((_, i) => emoji.every((e, j) => ids[i + j] === e));
    expect(at).toBeGreaterThan(0);
    const deltas = stream(tok, ids.slice(1), ids.slice(0, 1));
    expect(deltas.join('')).toBe(sample);
    expect(deltas.slice(at - 1, at + 2)).toEqual(['', '', '']); // three bytes in: still incomplete
    expect(deltas[at + 2]).toBe('😀');
    expect(deltas.some((d) => d.includes('\uFFFD'))).toBe(false);
  });

  it('flush gives out an incomplete character as U+FFFD', async () => {
    const tok = await Tokenizer.fromTree(memoryTree('bytefallback', { 'tokenizer.json': JSON.stringify(byteFallbackTokenizer) }));
    const dec = new IncrementalDecoder(tok);
    const partial = [...new TextEncoder().encode('a😀')].slice(0, 3).map((b) => 3 + b); // 'a' + 2 of 4 bytes
    expect(partial.map((id) => dec.push(id)).join('')).toBe('a');
    expect(dec.flush()).toMatch(/^\uFFFD+$/);
  });
});
