import { createHmac } from "node:crypto";

/**
 * TURN REST API credentials exactly as Dendrite v0.15.2 mints them for GET /voip/turnServer
 * (clientapi/routing/voip.go): username "<unix expiry>:<user id>", password
 * base64(HMAC-SHA1(turn_shared_secret, username)), ttl = the lifetime in whole seconds.
 * coTURN (`use-auth-secret`) recomputes the same HMAC and refuses the name once the expiry is past.
 */
export function mintTurnCredentials(
  sharedSecret: string,
  userId: string,
  lifetimeSeconds: number,
  nowSeconds: number,
): { username: string; password: string; ttl: number } {
  if (sharedSecret.length === 0) throw new Error("mintTurnCredentials: sharedSecret must not be empty");
  if (userId.length === 0) throw new Error("mintTurnCredentials: userId must not be empty");
  if (!Number.isFinite(lifetimeSeconds) || lifetimeSeconds < 0) {
    throw new Error(`mintTurnCredentials: lifetimeSeconds must be a finite number >= 0, got ${lifetimeSeconds}`);
  }
  if (!Number.isFinite(nowSeconds)) throw new Error(`mintTurnCredentials: nowSeconds must be finite, got ${nowSeconds}`);
  // Go: time.Now().Add(duration).Unix() drops the fraction; int(duration.Seconds()) truncates.
  const expiry = Math.floor(nowSeconds + lifetimeSeconds);
  const username = `${expiry}:${userId}`;
  const password = createHmac("sha1", Buffer.from(sharedSecret, "utf8")).update(username, "utf8").digest("base64");
  return { username, password, ttl: Math.trunc(lifetimeSeconds) };
}
