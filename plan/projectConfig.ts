/**
 * What the Pulumi CLI checks in a project's `config:` declarations and a stack's values before it
 * runs the program (`pulumi up`, `preview`, `refresh`, `destroy`), mirrored so that the offline
 * plan refuses what the CLI would refuse. Checked against pulumi/pulumi at 1b5949891b (3.259+):
 * - sdk/go/common/workspace/loaders.go `LoadProjectBytes`: the JSON schema (project.json,
 *   `configTypeDeclaration`), then `RewriteShorthandConfigValues`, then `Project.Validate`;
 * - sdk/go/common/workspace/project.go `Project.Validate`, `ValidateConfigValue`, `InferFullTypeName`;
 * - pkg/workspace/config.go `mergeConfig` (defaults are applied as plain-text values; a project key
 *   with neither default nor stack value is missing) and `validateStackConfigValue` (a key declared
 *   secret must hold an encrypted value; a typed key's value must match its type).
 * The CLI stops at the first problem; this reports them all, each naming its key.
 * Not mirrored: ESC environments (no stack here uses one) and the type of an encrypted value (the
 * plan never decrypts).
 */

export interface ConfigItemsType {
  type: string;
  items?: ConfigItemsType;
}

export interface ConfigDeclaration {
  type?: string;
  items?: ConfigItemsType;
  description?: string;
  secret?: boolean;
  default?: unknown;
  value?: unknown;
}

export interface ProjectConfig {
  name: string;
  /** Keys as written in Pulumi.yaml, shorthand already rewritten into declarations. */
  config: Record<string, ConfigDeclaration>;
}

/** A stack value as the CLI holds it (config.Value): its text, encrypted or not, JSON text for objects. */
export interface StackValue {
  text: string;
  secure: boolean;
  object: boolean;
  /** Set when the value came from Pulumi.yaml rather than the stack file. */
  from?: "default" | "value";
}

export interface MergedConfig {
  /** Full keys to values, project defaults applied. */
  values: Map<string, StackValue>;
  problems: string[];
}

// project.json simpleConfigType; configTypeDeclaration has additionalProperties: false.
const SIMPLE_TYPES = ["string", "integer", "boolean", "array", "object"];
const DECLARATION_ATTRIBUTES = ["type", "items", "description", "secret", "default", "value"];

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A YAML value the Go decoder gives as `int` (an integral number). */
function isGoInt(v: unknown): boolean {
  return typeof v === "number" && Number.isInteger(v);
}

/** `isPrimitiveValue` in project.go and pkg/workspace/config.go: string, int, bool. */
function isPrimitive(v: unknown): boolean {
  return typeof v === "string" || typeof v === "boolean" || isGoInt(v);
}

export function fullKey(projectName: string, key: string): string {
  return key.includes(":") ? key : `${projectName}:${key}`;
}

function namespacedByProject(projectName: string, key: string): boolean {
  return !key.includes(":") || key.startsWith(`${projectName}:`);
}

/** `InferFullTypeName`. */
export function typeName(type: string, items?: ConfigItemsType): string {
  return items ? `array<${typeName(items.type, items.items)}>` : type;
}

/** `ValidateConfigValue`: whether `value` (decoded YAML or JSON, or a stack value's text) fits the type. */
export function validateConfigValue(type: string, items: ConfigItemsType | undefined, value: unknown): boolean {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "integer":
      // int, a whole float64, or text strconv.Atoi accepts.
      if (typeof value === "number") return Number.isInteger(value);
      return typeof value === "string" && /^[+-]?\d+$/.test(value) && Math.abs(Number(value)) <= Number.MAX_SAFE_INTEGER;
    case "boolean":
      return typeof value === "boolean" || value === "true" || value === "false";
    case "object":
      return isPlainObject(value);
    default:
      // "array" (and any unknown type name, which never validates).
      return Array.isArray(value) && items !== undefined && value.every((item) => validateConfigValue(items.type, items.items, item));
  }
}

function itemsProblems(items: unknown, where: string): string[] {
  if (!isPlainObject(items)) return [`${where} must be an object with a 'type'`];
  const problems: string[] = [];
  if (typeof items.type !== "string" || !SIMPLE_TYPES.includes(items.type)) {
    problems.push(`${where}.type must be one of ${SIMPLE_TYPES.join(", ")}`);
  } else if (items.type === "array") {
    if (items.items === undefined) problems.push(`${where} is an array but has no 'items'`);
    else problems.push(...itemsProblems(items.items, `${where}.items`));
  }
  return problems;
}

/**
 * Reads `config:` of a parsed Pulumi.yaml as the CLI loads it: the schema, the shorthand rewrite,
 * then `Project.Validate`. Problems name the full key.
 */
export function loadProjectConfig(doc: unknown): { project: ProjectConfig; problems: string[] } {
  const problems: string[] = [];
  const raw = isPlainObject(doc) ? doc : {};
  const name = typeof raw.name === "string" ? raw.name : "";
  if (name === "") problems.push("Pulumi.yaml: project is missing a non-empty string 'name' attribute");
  const config: Record<string, ConfigDeclaration> = {};
  const declared = raw.config ?? {};
  if (!isPlainObject(declared)) {
    problems.push("Pulumi.yaml: 'config' must map keys to declarations (a folder path there is the deprecated stackConfigDir)");
    return { project: { name, config }, problems };
  }
  for (const [key, decl] of Object.entries(declared)) {
    const k = fullKey(name, key);
    const ownKey = namespacedByProject(name, key);
    // Schema: a string, integer, boolean, array, or a declaration object.
    if (isPrimitive(decl) || Array.isArray(decl)) {
      // RewriteShorthandConfigValues: a project key's bare value is its default; another namespace's is its value.
      config[key] = ownKey ? { default: decl } : { value: decl };
      continue;
    }
    if (!isPlainObject(decl)) {
      problems.push(`${k}: in Pulumi.yaml must be a string, an integer, a boolean, an array or a declaration {type, default, ...}`);
      continue;
    }
    const bad = Object.keys(decl).filter((a) => !DECLARATION_ATTRIBUTES.includes(a));
    for (const a of bad) problems.push(`${k}: Pulumi.yaml declares '${a}', which is not allowed; allowed: ${DECLARATION_ATTRIBUTES.join(", ")}`);
    if (decl.type !== undefined && (typeof decl.type !== "string" || !SIMPLE_TYPES.includes(decl.type))) {
      problems.push(`${k}: Pulumi.yaml declares type ${JSON.stringify(decl.type)}; allowed: ${SIMPLE_TYPES.join(", ")}`);
      continue;
    }
    if (decl.items !== undefined) {
      const p = itemsProblems(decl.items, "items");
      if (p.length > 0) {
        problems.push(...p.map((m) => `${k}: in Pulumi.yaml ${m}`));
        continue;
      }
    }
    if (decl.secret !== undefined && typeof decl.secret !== "boolean") problems.push(`${k}: in Pulumi.yaml 'secret' must be true or false`);
    if (decl.description !== undefined && typeof decl.description !== "string") problems.push(`${k}: in Pulumi.yaml 'description' must be a string`);
    if (bad.length > 0) continue;
    const d = decl as ConfigDeclaration;
    config[key] = d;

    // Project.Validate.
    const hasDefault = d.default !== undefined && d.default !== null;
    const hasValue = d.value !== undefined && d.value !== null;
    if (hasDefault && hasValue) problems.push(`${k}: Pulumi.yaml gives both a 'default' and a 'value'; the CLI allows one`);
    if (ownKey) {
      if (d.type === "array" && d.items === undefined) problems.push(`${k}: Pulumi.yaml declares an array without 'items' (the type of its elements)`);
      else if (d.type !== undefined && hasDefault && !validateConfigValue(d.type, d.items, d.default)) {
        problems.push(`${k}: the default in Pulumi.yaml, ${JSON.stringify(d.default)}, is not of the declared type '${typeName(d.type, d.items)}'`);
      }
    } else {
      if (d.type !== undefined) problems.push(`${k}: is not in the project's namespace, so Pulumi.yaml must not give it a type`);
      if (hasDefault) problems.push(`${k}: is not in the project's namespace, so Pulumi.yaml must give it a 'value', not a 'default'`);
      else if (!hasValue) problems.push(`${k}: is not in the project's namespace, so Pulumi.yaml must give it a 'value'`);
    }
  }
  return { project: { name, config }, problems };
}

function hasSecure(v: unknown): boolean {
  if (Array.isArray(v)) return v.some(hasSecure);
  if (isPlainObject(v)) return (Object.keys(v).length === 1 && "secure" in v) || Object.values(v).some(hasSecure);
  return false;
}

/** config.Value from a stack file's YAML value (object.go `MarshalString`); `placeholder` stands in for ciphertext. */
export function stackValue(value: unknown, placeholder: string): StackValue {
  if (isPlainObject(value) && Object.keys(value).length === 1 && typeof value.secure === "string") {
    return { text: placeholder, secure: true, object: false };
  }
  if (typeof value === "string") return { text: value, secure: false, object: false };
  if (typeof value === "number" || typeof value === "boolean") return { text: JSON.stringify(value), secure: false, object: false };
  // Arrays and maps are held as JSON; nested ciphertext is replaced by the placeholder here.
  const reveal = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(reveal) : isPlainObject(v) ? (Object.keys(v).length === 1 && "secure" in v ? placeholder : Object.fromEntries(Object.entries(v).map(([a, b]) => [a, reveal(b)]))) : v;
  return { text: JSON.stringify(reveal(value) ?? null), secure: hasSecure(value), object: true };
}

/** `createConfigValue`: how a default or value from Pulumi.yaml becomes a (plain-text) stack value. */
function projectValue(value: unknown, from: "default" | "value"): StackValue {
  if (isPrimitive(value)) return { text: String(value), secure: false, object: false, from };
  return { text: JSON.stringify(value), secure: false, object: true, from };
}

function describe(value: unknown): string {
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/**
 * `mergeConfig` with validation, as `pulumi up` runs it: applies Pulumi.yaml defaults and values to
 * the stack's values (full keys), then checks every declared key.
 */
export function mergeStackConfig(stack: string, project: ProjectConfig, stackValues: Map<string, StackValue>): MergedConfig {
  const values = new Map(stackValues);
  const problems: string[] = [];
  const keys = Object.keys(project.config).sort();
  for (const key of keys) {
    const decl = project.config[key]!;
    const k = fullKey(project.name, key);
    if (values.has(k)) continue;
    const hasDefault = decl.default !== undefined && decl.default !== null;
    const hasValue = decl.value !== undefined && decl.value !== null;
    if (!hasDefault && !hasValue) {
      if (k.startsWith(`${project.name}:`)) {
        problems.push(`${k}: is required but not set (Pulumi.yaml declares it without a default; the Pulumi CLI refuses the stack: "Stack '${stack}' is missing configuration value '${key}'")`);
      }
      continue;
    }
    // A default wins over a value (both are refused by Project.Validate anyway).
    values.set(k, hasDefault ? projectValue(decl.default, "default") : projectValue(decl.value, "value"));
  }
  for (const key of keys) {
    const decl = project.config[key]!;
    const k = fullKey(project.name, key);
    const v = values.get(k);
    if (v === undefined || decl.type === undefined) continue;
    if (decl.secret && !v.secure) {
      const cli = `"Stack '${stack}' with configuration key '${key}' must be encrypted as it's secret"`;
      problems.push(
        v.from === "default"
          ? `${k}: is declared secret with a default in Pulumi.yaml; the Pulumi CLI (since 3.202) writes that default in plain text and then refuses it (${cli}, pulumi/pulumi#21865): a secret key must have no default`
          : `${k}: is declared secret in Pulumi.yaml but set in plain text; the Pulumi CLI refuses it (${cli}): set it with \`pulumi config set --secret ${key.split(":").pop()} ...\``,
      );
      continue;
    }
    if (v.secure && !v.object) continue; // never decrypted here
    let content: unknown = v.text;
    if (v.object) {
      try {
        content = JSON.parse(v.text);
      } catch {
        content = undefined;
      }
    }
    if (!validateConfigValue(decl.type, decl.items, content)) {
      const t = typeName(decl.type, decl.items);
      problems.push(`${k}: ${describe(content)} is not of type '${t}' (Pulumi.yaml declares it so; the Pulumi CLI refuses the stack: "Stack '${stack}' with configuration key '${key}' must be of type '${t}'")`);
    }
  }
  return { values, problems };
}
