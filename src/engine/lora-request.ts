// What a request says about its adapter, in the shape of vLLM's LoRARequest: a name, an id, where the PEFT files
// are (local folder, Hub id `org/name[@rev]`, or a FileTree), and polylora's per-request scale multiplier.

import { PolyloraError } from '../errors.js';
import type { FileTree } from '../io/source.js';

export interface LoRARequestInit {
  /** The name requests and the registry use. */
  name: string;
  /** vLLM's lora_int_id; informational here (names identify adapters). */
  id?: number;
  /** Folder, Hub id or FileTree of the adapter. */
  path: string | FileTree;
  /** Multiplies the adapter's own scale (alpha / r) for this request only; default 1, 0 = base model (plain LoRA; DoRA keeps its magnitudes). */
  scale?: number;
}

export class LoRARequest implements LoRARequestInit {
  readonly name: string;
  readonly id?: number;
  readonly path: string | FileTree;
  readonly scale: number;

  constructor(name: string, id: number | undefined, path: string | FileTree, options: { scale?: number } = {}) {
    const scale = options.scale ?? 1;
    if (typeof name !== 'string' || name === '') {
      throw new PolyloraError('INVALID_ARGUMENT', 'a LoRA request needs a name', { field: 'name', found: JSON.stringify(name) });
    }
    if (!Number.isFinite(scale)) {
      throw new PolyloraError('INVALID_ARGUMENT', `LoRA request "${name}": bad scale`, {
        field: 'scale',
        expected: 'a finite number (1 = the adapter as trained)',
        found: String(options.scale),
      });
    }
    this.name = name;
    this.id = id;
    this.path = path;
    this.scale = scale;
  }

  static from(r: LoRARequest | LoRARequestInit): LoRARequest {
    return r instanceof LoRARequest ? r : new LoRARequest(r.name, r.id, r.path, { scale: r.scale });
  }
}
