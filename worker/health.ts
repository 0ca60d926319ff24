/**
 * The worker's health endpoint, for Kubernetes probes (deploy/worker-deployment.yaml) and `pgmove health`:
 *   GET /livez  — 200 while the worker runs (the event loop answers; the worker has not failed or stopped)
 *   GET /readyz — 200 when it is also polling its task queue and Temporal answers (GetSystemInfo, ≤ 5 s)
 * Both answer JSON with the worker's state. Bound to the given host (all interfaces in a pod).
 */
import { createServer, type Server } from 'node:http';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { errorMessage } from '../src/error-text';

export interface HealthSource {
  worker?: Worker;
  connection?: NativeConnection;
}

export async function startHealthServer(port: number, source: HealthSource, host = '0.0.0.0'): Promise<Server> {
  const server = createServer((request, response) => {
    void answer(request.url ?? '/', source).then(({ code, body }) => {
      response.writeHead(code, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body) + '\n');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

async function answer(url: string, source: HealthSource): Promise<{ code: number; body: Record<string, unknown> }> {
  const state = source.worker?.getState() ?? 'STARTING';
  const alive = !['FAILED', 'STOPPED'].includes(state);
  if (url.startsWith('/livez')) return { code: alive ? 200 : 503, body: { state } };
  if (url.startsWith('/readyz')) {
    if (state !== 'RUNNING' || !source.connection) return { code: 503, body: { state, temporal: 'not connected' } };
    try {
      const deadline = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('Temporal did not answer within 5 s')), 5000).unref());
      await Promise.race([source.connection.workflowService.getSystemInfo({}), deadline]);
      return { code: 200, body: { state, temporal: 'ok' } };
    } catch (error) {
      return { code: 503, body: { state, temporal: errorMessage(error) } };
    }
  }
  return { code: 404, body: { error: 'GET /livez or /readyz' } };
}

/** `pgmove health`: exit 0 when the endpoint answers 200 within the timeout. */
export async function checkHealth(url: string, timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return { ok: response.status === 200, detail: `${response.status} ${(await response.text()).trim()}` };
  } catch (error) {
    return { ok: false, detail: errorMessage(error) };
  }
}
