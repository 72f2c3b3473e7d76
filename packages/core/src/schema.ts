import { MAX_DURATION_MS, parseDuration } from "./duration.js";
import { type ConfigIssue, NodropError } from "./errors.js";
import type { StandardSchemaV1 } from "./standard-schema.js";

/**
 * A small schema language for config: it validates with exact paths in its errors
 * (`instances[2].port: expected an integer 1-65535`) and describes itself, so the
 * config reference is generated from the same source and cannot drift.
 */
export interface Schema<T> {
  readonly kind: string;
  readonly doc: string | undefined;
  /** Returns the parsed value, or records issues and returns undefined. */
  parse(value: unknown, path: string, issues: ConfigIssue[]): T | undefined;
  /** One line saying what values are accepted. */
  describe(): string;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

interface Common {
  doc?: string;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === "number") return `number ${Object.is(value, -0) ? "-0" : String(value).length > 40 ? `${String(value).slice(0, 40)}…` : String(value)}`;
  return `${typeof value} ${String(value)}`;
}

export function str(options: Common & { pattern?: RegExp; hint?: string; minLength?: number; maxLength?: number } = {}): Schema<string> {
  const hint = options.hint ?? (options.pattern ? `a string matching ${options.pattern}` : "a string");
  return {
    kind: "string",
    doc: options.doc,
    describe: () => hint,
    parse(value, path, issues) {
      if (typeof value !== "string") {
        issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
        return undefined;
      }
      if ((options.minLength ?? 0) > value.length || (options.pattern && !options.pattern.test(value)) || (options.maxLength !== undefined && value.length > options.maxLength)) {
        issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
        return undefined;
      }
      return value;
    },
  };
}

export function int(options: Common & { min?: number; max?: number } = {}): Schema<number> {
  const min = options.min ?? Number.MIN_SAFE_INTEGER;
  const max = options.max ?? Number.MAX_SAFE_INTEGER;
  const hint =
    options.min !== undefined && options.max !== undefined
      ? `an integer ${min}-${max}`
      : options.min !== undefined
        ? `an integer >= ${min}`
        : "an integer";
  return {
    kind: "integer",
    doc: options.doc,
    describe: () => hint,
    parse(value, path, issues) {
      if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
        issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
        return undefined;
      }
      return value;
    },
  };
}

/** A finite number (a ratio such as 1.5). */
export function number(options: Common & { min?: number; max?: number } = {}): Schema<number> {
  const hint = options.min !== undefined && options.max !== undefined ? `a number ${options.min}-${options.max}` : options.min !== undefined ? `a number >= ${options.min}` : "a number";
  return {
    kind: "number",
    doc: options.doc,
    describe: () => hint,
    parse(value, path, issues) {
      if (typeof value !== "number" || !Number.isFinite(value) || (options.min !== undefined && value < options.min) || (options.max !== undefined && value > options.max)) {
        issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
        return undefined;
      }
      return value;
    },
  };
}

export function bool(options: Common = {}): Schema<boolean> {
  return {
    kind: "boolean",
    doc: options.doc,
    describe: () => "true or false",
    parse(value, path, issues) {
      if (typeof value !== "boolean") {
        issues.push({ path, message: `expected true or false, got ${typeName(value)}` });
        return undefined;
      }
      return value;
    },
  };
}

/**
 * A duration such as "500ms", "30s" or "2m"; parsed to milliseconds. At most 24h (MAX_DURATION_MS):
 * a timer above 2^31-1 ms fires at once, so `timeout: 1000h` would end everything immediately.
 */
export function duration(options: Common & { min?: number; max?: number } = {}): Schema<number> {
  const hint = "a duration such as 500ms, 30s or 2m (at most 24h)";
  return {
    kind: "duration",
    doc: options.doc,
    describe: () => hint,
    parse(value, path, issues) {
      const ms = parseDuration(value);
      if (ms === undefined) {
        issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
        return undefined;
      }
      if ((options.min !== undefined && ms < options.min) || (options.max !== undefined && ms > options.max)) {
        issues.push({ path, message: `expected a duration between ${options.min ?? 0}ms and ${options.max === undefined ? "24h" : `${options.max}ms`}, got ${typeName(value)}` });
        return undefined;
      }
      return ms;
    },
  };
}

const SIZE_UNITS: Record<string, number> = { "": 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };

/** A memory size such as "128MiB" or "2GiB" (or a number of bytes); parsed to bytes. */
export function size(options: Common = {}): Schema<number> {
  const hint = "a size such as 128MiB or 2GiB";
  return {
    kind: "size",
    doc: options.doc,
    describe: () => hint,
    parse(value, path, issues) {
      // A number is bytes, and like a string only digits count: no sign, no fraction.
      const text = typeof value === "number" ? String(value) : typeof value === "string" ? value.trim() : "";
      const match = /^(\d{1,16})(KiB|MiB|GiB|TiB)?$/.exec(text);
      const bytes = match && Number.isSafeInteger(Number(match[1])) ? Number(match[1]) * SIZE_UNITS[match[2] ?? ""]! : undefined;
      if (bytes === undefined || !Number.isSafeInteger(bytes)) {
        issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
        return undefined;
      }
      return bytes;
    },
  };
}

export function oneOf<const T extends string>(values: readonly T[], options: Common = {}): Schema<T> {
  const hint = `one of ${values.map((v) => JSON.stringify(v)).join(", ")}`;
  return {
    kind: "enum",
    doc: options.doc,
    describe: () => hint,
    parse(value, path, issues) {
      if (typeof value !== "string" || !(values as readonly string[]).includes(value)) {
        issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
        return undefined;
      }
      return value as T;
    },
  };
}

export interface ListSchema<T> extends Schema<T[]> {
  readonly itemSchema: Schema<T>;
}

export function list<T>(item: Schema<T>, options: Common & { min?: number } = {}): ListSchema<T> {
  const min = options.min ?? 0;
  return {
    kind: "list",
    itemSchema: item,
    doc: options.doc,
    describe: () => `a list${min > 0 ? ` of at least ${min}` : ""} of ${item.describe()}`,
    parse(value, path, issues) {
      if (!Array.isArray(value)) {
        issues.push({ path, message: `expected a list, got ${typeName(value)}` });
        return undefined;
      }
      if (value.length < min) {
        issues.push({ path, message: `expected at least ${min} item${min === 1 ? "" : "s"}, got ${value.length}` });
        return undefined;
      }
      const before = issues.length;
      const out = value.map((v, i) => item.parse(v, `${path}[${i}]`, issues));
      return issues.length === before ? (out as T[]) : undefined;
    },
  };
}

/** A custom check on top of another schema; `check` returns an error message or undefined. */
export function refine<T>(base: Schema<T>, check: (value: T) => string | undefined, hint?: string): Schema<T> {
  return {
    kind: base.kind,
    doc: base.doc,
    describe: () => hint ?? base.describe(),
    parse(value, path, issues) {
      const parsed = base.parse(value, path, issues);
      if (parsed === undefined) return undefined;
      const problem = check(parsed);
      if (problem) {
        issues.push({ path, message: problem });
        return undefined;
      }
      return parsed;
    },
  };
}

/** Accepts the first alternative whose parse succeeds. */
export function either<A, B>(a: Schema<A>, b: Schema<B>, options: Common & { hint?: string } = {}): Schema<A | B> {
  const hint = options.hint ?? `${a.describe()} or ${b.describe()}`;
  return {
    kind: "either",
    doc: options.doc,
    describe: () => hint,
    parse(value, path, issues) {
      const scratch: ConfigIssue[] = [];
      const first = a.parse(value, path, scratch);
      if (first !== undefined) return first;
      const second = b.parse(value, path, scratch);
      if (second !== undefined) return second;
      issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
      return undefined;
    },
  };
}

export interface Field<T> {
  schema: Schema<T>;
  required: boolean;
  default?: T;
}

export function optional<T>(schema: Schema<T>): Field<T>;
export function optional<T>(schema: Schema<T>, defaultValue: T): Field<T> & { default: T };
export function optional<T>(schema: Schema<T>, defaultValue?: T): Field<T> {
  return defaultValue === undefined ? { schema, required: false } : { schema, required: false, default: defaultValue };
}

export type Shape = Record<string, Schema<unknown> | Field<unknown>>;

/** An optional nested mapping: when absent it is parsed from {}, so its fields' defaults apply. */
export function section<T>(schema: Schema<T>): Field<T> & { default: T } {
  return { schema, required: false, default: {} as T };
}
type FieldType<F> = F extends Field<infer T> ? T : F extends Schema<infer T> ? T : never;
type IsOptional<F> = F extends Field<unknown> ? (F extends { default: unknown } ? false : true) : false;
export type ObjectOf<S extends Shape> = {
  [K in keyof S as IsOptional<S[K]> extends true ? never : K]: FieldType<S[K]>;
} & {
  [K in keyof S as IsOptional<S[K]> extends true ? K : never]?: FieldType<S[K]>;
};

type IsOptionalInput<F> = F extends Field<unknown> ? true : false;
/** What a caller may pass for an object: fields with a default are optional too (parse() fills them in). */
export type InputOf<S extends Shape> = {
  [K in keyof S as IsOptionalInput<S[K]> extends true ? never : K]: FieldType<S[K]>;
} & {
  [K in keyof S as IsOptionalInput<S[K]> extends true ? K : never]?: FieldType<S[K]> | undefined;
};
/** The input type of a schema: for an object, its fields with defaults are optional (see Infer for the parsed type). */
export type Input<S> = S extends ObjectSchema<infer T> ? InputOf<T> : Infer<S>;

/** An object schema is also a Standard Schema, so code that takes any validator takes core's. */
export interface ObjectSchema<S extends Shape> extends Schema<ObjectOf<S>>, StandardSchemaV1<InputOf<S>, ObjectOf<S>> {
  readonly fields: { [K in keyof S]: { schema: Schema<unknown>; required: boolean; default?: unknown } };
}

function asField(entry: Schema<unknown> | Field<unknown>): Field<unknown> {
  return "parse" in entry ? { schema: entry, required: true } : entry;
}

/** A mapping with known keys; unknown keys are errors (a typo must not be silently ignored). */
export function object<S extends Shape>(shape: S, options: Common = {}): ObjectSchema<S> {
  const fields = Object.fromEntries(Object.entries(shape).map(([k, v]) => [k, asField(v)])) as ObjectSchema<S>["fields"];
  const schema: ObjectSchema<S> = {
    "~standard": {
      version: 1,
      vendor: "nodrop",
      validate: (value) => {
        const issues: ConfigIssue[] = [];
        const parsed = schema.parse(value, "", issues);
        if (parsed !== undefined && issues.length === 0) return { value: parsed };
        return { issues: issues.map((issue) => ({ message: issue.message, path: pathSegments(issue.path) })) };
      },
    },
    kind: "object",
    doc: options.doc,
    fields,
    describe: () => "a mapping",
    parse(value, path, issues) {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        issues.push({ path: path || "(top level)", message: `expected a mapping, got ${typeName(value)}` });
        return undefined;
      }
      const before = issues.length;
      const input = value as Record<string, unknown>;
      const out: Record<string, unknown> = {};
      // Own keys only: `constructor`, `toString` or `__proto__` in the input are unknown keys like any other.
      for (const key of Object.keys(input)) {
        if (!Object.hasOwn(fields, key)) {
          const known = Object.keys(fields).join(", ");
          issues.push({ path: join(path, key), message: `unknown key (known keys: ${known})` });
        }
      }
      for (const [key, field] of Object.entries(fields) as [string, Field<unknown>][]) {
        const raw = Object.hasOwn(input, key) ? input[key] : undefined;
        if (raw === undefined || raw === null) {
          if (field.required) issues.push({ path: join(path, key), message: `required: ${field.schema.describe()}` });
          // Defaults go through the schema too, so a missing section gets its fields' defaults.
          else if (field.default !== undefined) out[key] = field.schema.parse(structuredClone(field.default), join(path, key), issues);
          continue;
        }
        const parsed = field.schema.parse(raw, join(path, key), issues);
        if (parsed !== undefined) out[key] = parsed;
      }
      return issues.length === before ? (out as ObjectOf<S>) : undefined;
    },
  };
  return schema;
}

/** `steps[1].weight` as Standard Schema path segments: ["steps", 1, "weight"]. */
function pathSegments(path: string): PropertyKey[] {
  if (path === "(top level)") return [];
  return [...path.matchAll(/\[(\d+)\]|([^.[\]]+)/g)].map((m) => (m[1] !== undefined ? Number(m[1]) : m[2]!));
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** Parses or throws one E_CONFIG error that lists every problem, each with its path. */
export function parseOrThrow<T>(schema: Schema<T>, value: unknown, path = "", source?: string): T {
  const issues: ConfigIssue[] = [];
  const parsed = schema.parse(value, path, issues);
  if (parsed === undefined || issues.length > 0) throw configError(issues, source);
  return parsed;
}

/** One E_CONFIG error listing every problem, each on its own line with its path. */
export function configError(issues: readonly ConfigIssue[], source?: string): NodropError {
  const where = source ? ` in ${source}` : "";
  return new NodropError("E_CONFIG", `invalid config${where}:\n${issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")}`, { issues });
}

export interface SchemaDocRow {
  path: string;
  required: boolean;
  type: string;
  default: string | undefined;
  doc: string;
}

/** Flattens an object schema into rows for the generated config reference. */
export function documentSchema(schema: Schema<unknown>, path = ""): SchemaDocRow[] {
  const rows: SchemaDocRow[] = [];
  const fields = (schema as Partial<ObjectSchema<Shape>>).fields;
  if (!fields) return rows;
  for (const [key, field] of Object.entries(fields)) {
    const p = join(path, key);
    const inner = field.schema;
    rows.push({
      path: p,
      required: field.required,
      type: inner.describe(),
      default: field.default === undefined ? undefined : inner.kind === "duration" && typeof field.default === "number" ? msText(field.default) : JSON.stringify(field.default),
      doc: inner.doc ?? "",
    });
    rows.push(...documentSchema(inner, p));
    const item = (inner as Partial<ListSchema<unknown>>).itemSchema;
    if (item) rows.push(...documentSchema(item, `${p}[]`));
  }
  return rows;
}

/** Any mapping, checked later by the adapter or strategy that owns it (`proxy`, `strategy`). */
export function mapping(options: Common & { hint?: string } = {}): Schema<Record<string, unknown>> {
  const hint = options.hint ?? "a mapping";
  return {
    kind: "mapping",
    doc: options.doc,
    describe: () => hint,
    parse(value, path, issues) {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        issues.push({ path, message: `expected ${hint}, got ${typeName(value)}` });
        return undefined;
      }
      return value as Record<string, unknown>;
    },
  };
}

function msText(ms: number): string {
  return ms % 1000 === 0 && ms > 0 ? `${ms / 1000}s` : `${ms}ms`;
}
