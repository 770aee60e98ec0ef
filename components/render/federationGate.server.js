"use strict";
// hardened-matrix federation gate. Traefik's forwardAuth middleware asks it about every request on
// the federation router; 2xx lets the request through to Dendrite, anything else is returned as is.
// Plain Node.js, no dependencies, one file: the settings line below is filled in when it is rendered.
const http = require("node:http");

const SETTINGS = {"allowedOrigins":[],"port":8090}; // @@SETTINGS@@

// Token characters (RFC 9110 section 5.6.2).
const TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
// A parameter value: a token (colons allowed unquoted, as the Matrix spec asks of recipients) or a
// quoted-string with backslash escapes (RFC 9110 section 5.6.4).
const PARAM = new RegExp(`(${TOKEN})[ \\t]*=[ \\t]*(?:"((?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e]|\\\\[\\t\\x20-\\x7e])*)"|([!#$%&'*+\\-.^_\`|~0-9A-Za-z:]+))`, "y");
const SEPARATOR = /[ \t]*,[ \t]*/y;
const TRAILING = /[ \t]*$/y;

/**
 * Parses one Authorization value with the grammar of the Matrix spec (server-server API, "Request
 * Authentication": RFC 9110 section 11.4 credentials, scheme X-Matrix, comma-separated name=value
 * parameters, names case-insensitive). Returns the parameters by lower-case name, or null when the
 * value does not follow that grammar or names a parameter twice.
 */
function parseSpec(value) {
  // Only printable ASCII: a byte Go and Node decode differently can never make the two parsers disagree.
  if (!/^[\t\x20-\x7e]*$/.test(value)) return null;
  const scheme = /^([^ ]+) +/.exec(value);
  if (!scheme || scheme[1].toLowerCase() !== "x-matrix") return null;
  const params = new Map();
  let at = scheme[0].length;
  for (;;) {
    PARAM.lastIndex = at;
    const m = PARAM.exec(value);
    if (!m) return null;
    const name = m[1].toLowerCase();
    if (params.has(name)) return null;
    params.set(name, m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3]);
    at = PARAM.lastIndex;
    SEPARATOR.lastIndex = at;
    if (SEPARATOR.exec(value)) {
      at = SEPARATOR.lastIndex;
      continue;
    }
    TRAILING.lastIndex = at;
    TRAILING.exec(value);
    return TRAILING.lastIndex === value.length ? params : null;
  }
}

// Go's strings.TrimSpace on ASCII input (parseSpec admits nothing else).
function goTrimSpace(s) {
  return s.replace(/^[\t\n\v\f\r ]+|[\t\n\v\f\r ]+$/g, "");
}

/**
 * What Dendrite reads from one Authorization value: gomatrixserverlib's ParseAuthorization as pinned
 * by Dendrite v0.15.2 (matrix-org/gomatrixserverlib fclient/request.go at 6697d93cbcba): the scheme is
 * the text before the first space, parameters are split on every comma and at the first "=", names
 * are compared exactly, quotes are trimmed from both ends, and the last origin wins.
 */
function parseGsl(value) {
  const space = value.indexOf(" ");
  const scheme = space < 0 ? value : value.slice(0, space);
  let origin = "";
  if (scheme !== "X-Matrix" || space < 0) return { scheme, origin };
  for (const data of value.slice(space + 1).split(",")) {
    const eq = data.indexOf("=");
    if (eq < 0) continue;
    if (goTrimSpace(data.slice(0, eq)) === "origin") origin = goTrimSpace(data.slice(eq + 1)).replace(/^"+|"+$/g, "");
  }
  return { scheme, origin };
}

/**
 * The decision on one request's Authorization values (all of them, in order): every value must parse
 * with the spec's grammar to exactly one non-empty origin, gomatrixserverlib must read the same origin
 * from it, every value must name the same origin, and that origin must be allowed.
 */
function decide(values, allowed) {
  if (values.length === 0) return { ok: false, reason: "no Authorization header" };
  let origin;
  for (const value of values) {
    const params = parseSpec(value);
    if (!params) return { ok: false, reason: "an Authorization header is not X-Matrix by the spec's grammar" };
    const o = params.get("origin");
    if (!o) return { ok: false, reason: "an X-Matrix header has no origin" };
    const gsl = parseGsl(value);
    if (gsl.scheme !== "X-Matrix" || gsl.origin !== o) return { ok: false, reason: "Dendrite would read another origin from an X-Matrix header" };
    if (origin !== undefined && origin !== o) return { ok: false, reason: "X-Matrix headers name different origins" };
    origin = o;
  }
  if (!allowed.includes(origin)) return { ok: false, reason: "origin not allowed", origin };
  return { ok: true, origin };
}

/** Every value of one header as sent (req.headers keeps only the first of a duplicated Authorization). */
function headerValues(rawHeaders, name) {
  const values = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i].toLowerCase() === name) values.push(rawHeaders[i + 1]);
  return values;
}

function authorizationValues(rawHeaders) {
  return headerValues(rawHeaders, "authorization");
}

// The federation endpoints Dendrite v0.15.2 serves without X-Matrix request authentication and that
// other parties call unsigned: element-hq/dendrite federationapi/routing/routing.go registers both
// with MakeExternalAPI (not MakeFedAPI), GET only. Widgets, integration managers and Element Call
// check a user's OpenID token at openid/userinfo; servers and tools ask version. Nothing else is
// let through unsigned: the signing keys have their own router (dendriteRoutes.ts), and the other
// unsigned routes (publicRooms, 3pid/onbind, the key notary) still need an allowed origin, as before.
const UNSIGNED_GET = ["/_matrix/federation/v1/version", "/_matrix/federation/v1/openid/userinfo"];

/**
 * Whether the request Traefik asks about is one of UNSIGNED_GET. Traefik's forwardAuth (with
 * trustForwardHeader false) drops client-sent X-Forwarded-* and sets X-Forwarded-Method and
 * X-Forwarded-Uri = the request's RequestURI (traefik/traefik v3.7.9 pkg/middlewares/auth/forward.go
 * writeHeader): the escaped path, which Dendrite routes on too (internal/httputil/routing.go
 * UseEncodedPath, SkipClean). So the path is compared exactly, as sent, query cut off.
 */
function unsignedEndpoint(methods, uris) {
  if (methods.length !== 1 || uris.length !== 1 || methods[0] !== "GET") return false;
  const q = uris[0].indexOf("?");
  return UNSIGNED_GET.includes(q < 0 ? uris[0] : uris[0].slice(0, q));
}

function log(fields) {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...fields })}\n`);
}

function serve(settings) {
  const server = http.createServer((req, res) => {
    if (req.url === "/healthz") {
      res.writeHead(200, { "Content-Type": "text/plain" }).end("ok\n");
      return;
    }
    if (req.url !== "/verify") {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
      return;
    }
    if (unsignedEndpoint(headerValues(req.rawHeaders, "x-forwarded-method"), headerValues(req.rawHeaders, "x-forwarded-uri"))) {
      res.writeHead(200, { "Content-Length": "0" }).end();
      return;
    }
    const d = decide(authorizationValues(req.rawHeaders), settings.allowedOrigins);
    if (d.ok) {
      res.writeHead(200, { "Content-Length": "0" }).end();
      return;
    }
    // Header values are never logged: only the reason and a refused but well-formed origin.
    log({ msg: "refused", reason: d.reason, origin: d.origin, uri: String(req.headers["x-forwarded-uri"] ?? "").split("?")[0] });
    res.writeHead(403, { "Content-Type": "application/json" }).end(JSON.stringify({ errcode: "M_FORBIDDEN", error: "Federation with this server is not allowed" }));
  });
  server.headersTimeout = 5000;
  server.requestTimeout = 10000;
  server.maxHeadersCount = 100;
  const port = process.env.FEDGATE_PORT !== undefined ? Number(process.env.FEDGATE_PORT) : settings.port;
  server.listen(port, process.env.FEDGATE_HOST || "0.0.0.0", () => log({ msg: "listening", port: server.address().port }));
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  return server;
}

module.exports = { SETTINGS, parseSpec, parseGsl, decide, authorizationValues, headerValues, unsignedEndpoint, UNSIGNED_GET };
if (require.main === module) serve(SETTINGS);
