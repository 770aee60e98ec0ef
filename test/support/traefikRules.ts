/**
 * Traefik v3's HTTP routing, for tests that ask "which router, with which middlewares, answers this
 * request?" over our rendered labels and static config. Semantics copied from traefik/traefik v3.7.9:
 * - rule syntax: matchers joined by `&&`, `||`, `!` and parentheses, string arguments in backticks or
 *   double quotes (pkg/rules/parser.go, vulcand/predicate);
 * - matchers (pkg/muxer/http/matcher.go): Host compares case-insensitively with the request host
 *   without its port; Path, PathPrefix and PathRegexp (Go regexp, unanchored MatchString) look at the
 *   routing path, the escaped path with unreserved characters decoded (mux.go withRoutingPath);
 *   Method compares exactly;
 * - the first matching router by priority wins, where a router without one has the length of its
 *   rule (mux.go GetRulePriority, routes sorted by priority);
 * - an entrypoint's `http.middlewares` run before the router's own (pkg/server/aggregator.go
 *   applyModel: the entrypoint model's middlewares are prepended to each router's).
 * Only the matchers our rules use are implemented; any other makes the parser throw.
 */

type Node =
  | { kind: "and" | "or"; left: Node; right: Node }
  | { kind: "not"; inner: Node }
  | { kind: "call"; name: string; args: string[] };

export interface RoutedRequest {
  entryPoint: string;
  host: string;
  /** The escaped path as sent (no query). */
  path: string;
  method: string;
}

export interface Router {
  name: string;
  entryPoints: string[];
  rule: string;
  priority: number;
  middlewares: string[];
}

const RESERVED = new Set(["%3A", "%2F", "%3F", "%23", "%5B", "%5D", "%40", "%21", "%24", "%26", "%27", "%28", "%29", "%2A", "%2B", "%2C", "%3B", "%3D", "%25"]);

/** mux.go withRoutingPath: percent-encodings of reserved characters stay, every other one is decoded. */
export function routingPath(escaped: string): string {
  return escaped.replace(/%[0-9A-Fa-f]{2}/g, (e) => (RESERVED.has(e.toUpperCase()) ? e : decodeURIComponent(e)));
}

function tokenize(rule: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < rule.length) {
    const c = rule[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === "`" || c === '"') {
      const end = rule.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unterminated string in ${rule}`);
      tokens.push(rule.slice(i, end + 1));
      i = end + 1;
    } else if (rule.startsWith("&&", i) || rule.startsWith("||", i)) {
      tokens.push(rule.slice(i, i + 2));
      i += 2;
    } else if ("()!,".includes(c)) {
      tokens.push(c);
      i++;
    } else {
      const m = /^[A-Za-z]+/.exec(rule.slice(i));
      if (!m) throw new Error(`unexpected "${c}" in ${rule}`);
      tokens.push(m[0]);
      i += m[0].length;
    }
  }
  return tokens;
}

export function parseRule(rule: string): Node {
  const t = tokenize(rule);
  let at = 0;
  const expect = (tok: string) => {
    if (t[at] !== tok) throw new Error(`expected ${tok} at token ${at} of ${rule}`);
    at++;
  };
  const or = (): Node => {
    let left = and();
    while (t[at] === "||") {
      at++;
      left = { kind: "or", left, right: and() };
    }
    return left;
  };
  const and = (): Node => {
    let left = unary();
    while (t[at] === "&&") {
      at++;
      left = { kind: "and", left, right: unary() };
    }
    return left;
  };
  const unary = (): Node => {
    if (t[at] === "!") {
      at++;
      return { kind: "not", inner: unary() };
    }
    if (t[at] === "(") {
      at++;
      const inner = or();
      expect(")");
      return inner;
    }
    const name = t[at++];
    if (!name || !["Host", "Path", "PathPrefix", "PathRegexp", "Method"].includes(name)) throw new Error(`unsupported matcher ${name} in ${rule}`);
    expect("(");
    const args: string[] = [];
    for (;;) {
      const s = t[at++];
      if (!s || !/^[`"]/.test(s)) throw new Error(`expected a string in ${rule}`);
      args.push(s.slice(1, -1));
      if (t[at] === ",") {
        at++;
        continue;
      }
      expect(")");
      return { kind: "call", name, args };
    }
  };
  const node = or();
  if (at !== t.length) throw new Error(`trailing tokens in ${rule}`);
  return node;
}

function matches(node: Node, req: RoutedRequest): boolean {
  switch (node.kind) {
    case "and":
      return matches(node.left, req) && matches(node.right, req);
    case "or":
      return matches(node.left, req) || matches(node.right, req);
    case "not":
      return !matches(node.inner, req);
    case "call": {
      const [a] = node.args as [string];
      const p = routingPath(req.path);
      switch (node.name) {
        case "Host":
          return req.host.replace(/:\d+$/, "").toLowerCase() === a.toLowerCase();
        case "Path":
          return p === a;
        case "PathPrefix":
          return p.startsWith(a);
        case "PathRegexp":
          return new RegExp(a).test(p);
        case "Method":
          return req.method === a;
      }
    }
  }
  throw new Error("unreachable");
}

/** The routers of a Swarm service's labels (`traefik.http.routers.<name>.<key>`). */
export function routersFromLabels(labels: Record<string, string>): Router[] {
  const names = new Set(Object.keys(labels).flatMap((k) => /^traefik\.http\.routers\.([^.]+)\.rule$/.exec(k)?.[1] ?? []));
  return [...names].map((name) => {
    const get = (key: string) => labels[`traefik.http.routers.${name}.${key}`];
    const rule = get("rule")!;
    return {
      name,
      rule,
      entryPoints: (get("entrypoints") ?? "").split(",").filter(Boolean),
      priority: get("priority") !== undefined ? Number(get("priority")) : rule.length,
      middlewares: (get("middlewares") ?? "").split(",").filter(Boolean),
    };
  });
}

/** The file provider's routers (dynamic config `http.routers`). */
export function routersFromDynamic(dynamic: { http?: { routers?: Record<string, { entryPoints: string[]; rule: string; priority?: number; middlewares?: string[] }> } }): Router[] {
  return Object.entries(dynamic.http?.routers ?? {}).map(([name, r]) => ({
    name,
    rule: r.rule,
    entryPoints: r.entryPoints,
    priority: r.priority ?? r.rule.length,
    middlewares: r.middlewares ?? [],
  }));
}

export interface Routed {
  router: string;
  /** Entrypoint middlewares first, then the router's. */
  middlewares: string[];
}

/** Which router answers `req`, or undefined (Traefik's 404). */
export function route(routers: Router[], entryPointMiddlewares: Record<string, string[]>, req: RoutedRequest): Routed | undefined {
  const candidates = routers.filter((r) => r.entryPoints.includes(req.entryPoint)).sort((a, b) => b.priority - a.priority);
  for (const r of candidates) {
    if (matches(parseRule(r.rule), req)) return { router: r.name, middlewares: [...(entryPointMiddlewares[req.entryPoint] ?? []), ...r.middlewares] };
  }
  return undefined;
}
