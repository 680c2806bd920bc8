// Opens a checkpoint from a folder: one safetensors file (`model.safetensors`, or another name such as
// `adapter_model.safetensors`) or a sharded set (`<file>.index.json` whose weight_map names each tensor's shard).
// Only headers are read here; tensor bytes are read by byte range when asked for.
//
// Aliases: safetensors' `save_model` drops tensors that share storage with another and records
// `__metadata__[dropped] = kept`; TinyStories stores only `lm_head.weight` with
// `"model.embed_tokens.weight": "lm_head.weight"`. A metadata entry is an alias when its key is not a stored
// tensor and its value is. An entry that looks like one (both sides dotted parameter paths with the same last
// segment, e.g. `a.weight` -> `b.weight`) but whose target is missing is an error naming both.

import { PolyloraError } from '../errors.js';
import type { Checkpoint, TensorInfo } from './checkpoint-types.js';
import { asDType, toFloat32, type DType } from './dtype.js';
import { METADATA_KEY, parseSafetensorsHeader, type SafetensorsDType, type SafetensorsFile } from './safetensors.js';
import type { ByteSource, FileTree } from './source.js';

export interface OpenCheckpointOptions {
  /** The single-file name; its sharded form is `<file>.index.json`. Default `model.safetensors`. */
  file?: string;
}

/** A tensor as stored in a file, whatever its dtype. */
export interface StoredTensor {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** The ByteSource name of its file (shard). */
  file: string;
  /** Absolute byte offset in that file. */
  offset: number;
  byteLength: number;
}

export interface SafetensorsCheckpoint extends Checkpoint {
  /** Every tensor the files hold, in file order, any dtype, aliases excluded. `tensors` holds the F32/F16/BF16 ones. */
  readonly stored: ReadonlyMap<string, StoredTensor>;
  /** Alias name -> stored tensor name, from `__metadata__`. */
  readonly aliases: ReadonlyMap<string, string>;
  /**
   * The TensorInfo of a tensor or alias. Throws DTYPE_UNSUPPORTED for a stored tensor polylora cannot compute
   * with, WEIGHTS_MISMATCH for an unknown name (with the closest names as hint).
   */
  info(name: string): TensorInfo;
  /** Raw bytes of a stored tensor of any dtype, for copying it unchanged. */
  rawBytes(name: string): Promise<Uint8Array>;
}

const DEFAULT_FILE = 'model.safetensors';

/** Opens `<file>` if the folder has it, else `<file>.index.json` and its shards. */
export async function openCheckpoint(tree: FileTree, options: OpenCheckpointOptions = {}): Promise<SafetensorsCheckpoint> {
  const file = options.file ?? DEFAULT_FILE;
  if (await tree.has(file)) return openSafetensors(await tree.open(file), tree.label);
  const indexFile = `${file}.index.json`;
  if (await tree.has(indexFile)) return openSharded(tree, indexFile);
  throw new PolyloraError('FILE_NOT_FOUND', 'no checkpoint in folder', {
    file: `${tree.label}/${file}`,
    expected: `${file} or ${indexFile}`,
    found: 'neither',
    hint:
      'is this the right folder? PEFT adapters use adapter_model.safetensors; ' +
      '.bin / .pt checkpoints must be converted to safetensors',
  });
}

/** A checkpoint of one safetensors file (e.g. an adapter passed as bytes). Takes ownership of `src`. */
export async function openSafetensors(src: ByteSource, label: string = src.name): Promise<SafetensorsCheckpoint> {
  return openFiles(label, [src]);
}

async function openSharded(tree: FileTree, indexFile: string): Promise<SafetensorsCheckpoint> {
  const indexPath = `${tree.label}/${indexFile}`;
  const weightMap = parseIndex(indexPath, await tree.text(indexFile));
  const tensorsOf = new Map<string, string[]>(); // shard -> tensors the index puts there
  for (const [tensor, shard] of weightMap) {
    const list = tensorsOf.get(shard) ?? [];
    list.push(tensor);
    tensorsOf.set(shard, list);
  }
  for (const [shard, tensors] of tensorsOf) {
    if (!(await tree.has(shard))) {
      throw new PolyloraError('FILE_NOT_FOUND', 'shard named in the index is missing', {
        file: `${tree.label}/${shard}`,
        tensor: tensors[0],
        field: `${indexFile} weight_map`,
        expected: `a file holding ${tensors.length} tensor(s)`,
        found: 'no such file',
        hint: 'the download is incomplete; fetch every shard the index lists',
      });
    }
  }
  const sources: ByteSource[] = [];
  const shardSource = new Map<string, string>(); // shard file -> ByteSource name
  try {
    for (const shard of tensorsOf.keys()) {
      const src = await tree.open(shard);
      sources.push(src);
      shardSource.set(shard, src.name);
    }
  } catch (e) {
    await Promise.all(sources.map((s) => s.close()));
    throw e;
  }
  const ckpt = await openFiles(tree.label, sources);
  try {
    for (const [tensor, shard] of weightMap) {
      const s = ckpt.stored.get(tensor);
      if (s?.file === shardSource.get(shard) || ckpt.aliases.has(tensor)) continue;
      const what = s ? 'tensor is in a different shard than the index says' : 'tensor named in the index is not in its shard';
      throw new PolyloraError('SAFETENSORS_INVALID', what, {
        file: shardSource.get(shard),
        tensor,
        field: `${indexFile} weight_map`,
        expected: `"${tensor}" in ${shard}`,
        found: s ? `it in ${s.file}` : `${ckpt.stored.size} other tensors across ${sources.length} shard(s)`,
        hint: 'the index and shards come from different exports; re-download them together',
      });
    }
  } catch (e) {
    await ckpt.close();
    throw e;
  }
  return ckpt;
}

/** weight_map entries of a `*.safetensors.index.json`: tensor -> shard file (relative, inside the folder). */
function parseIndex(indexPath: string, text: string): [string, string][] {
  const bad = (what: string, field: string, expected: string, found: string, tensor?: string): PolyloraError =>
    new PolyloraError('SAFETENSORS_INVALID', what, {
      file: indexPath,
      tensor,
      field,
      expected,
      found,
      hint: 'the index is corrupt; re-download it',
    });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad('index is not valid JSON', 'index', 'a JSON object with "weight_map"', (e as Error).message);
  }
  const weightMap = isObject(json) ? json.weight_map : undefined;
  if (!isObject(weightMap)) {
    const found = JSON.stringify(weightMap) ?? 'nothing';
    throw bad('index has no weight_map object', 'weight_map', 'an object tensor -> shard file', found);
  }
  const entries = Object.entries(weightMap);
  if (entries.length === 0) throw bad('index lists no tensors', 'weight_map', 'at least one tensor -> shard entry', '{}');
  for (const [tensor, shard] of entries) {
    if (typeof shard !== 'string' || shard === '' || shard.startsWith('/') || shard.split(/[\\/]/).includes('..')) {
      throw bad('bad shard file name', 'weight_map', 'a file name inside the folder', JSON.stringify(shard), tensor);
    }
  }
  return entries as [string, string][];
}

/** Parses every file's header and builds the checkpoint; closes the sources if anything is invalid. */
async function openFiles(label: string, sources: ByteSource[]): Promise<SafetensorsCheckpoint> {
  try {
    const headers: SafetensorsFile[] = [];
    for (const src of sources) headers.push(await parseSafetensorsHeader(src));
    return build(label, sources, headers);
  } catch (e) {
    await Promise.all(sources.map((s) => s.close()));
    throw e;
  }
}

function build(label: string, sources: ByteSource[], headers: SafetensorsFile[]): SafetensorsCheckpoint {
  const stored = new Map<string, StoredTensor>();
  const metadata = new Map<string, { value: string; file: string }>(); // first shard's value wins
  for (const h of headers) {
    for (const e of h.tensors.values()) {
      const other = stored.get(e.name);
      if (other) {
        throw new PolyloraError('SAFETENSORS_INVALID', 'tensor stored in two shards', {
          file: h.file,
          tensor: e.name,
          expected: 'each tensor in exactly one shard',
          found: `it in ${other.file} and ${h.file}`,
          hint: 'the shards come from different exports; re-download them together',
        });
      }
      stored.set(e.name, {
        name: e.name,
        dtype: e.dtype,
        shape: e.shape,
        file: h.file,
        offset: e.offset,
        byteLength: e.byteLength,
      });
    }
    for (const [k, v] of Object.entries(h.metadata)) if (!metadata.has(k)) metadata.set(k, { value: v, file: h.file });
  }

  const aliases = new Map<string, string>();
  for (const [key, { value, file }] of metadata) {
    if (stored.has(key)) continue;
    if (stored.has(value)) aliases.set(key, value);
    else if (looksLikeAlias(key, value)) throw missingTarget(file, key, value);
  }

  const tensors = new Map<string, TensorInfo>();
  const asInfo = (name: string, s: StoredTensor, dtype: DType): TensorInfo => ({
    name, dtype, shape: s.shape, file: s.file, offset: s.offset, byteLength: s.byteLength,
  });
  for (const s of stored.values()) if (isComputeDType(s.dtype)) tensors.set(s.name, asInfo(s.name, s, s.dtype));
  for (const [alias, target] of aliases) {
    const s = stored.get(target)!;
    if (isComputeDType(s.dtype)) tensors.set(alias, asInfo(alias, s, s.dtype));
  }

  const sourceByName = new Map(sources.map((s) => [s.name, s]));
  const metadataRecord = Object.fromEntries([...metadata].map(([k, { value }]) => [k, value]));

  const info = (name: string): TensorInfo => {
    const t = tensors.get(name);
    if (t) return t;
    const s = stored.get(aliases.get(name) ?? name);
    if (s) asDType(s.dtype, { file: s.file, tensor: name }); // throws: stored, but not F32/F16/BF16
    const meta = metadata.get(name);
    if (meta) throw missingTarget(meta.file, name, meta.value);
    throw unknownTensor(label, name, [...stored.keys(), ...aliases.keys()]);
  };
  const read = async (file: string, tensor: string, offset: number, length: number): Promise<Uint8Array> => {
    try {
      return await sourceByName.get(file)!.read(offset, length);
    } catch (e) {
      throw new PolyloraError(e instanceof PolyloraError ? e.code : 'SAFETENSORS_INVALID', 'cannot read tensor bytes', {
        file,
        tensor,
        expected: `${length} bytes at offset ${offset}`,
        found: e instanceof Error ? e.message : String(e),
        hint: 'the file changed or was truncated after it was opened, or the checkpoint was closed',
        cause: e,
      });
    }
  };

  return {
    label,
    tensors,
    metadata: metadataRecord,
    stored,
    aliases,
    info,
    async bytes(name) {
      const t = info(name);
      return read(t.file, name, t.offset, t.byteLength);
    },
    async float32(name) {
      const t = info(name);
      return toFloat32(await read(t.file, name, t.offset, t.byteLength), t.dtype);
    },
    async rawBytes(name) {
      const s = stored.get(name);
      if (!s) throw unknownTensor(label, name, [...stored.keys()]);
      return read(s.file, name, s.offset, s.byteLength);
    },
    async close() {
      await Promise.all(sources.map((s) => s.close()));
    },
  };
}

/** True for the dtypes polylora computes with (dtype.ts DType). */
export function isComputeDType(d: SafetensorsDType): d is DType {
  return d === 'F32' || d === 'F16' || d === 'BF16';
}

const PARAM_PATH = /^[\w-]+(\.[\w-]+)+$/;

/** `a.b.weight` -> `c.weight`: both dotted parameter paths ending in the same segment (not e.g. "format": "pt"). */
function looksLikeAlias(key: string, value: string): boolean {
  const last = (s: string): string => s.slice(s.lastIndexOf('.'));
  return PARAM_PATH.test(key) && PARAM_PATH.test(value) && last(key) === last(value);
}

function missingTarget(file: string, alias: string, target: string): PolyloraError {
  return new PolyloraError('SAFETENSORS_INVALID', `alias "${alias}" -> "${target}": target is not in the checkpoint`, {
    file,
    tensor: alias,
    field: METADATA_KEY,
    expected: `a stored tensor named "${target}"`,
    found: 'no such tensor',
    hint: 'the file was edited or exported incompletely; the alias must name a tensor the file stores',
  });
}

function unknownTensor(label: string, name: string, names: string[]): PolyloraError {
  const close = closestNames(name, names, 3);
  return new PolyloraError('WEIGHTS_MISMATCH', 'no such tensor in the checkpoint', {
    file: label,
    tensor: name,
    found: `${names.length} other tensors`,
    hint: close.length
      ? `closest names: ${close.map((n) => `"${n}"`).join(', ')}; is this the right model/adapter for the architecture?`
      : 'the checkpoint holds no tensors; is this the right file?',
  });
}

/** The `n` names closest to `name` by edit distance (ties keep file order). */
function closestNames(name: string, names: string[], n: number): string[] {
  return names
    .map((c, i) => ({ c, i, d: editDistance(name, c) }))
    .sort((a, b) => a.d - b.d || a.i - b.i)
    .slice(0, n)
    .map((x) => x.c);
}

/** Levenshtein distance, two rows. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  let cur = new Array<number>(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length]!;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
