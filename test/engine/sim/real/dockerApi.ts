import * as http from "node:http";

/** The Docker Engine API over a unix socket, with node's http (no client library). */
export class DockerApi {
  constructor(readonly socketPath: string) {}

  static fromHost(host: string): DockerApi {
    if (!host.startsWith("unix://")) throw new Error(`HM_REAL_DOCKER_HOST must be unix:///path/to/docker.sock, got ${host}`);
    return new DockerApi(host.slice("unix://".length));
  }

  request(method: string, path: string, body?: unknown, timeoutMs = 60_000): Promise<{ status: number; body: unknown; raw: Buffer }> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: { Host: "docker", ...(data ? { "Content-Type": "application/json", "Content-Length": data.length } : {}) },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            const raw = Buffer.concat(chunks);
            const text = raw.toString("utf8");
            let parsed: unknown = text;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              // a plain-text answer (logs, errors of old engines)
            }
            resolve({ status: res.statusCode ?? 0, body: parsed, raw });
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`(docker) ${method} ${path}: no answer in ${timeoutMs} ms`)));
      req.on("error", reject);
      if (data) req.write(data);
      req.end();
    });
  }

  /** The answer's body, or an error with the engine's own message. */
  async call<T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const r = await this.request(method, path, body, timeoutMs);
    if (r.status >= 200 && r.status < 300) return r.body as T;
    throw new DockerError(r.status, `(docker) ${method} ${path.split("?")[0]}: ${r.status} ${messageOf(r.body)}`);
  }
}

/** The last lines a container logged (the API's multiplexed stream: 8-byte frame headers). */
export async function containerLogs(api: DockerApi, id: string, tail = 10): Promise<string> {
  const r = await api.request("GET", `/containers/${id}/logs?stdout=1&stderr=1&tail=${tail}`);
  if (r.status !== 200) return "";
  const out: Buffer[] = [];
  let i = 0;
  while (i + 8 <= r.raw.length) {
    const size = r.raw.readUInt32BE(i + 4);
    out.push(r.raw.subarray(i + 8, i + 8 + size));
    i += 8 + size;
  }
  return Buffer.concat(out).toString("utf8");
}

export class DockerError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function messageOf(body: unknown): string {
  if (body && typeof body === "object" && "message" in body) return String((body as { message: unknown }).message);
  return typeof body === "string" ? body.trim() : JSON.stringify(body);
}

export const filters = (f: Record<string, string[]>): string => encodeURIComponent(JSON.stringify(f));
