import assert from "node:assert/strict";
import { test } from "node:test";
import { planStack } from "../plan/plan";

// TURN over TLS when a certificate is configured (as secrets): the local stack with both set.
test("with turnTlsCertPem and turnTlsKeyPem set, coTURN listens with TLS and gets them as secret files", async () => {
  const plan = await planStack("local", {
    "hardened-matrix:turnTlsCertPem": { secure: "v1:cert" },
    "hardened-matrix:turnTlsKeyPem": { secure: "v1:key" },
  });
  assert.equal(plan.error, undefined, String(plan.error));
  const conf = plan.files.find((f) => f.path === "coturn-config/turnserver.conf")!.content;
  assert.match(conf, /^tls-listening-port=5349$/m);
  assert.match(conf, /^cert=\/run\/secrets\/turn-cert\.pem$/m);
  assert.match(conf, /^pkey=\/run\/secrets\/turn-key\.pem$/m);
  assert.doesNotMatch(conf, /^no-tls$/m);
  const service = plan.resources.find((r) => r.name === "coturn-service")!.inputs as any;
  const files = service.taskSpec.containerSpec.secrets.map((s: any) => [s.fileName, s.fileMode]);
  assert.deepEqual(files.sort(), [
    ["/etc/coturn/turnserver.conf", 0o400],
    ["/run/secrets/turn-cert.pem", 0o400],
    ["/run/secrets/turn-key.pem", 0o400],
  ]);
  for (const name of ["coturn-tls-cert", "coturn-tls-key"]) {
    assert.equal((plan.resources.find((r) => r.name === name)!.inputs as any).data, "[secret]");
  }
  const dendrite = plan.files.find((f) => f.path === "dendrite-config/dendrite.yaml")!.content;
  assert.match(dendrite, /turns:matrix\.localhost:5349\?transport=tcp/);
});
