/**
 * The stand-in images (test/images/build-images.sh) for tests that run the real programs: builds
 * what is missing or out of date (cached under ~/.cache/hardened-matrix/images-<name>-<key>/), and
 * loads the `docker save` archives into a Docker engine, tagged as components/settings.ts pins them.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import type { ImageName } from "../../components/settings";

const execFileP = promisify(execFile);
const SCRIPT = path.join(__dirname, "build-images.sh");

export interface StandInImage {
  name: ImageName;
  /** The pinned tag (DEFAULT_IMAGES). */
  tag: string;
  /** The cached archive, or undefined when the image is not available here (no recipe, prepare.sh exit 3, or failed). */
  archive?: string;
}

function parse(stdout: string): StandInImage[] {
  return stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      const [name, tag, archive] = l.split("\t");
      return { name: name as ImageName, tag, archive: archive && archive !== "-" ? archive : undefined };
    });
}

/**
 * Builds the images not yet cached (cold: minutes; warm: about a second) and returns every one.
 * Rejects when a build fails; an image that is not available here is returned without an archive.
 */
export async function buildImages(names: ImageName[] = [], opts: { timeoutMs?: number } = {}): Promise<StandInImage[]> {
  const { stdout } = await execFileP(SCRIPT, names, { timeout: opts.timeoutMs ?? 3_600_000, maxBuffer: 16 * 1024 * 1024 });
  return parse(stdout);
}

/** The images' tags and cached archives, building nothing. */
export async function cachedImages(names: ImageName[] = []): Promise<StandInImage[]> {
  const { stdout } = await execFileP(SCRIPT, ["--list", ...names], { timeout: 60_000 });
  return parse(stdout);
}

/**
 * Builds if needed, then loads every available image into the engine at dockerHost
 * (e.g. "unix:///tmp/x/docker.sock"). Returns the images, loaded or not available here.
 */
export async function loadImages(dockerHost: string, names: ImageName[] = [], opts: { timeoutMs?: number } = {}): Promise<StandInImage[]> {
  const images = await buildImages(names, opts);
  for (const image of images) {
    if (!image.archive) continue;
    await execFileP("docker", ["-H", dockerHost, "load", "-q", "-i", image.archive], { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
  }
  return images;
}
