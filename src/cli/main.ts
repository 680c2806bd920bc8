// The `polylora` command: subcommand dispatch, and the one place errors become exit codes.

import { setPlatform } from '../platform/platform.js';
import { nodePlatform } from '../platform/node.js';
import { isPolyloraError } from '../errors.js';
import { GENERATE_USAGE, generateCommand } from './generate.js';
import { MERGE_USAGE, mergeCommand } from './merge.js';
import { SERVE_USAGE, serveCommand } from './serve.js';
import { CHAT_USAGE, chatCommand } from './chat.js';

const USAGE = `polylora — many LoRA adapters on one base model, on WebGPU

usage:
  ${GENERATE_USAGE.split('\n').join('\n  ')}

  ${MERGE_USAGE.split('\n').join('\n  ')}

  ${SERVE_USAGE.split('\n')[0]}
  ${CHAT_USAGE.split('\n')[0]}

Run \`polylora <command> --help\` for a command's options.`;

const COMMANDS: Record<string, { usage: string; run: (argv: string[]) => Promise<number | void> }> = {
  generate: { usage: GENERATE_USAGE, run: generateCommand },
  merge: { usage: MERGE_USAGE, run: mergeCommand },
  serve: { usage: SERVE_USAGE, run: serveCommand },
  chat: { usage: CHAT_USAGE, run: chatCommand },
};

export async function main(argv: string[]): Promise<number> {
  setPlatform(nodePlatform);
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`polylora: unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(', ')})\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${cmd.usage}\n`);
    return 0;
  }
  try {
    return (await cmd.run(rest)) ?? 0;
  } catch (e) {
    if (isPolyloraError(e)) {
      process.stderr.write(`polylora ${name}: error: ${e.message}\n`);
    } else if (e instanceof Error && (e as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`polylora ${name}: ${e.message}\n\n${cmd.usage}\n`);
    } else {
      process.stderr.write(`polylora ${name}: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    }
    return 1;
  }
}
