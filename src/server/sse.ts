// Server-sent events as OpenAI streams them: `data: <json>\n\n` per chunk, `data: [DONE]\n\n` at the end. Headers go
// out at once (as vLLM's StreamingResponse), so errors after the start arrive as a `data: {"error": ...}` event.

import type { ServerResponse } from 'node:http';

export class SseWriter {
  private readonly res: ServerResponse;

  constructor(res: ServerResponse, headers: Record<string, string> = {}) {
    this.res = res;
    res.writeHead(200, {
      ...headers,
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    // Tokens are small writes: send each at once rather than waiting for Nagle.
    res.socket?.setNoDelay(true);
    res.flushHeaders();
  }

  /** False once the client is gone or the stream ended. */
  get open(): boolean {
    return !this.res.writableEnded && !this.res.destroyed;
  }

  send(data: unknown): void {
    if (this.open) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Writes `[DONE]` and ends the response. */
  done(): void {
    if (!this.open) return;
    this.res.write('data: [DONE]\n\n');
    this.res.end();
  }
}
