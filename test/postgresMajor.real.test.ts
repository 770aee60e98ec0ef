import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { DEFAULT_IMAGES, postgresMajor } from "../components/settings";
import { findTools } from "./support/realTool";

// Why images.postgres may not change major version (components/settings.ts postgresMajorProblem):
// a real PostgreSQL refuses a data directory another major version wrote, so the service would stay
// down. Judged by Debian's PostgreSQL on a data directory marked as the pinned major's.

const isRoot = process.getuid?.() === 0;
const { tools, skip } = findTools({ initdb: ["initdb", "postgresql"], postgres: ["postgres", "postgresql"], ...(isRoot ? { setpriv: ["setpriv", "util-linux"] } : {}) });
const dir = mkdtempSync(join(tmpdir(), "hm-pgmajor-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const asPostgres = (file: string, args: string[]): [string, string[]] =>
  isRoot ? [tools.setpriv!, ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", file, ...args]] : [file, args];

test("PostgreSQL will not open a data directory of another major version", { skip, timeout: 120_000 }, () => {
  const data = join(dir, "data");
  if (isRoot) {
    const [uid, gid] = ["-u", "-g"].map((f) => Number(execFileSync("id", [f, "postgres"], { encoding: "utf8" }).trim()));
    chownSync(dir, uid!, gid!);
  }
  const [initdb, initArgs] = asPostgres(tools.initdb!, ["-D", data, "-U", "pg", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]);
  assert.equal(spawnSync(initdb, initArgs, { encoding: "utf8" }).status, 0);
  const here = Number(readFileSync(join(data, "PG_VERSION"), "utf8").trim());
  const pinned = postgresMajor(DEFAULT_IMAGES.postgres)!;
  assert.notEqual(here, pinned, "this machine's PostgreSQL differs from the pinned major, so the data directory can stand in for the pinned one's");
  writeFileSync(join(data, "PG_VERSION"), `${pinned}\n`);
  const [server, serverArgs] = asPostgres(tools.postgres!, ["-D", data, "-c", "listen_addresses=", "-k", dir]);
  const r = spawnSync(server, serverArgs, { encoding: "utf8", timeout: 60_000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /database files are incompatible with server/);
  assert.match(r.stderr, new RegExp(`initialized by PostgreSQL version ${pinned}, which is not compatible with this version ${here}`));
});
