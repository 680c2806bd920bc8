// Chat templates: where a model keeps its Jinja template, and rendering it with @huggingface/jinja.

import { Template } from '@huggingface/jinja';
import { PolyloraError } from '../errors.js';
import type { FileTree } from '../io/source.js';

/** One chat turn as OpenAI / transformers pass it; templates may read extra fields (tool_calls, name, ...). */
export interface ChatMessage {
  role: string;
  content: string;
  [field: string]: unknown;
}

export class ChatTemplate {
  private readonly template: Template;

  /** `source` names where the template came from, for messages. */
  constructor(
    readonly text: string,
    readonly source: string,
  ) {
    try {
      this.template = new Template(text);
    } catch (e) {
      throw new PolyloraError('TOKENIZER_ERROR', 'cannot parse the chat template', {
        file: source,
        found: e instanceof Error ? e.message : String(e),
        cause: e,
      });
    }
  }

  render(variables: Record<string, unknown>): string {
    try {
      return this.template.render(variables);
    } catch (e) {
      throw new PolyloraError('TOKENIZER_ERROR', 'the chat template failed', {
        file: this.source,
        found: e instanceof Error ? e.message : String(e),
        hint: 'templates raise errors for message orders they do not accept (e.g. roles not alternating)',
        cause: e,
      });
    }
  }
}

/**
 * Finds the template, newest convention first: chat_template.jinja; chat_template.json's `chat_template`;
 * tokenizer_config.json's `chat_template` (a string, or a list of {name, template} of which "default" is taken).
 * Returns null when the model has none.
 */
export async function loadChatTemplate(tree: FileTree, tokenizerConfig: Record<string, unknown>): Promise<ChatTemplate | null> {
  if (await tree.has('chat_template.jinja')) {
    return new ChatTemplate(await tree.text('chat_template.jinja'), `${tree.label}/chat_template.jinja`);
  }
  if (await tree.has('chat_template.json')) {
    const file = `${tree.label}/chat_template.json`;
    let json: unknown;
    try {
      json = JSON.parse(await tree.text('chat_template.json'));
    } catch (e) {
      throw new PolyloraError('TOKENIZER_ERROR', 'not valid JSON', { file, found: e instanceof Error ? e.message : String(e), cause: e });
    }
    const t = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['chat_template'] : undefined;
    return fromField(t, file);
  }
  return fromField(tokenizerConfig['chat_template'], `${tree.label}/tokenizer_config.json`);
}

function fromField(value: unknown, file: string): ChatTemplate | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return new ChatTemplate(value, file);
  if (Array.isArray(value)) {
    const named = value.find((t): t is { name: string; template: string } => typeof t === 'object' && t !== null && t.name === 'default' && typeof t.template === 'string');
    if (named) return new ChatTemplate(named.template, `${file} (template "default")`);
  }
  throw new PolyloraError('TOKENIZER_ERROR', 'unrecognized chat template', {
    file,
    field: 'chat_template',
    expected: 'a string, or a list of {name, template} with a "default" entry',
    found: JSON.stringify(value).slice(0, 80),
  });
}
