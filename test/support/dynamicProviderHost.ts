import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as pulumi from "@pulumi/pulumi";
import * as structproto from "google-protobuf/google/protobuf/struct_pb";
// The SDK's own generated gRPC client and messages: the engine speaks to the host through these.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const provrpc = require("@pulumi/pulumi/proto/provider_grpc_pb") as { ResourceProviderClient: new (address: string, creds: grpc.ChannelCredentials) => grpc.Client };
import * as provproto from "@pulumi/pulumi/proto/provider_pb";

/**
 * Pulumi's real dynamic-provider host (node_modules/@pulumi/pulumi/cmd/dynamic-provider/index.js),
 * the process the engine starts for `pulumi.dynamic.Resource`s, driven over gRPC as the engine
 * drives it: Create, Diff (olds = the old outputs, news = the new inputs) and Update. The provider
 * travels as the engine stores it, serialized by the SDK's closure serializer in `__provider`.
 */
export type DiffAnswer = { changes: "unknown" | "none" | "some"; replaces: string[]; deleteBeforeReplace: boolean };
type Props = Record<string, unknown>;

export async function serializeProvider(provider: pulumi.dynamic.ResourceProvider): Promise<string> {
  // As pulumi/dynamic/index.js serializeProvider does.
  return (await pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true })).text;
}

export class DynamicProviderHost {
  private constructor(
    private readonly child: ChildProcess,
    private readonly client: grpc.Client,
  ) {}

  static async start(): Promise<DynamicProviderHost> {
    const entry = require.resolve("@pulumi/pulumi/cmd/dynamic-provider/index.js");
    // The one argument is the engine's address; the host only checks that it is there.
    const child = spawn(process.execPath, [entry, "127.0.0.1:1"], { cwd: path.dirname(entry), stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    child.stderr!.on("data", (d) => (err += String(d)));
    const port = await new Promise<number>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`dynamic provider host did not start: ${err}`)), 30_000);
      child.stdout!.on("data", (d) => {
        out += String(d);
        const m = /^(\d+)\s*$/m.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.on("exit", (code) => reject(new Error(`dynamic provider host exited ${code}: ${err}`)));
    });
    return new DynamicProviderHost(child, new provrpc.ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure()));
  }

  stop(): void {
    this.client.close();
    this.child.kill("SIGTERM");
  }

  private rpc<Req, Res>(method: string, req: Req): Promise<Res> {
    return new Promise((resolve, reject) => {
      const fn = (this.client as unknown as Record<string, (r: Req, cb: (e: grpc.ServiceError | null, r: Res) => void) => void>)[method]!;
      fn.call(this.client, req, (e, r) => (e ? reject(new Error(`${method}: ${e.details || e.message}`)) : resolve(r)));
    });
  }

  async create(urn: string, props: Props): Promise<{ id: string; outs: Props }> {
    const req = new provproto.CreateRequest();
    req.setUrn(urn);
    req.setProperties(structproto.Struct.fromJavaScript(props as Record<string, structproto.JavaScriptValue>));
    const res = await this.rpc<provproto.CreateRequest, provproto.CreateResponse>("create", req);
    return { id: res.getId(), outs: res.getProperties()!.toJavaScript() };
  }

  async diff(urn: string, id: string, oldInputs: Props, olds: Props, news: Props): Promise<DiffAnswer> {
    const req = new provproto.DiffRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setOldInputs(structproto.Struct.fromJavaScript(oldInputs as Record<string, structproto.JavaScriptValue>));
    req.setOlds(structproto.Struct.fromJavaScript(olds as Record<string, structproto.JavaScriptValue>));
    req.setNews(structproto.Struct.fromJavaScript(news as Record<string, structproto.JavaScriptValue>));
    const res = await this.rpc<provproto.DiffRequest, provproto.DiffResponse>("diff", req);
    const C = provproto.DiffResponse.DiffChanges;
    const changes = res.getChanges() === C.DIFF_NONE ? "none" : res.getChanges() === C.DIFF_SOME ? "some" : "unknown";
    return { changes, replaces: res.getReplacesList(), deleteBeforeReplace: res.getDeletebeforereplace() };
  }

  async update(urn: string, id: string, oldInputs: Props, olds: Props, news: Props): Promise<Props> {
    const req = new provproto.UpdateRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setOldInputs(structproto.Struct.fromJavaScript(oldInputs as Record<string, structproto.JavaScriptValue>));
    req.setOlds(structproto.Struct.fromJavaScript(olds as Record<string, structproto.JavaScriptValue>));
    req.setNews(structproto.Struct.fromJavaScript(news as Record<string, structproto.JavaScriptValue>));
    const res = await this.rpc<provproto.UpdateRequest, provproto.UpdateResponse>("update", req);
    return res.getProperties()!.toJavaScript();
  }
}

/**
 * What the engine does with a Diff answer (pulumi/pulumi pkg/resource/deploy/step_generator.go
 * diffResource): DIFF_UNKNOWN falls back to comparing the old and new inputs, `__provider`
 * included, so any change of the serialized provider becomes DIFF_SOME.
 */
export function engineDecision(answer: DiffAnswer, oldInputs: Props, news: Props): "same" | "update" | "replace" {
  if (answer.replaces.length > 0) return "replace";
  if (answer.changes === "none") return "same";
  if (answer.changes === "some") return "update";
  return JSON.stringify(sortKeys(oldInputs)) === JSON.stringify(sortKeys(news)) ? "same" : "update";
}

function sortKeys(o: Props): Props {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}
