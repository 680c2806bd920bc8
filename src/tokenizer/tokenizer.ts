// A model's tokenizer: tokenizer.json + tokenizer_config.json through @huggingface/tokenizers, the chat template
// through @huggingface/jinja. Works on any FileTree (local folder, Hub cache, browser files, memory).

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { PolyloraError } from '../errors.js';
import type { FileTree } from '../io/source.js';
import { ChatTemplate, type ChatMessage, loadChatTemplate } from './chat-template.js';

export interface EncodeOptions {
  /** Add BOS/EOS as the tokenizer is configured to (default true). Use false for text that already carries them,
   *  e.g. a rendered chat template. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, chat markers) from the text (default false). */
  skipSpecialTokens?: boolean;
}

export interface ChatTemplateOptions {
  /** Append the assistant turn's opening so the model answers (default false). */
  addGenerationPrompt?: boolean;
  /** Extra variables the template may read (e.g. `tools`, `enable_thinking`). */
  variables?: Record<string, unknown>;
}

/** A special token in tokenizer_config.json: a string, or an AddedToken object with `content`. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

export class Tokenizer {
  /** Id of the BOS token named in tokenizer_config.json, or null. */
  readonly bosTokenId: number | null;
  /** Id of the EOS token named in tokenizer_config.json, or null (config.json may name more stop ids). */
  readonly eosTokenId: number | null;
  /** Special-token strings the chat template may use (bos_token, eos_token, unk_token, pad_token). */
  private readonly specialTokens: Record<string, string>;

  private constructor(
    private readonly tk: HfTokenizer,
    private readonly tokenizerConfig: Record<string, unknown>,
    private readonly chatTemplate: ChatTemplate | null,
    readonly label: string,
  ) {
    this.specialTokens = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const s = tokenContent(tokenizerConfig[key]);
      if (s !== null) this.specialTokens[key] = s;
    }
    const id = (key: string): number | null => {
      const s = this.specialTokens[key];
      return s === undefined ? null : (tk.token_to_id(s) ?? null);
    };
    this.bosTokenId = id('bos_token');
    this.eosTokenId = id('eos_token');
  }

  /**
   * Reads tokenizer.json (required), tokenizer_config.json (optional) and the chat template: chat_template.jinja,
   * else chat_template.json, else tokenizer_config.json's `chat_template`.
   */
  static async fromTree(tree: FileTree): Promise<Tokenizer> {
    const tokenizerJson = await readJson(tree, 'tokenizer.json');
    const tokenizerConfig = (await tree.has('tokenizer_config.json')) ? await readJson(tree, 'tokenizer_config.json') : {};
    let tk: HfTokenizer;
    try {
      tk = new HfTokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new PolyloraError('TOKENIZER_ERROR', 'cannot build the tokenizer', {
        file: `${tree.label}/tokenizer.json`,
        found: e instanceof Error ? e.message : String(e),
        hint: 'the tokenizer type may not be supported by @huggingface/tokenizers',
        cause: e,
      });
    }
    const template = await loadChatTemplate(tree, tokenizerConfig);
    return new Tokenizer(tk, tokenizerConfig, template, tree.label);
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplate !== null;
  }

  /**
   * Text -> token ids. With addSpecialTokens, tokenizer.json's post-processor adds BOS/EOS, and
   * tokenizer_config.json's add_bos_token / add_eos_token, where set, override it (as transformers'
   * LlamaTokenizerFast rebuilds its post-processor from them).
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const addSpecial = options.addSpecialTokens ?? true;
    const ids = this.tk.encode(text, { add_special_tokens: addSpecial }).ids;
    if (!addSpecial) return ids;
    const raw = (): number[] => this.tk.encode(text, { add_special_tokens: false }).ids;
    const addBos = this.tokenizerConfig['add_bos_token'];
    const bos = this.bosTokenId;
    if (bos !== null && addBos === true && ids[0] !== bos) ids.unshift(bos);
    if (bos !== null && addBos === false && ids[0] === bos && raw()[0] !== bos) ids.shift();
    const addEos = this.tokenizerConfig['add_eos_token'];
    const eos = this.eosTokenId;
    if (eos !== null && addEos === true && ids[ids.length - 1] !== eos) ids.push(eos);
    if (eos !== null && addEos === false && ids.length > 0 && ids[ids.length - 1] === eos && raw().at(-1) !== eos) ids.pop();
    return ids;
  }

  /** Token ids -> text. clean_up_tokenization_spaces follows tokenizer_config.json (default false, as transformers). */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    return this.tk.decode([...ids], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.tokenizerConfig['clean_up_tokenization_spaces'] === true,
    });
  }

  /** The token's vocabulary string (e.g. `▁the`, `<0xE4>`), or undefined. */
  idToToken(id: number): string | undefined {
    return this.tk.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tk.token_to_id(token);
  }

  /**
   * Renders the chat template as transformers' apply_chat_template(tokenize=False) does: variables `messages`,
   * `add_generation_prompt`, the special-token strings (bos_token, eos_token, ...) and `options.variables`.
   * Encode the result with addSpecialTokens: false (the template writes BOS itself where it wants one).
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.chatTemplate) {
      throw new PolyloraError('TOKENIZER_ERROR', 'this tokenizer has no chat template', {
        file: `${this.label}/tokenizer_config.json`,
        field: 'chat_template',
        hint: 'use plain text prompts (completions) with this model, or give a chat template (chat_template.jinja)',
      });
    }
    return this.chatTemplate.render({
      ...this.specialTokens,
      ...options.variables,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    });
  }
}

async function readJson(tree: FileTree, file: string): Promise<Record<string, unknown>> {
  const text = await tree.text(file);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new PolyloraError('TOKENIZER_ERROR', 'not valid JSON', { file: `${tree.label}/${file}`, found: e instanceof Error ? e.message : String(e), cause: e });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new PolyloraError('TOKENIZER_ERROR', 'expected a JSON object', { file: `${tree.label}/${file}`, found: Array.isArray(v) ? 'an array' : typeof v });
  }
  return v as Record<string, unknown>;
}
