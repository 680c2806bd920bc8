// `polylora merge`: a base model + a PEFT LoRA adapter -> a plain model folder with the adapter merged in.
// The folder is written under a temporary name beside --out and renamed into place at the end, so --out is
// either absent, the old folder (--force not given, or a failure), or the complete new one.

import { randomUUID } from 'node:crypto';
import { mkdir, open, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { PolyloraError } from '../errors.js';
import type { DType } from '../io/dtype.js';
import { resolveModelFiles } from '../engine/load.js';
import { defaultAdapterName } from '../lora/adapter.js';
import { mergeModelFolder, type MergeSink } from '../lora/merge.js';
import { num, str, usageError } from './args.js';

export const MERGE_USAGE = `polylora merge --model <dir|org/name[@rev]> --lora <dir|org/name[@rev]> --out <dir> [options]

  --model M            base model: local folder or Hugging Face Hub id
  --lora L             PEFT LoRA adapter: local folder (adapter_config.json + adapter_model.safetensors) or Hub id
  --out DIR            folder to write (model.safetensors, config.json, tokenizer and generation files)
  --scale S            multiply the adapter's scale (default 1)
  --dtype D            f32, f16 or bf16 for every weight (default: keep the base's dtype)
  --force              replace --out if it exists
  --revision R         Hub branch, tag or commit of --model
  --lora-revision R    Hub branch, tag or commit of --lora

Writes one model.safetensors however large (no sharding). If the base ties its embeddings and the adapter adapts
embed_tokens or lm_head, the merged model stores both matrices and sets tie_word_embeddings to false.`;

const DTYPES: Record<string, DType> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export async function mergeCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      model: { type: 'string', short: 'm' },
      lora: { type: 'string' },
      out: { type: 'string', short: 'o' },
      scale: { type: 'string' },
      dtype: { type: 'string' },
      force: { type: 'boolean' },
      revision: { type: 'string' },
      'lora-revision': { type: 'string' },
    },
  });
  const model = str(values, 'model');
  const lora = str(values, 'lora');
  const out = str(values, 'out');
  if (!model || !lora || !out) throw usageError('--model, --lora and --out are required', 'e.g. polylora merge --model ./base --lora ./adapter --out ./merged');
  const dtypeName = str(values, 'dtype');
  const dtype = dtypeName === undefined ? undefined : DTYPES[dtypeName];
  if (dtypeName !== undefined && dtype === undefined) {
    throw new PolyloraError('INVALID_ARGUMENT', 'bad value for --dtype', { field: '--dtype', expected: 'f32, f16 or bf16', found: JSON.stringify(dtypeName) });
  }
  const scale = num(values, 'scale') ?? 1;
  const force = values.force === true;

  const outDir = resolve(out);
  const existing = await stat(outDir).catch(() => undefined);
  if (existing && !force) {
    throw new PolyloraError('INVALID_ARGUMENT', 'output folder already exists', { field: '--out', found: outDir, hint: 'pick a new folder, or pass --force to replace it' });
  }
  const baseTree = await resolveModelFiles(model, { revision: str(values, 'revision') });
  const adapterTree = await resolveModelFiles(lora, { revision: str(values, 'lora-revision') });

  await mkdir(dirname(outDir), { recursive: true });
  const tmp = join(dirname(outDir), `.${basename(outDir)}.tmp-${randomUUID()}`);
  await mkdir(tmp);
  try {
    const report = await mergeModelFolder(baseTree, adapterTree, dirSink(tmp), { scale, dtype, baseName: model, adapterName: defaultAdapterName(lora) });
    for (const w of report.warnings) process.stderr.write(`polylora merge: warning: ${w}\n`);
    if (existing) {
      const old = join(dirname(outDir), `.${basename(outDir)}.old-${randomUUID()}`);
      await rename(outDir, old);
      await rename(tmp, outDir);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, outDir);
    }
    const a = report.adapter;
    process.stderr.write(
      `polylora merge: merged "${a.name}" (rank ${a.rank}, ${a.modules.size} modules, scale x${scale}) into ` +
        `${report.mergedTensors.length} tensors${report.untied ? ' (embeddings untied)' : ''}; wrote ${outDir}: ${report.files.join(', ')}\n`,
    );
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Writes each file into `dir`; streamed data chunk by chunk. */
function dirSink(dir: string): MergeSink {
  return {
    async writeFile(name, data) {
      const path = join(dir, name);
      if (typeof data === 'string' || data instanceof Uint8Array) {
        await writeFile(path, data);
        return;
      }
      const fh = await open(path, 'w');
      try {
        for await (const chunk of data) {
          for (let done = 0; done < chunk.byteLength; ) done += (await fh.write(chunk, done, chunk.byteLength - done)).bytesWritten;
        }
      } finally {
        await fh.close();
      }
    },
  };
}
