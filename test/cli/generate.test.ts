// The `polylora` command as a user runs it (node bin/polylora.js, from the build in dist/): golden token ids with
// --json for every base case, streamed text, an adapter with --lora, a requests file mixing adapters with a bad
// line, and errors on stderr with a non-zero exit code. Node only (it spawns processes).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { golden, sharedPath } from '../helpers/shared.js';

const root = resolve(import.meta.dirname, '../..');
const g = golden();
const model = sharedPath(g.model_path);
const adapter = (name: string) => sharedPath(g.adapters[name]!.path);
let tmp: string;

function polylora(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(root, 'bin/polylora.js'), ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  // The command runs the compiled CLI: build it from the current sources (npm test does this too).
  const b = spawnSync('npm', ['run', 'build'], { cwd: root, encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`npm run build failed:\n${b.stdout}\n${b.stderr}`);
  tmp = mkdtempSync(join(tmpdir(), 'polylora-cli-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('polylora generate', () => {
  for (const c of g.cases.filter((x) => x.adapter === null)) {
    it(`--json prints golden token ids and text: ${c.name}`, () => {
      const r = polylora('generate', '--model', model, '--prompt-ids', c.prompt_ids.join(','), '--max-tokens', String(c.max_tokens), '--temperature', '0', '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ token_ids: c.expected_ids, text: c.expected_text });
    });
  }

  it('streams text without --json; a text prompt encodes like golden prompt_ids', () => {
    const c = g.cases[0]!;
    const r = polylora('generate', '--model', model, '--prompt', c.prompt_text, '--max-tokens', String(c.max_tokens), '--temperature', '0');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${c.expected_text}\n`);
  });

  it('--lora applies a PEFT adapter (golden pirate case), --lora-scale 0 gives the base model', () => {
    const c = g.cases.find((x) => x.adapter === 'pirate')!;
    const base = g.cases.find((x) => x.adapter === null && x.name === c.name)!;
    const args = ['generate', '--model', model, '--prompt-ids', c.prompt_ids.join(','), '--max-tokens', '32', '--temperature', '0', '--json', '--lora', adapter('pirate')];
    const r = polylora(...args);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).token_ids).toEqual(c.expected_ids);
    const zero = polylora(...args, '--lora-scale', '0');
    expect(JSON.parse(zero.stdout).token_ids).toEqual(base.expected_ids);
  });

  it('--requests runs every line through one engine, prints results in file order, fails only the bad lines', () => {
    const file = join(tmp, 'requests.jsonl');
    const cases = g.cases.slice(0, 8);
    const lines = cases.map((c, i) =>
      JSON.stringify({
        prompt_ids: c.prompt_ids,
        lora: c.adapter ? adapter(c.adapter) : null,
        max_tokens: c.max_tokens,
        temperature: 0,
        arrival_ms: (i % 3) * 15,
      }),
    );
    lines.splice(3, 0, '{"prompt_ids": [1, 2], "max_tokens": "many"}', '', '# a comment');
    // logit_bias: -100 on golden's first token moves it; a list instead of an object fails its line.
    const c0 = cases[0]!;
    lines.push(JSON.stringify({ prompt_ids: c0.prompt_ids, max_tokens: 4, temperature: 0, logit_bias: { [c0.expected_ids[0]!]: -100 } }));
    lines.push('{"prompt_ids": [1, 2], "logit_bias": [3]}');
    writeFileSync(file, `${lines.join('\n')}\n`);
    const r = polylora('generate', '--model', model, '--requests', file, '--json');
    expect(r.code).toBe(1); // one line failed
    const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { token_ids?: number[]; text?: string; line?: number; error?: string });
    expect(out).toHaveLength(11);
    expect(out[3]).toMatchObject({ line: 4 });
    expect(out[3]!.error).toMatch(/requests\.jsonl:4: .*field "max_tokens".*not a number/);
    expect(r.stderr).toMatch(/line 4:/);
    const [biased, badBias] = out.splice(9, 2);
    expect(biased!.token_ids).toHaveLength(4);
    expect(biased!.token_ids![0]).not.toBe(c0.expected_ids[0]);
    expect(badBias!.error).toMatch(/requests\.jsonl:13: .*field "logit_bias"/);
    const ok = out.filter((o) => o.token_ids);
    ok.forEach((o, i) => expect({ ids: o.token_ids, text: o.text }, cases[i]!.name).toEqual({ ids: cases[i]!.expected_ids, text: cases[i]!.expected_text }));
  });

  it('errors go to stderr with exit code 1 and name what is wrong', () => {
    const missing = polylora('generate', '--model', join(tmp, 'no-such-model'), '--prompt', 'x');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no-such-model: no such folder/);
    expect(missing.stdout).toBe('');
    const badIds = polylora('generate', '--model', model, '--prompt-ids', '1,two,3');
    expect(badIds.code).toBe(1);
    expect(badIds.stderr).toMatch(/--prompt-ids.*"two"/);
    const both = polylora('generate', '--model', model);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/exactly one of --prompt, --prompt-ids and --requests/);
    const badAdapter = polylora('generate', '--model', model, '--prompt-ids', '1,2', '--lora', join(tmp, 'nope'));
    expect(badAdapter.code).toBe(1);
    expect(badAdapter.stderr).toMatch(/nope: no such folder/);
    const unknown = polylora('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
  });
});
