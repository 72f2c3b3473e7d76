import { NodropError } from "./errors.js";
import { stateGuard } from "./state.js";
import { PLAIN_ABSOLUTE_PATH, describeValue, isSafeName, shellQuote } from "./template.js";

/**
 * The shell side of a release on one host: what is there, and putting an uploaded artifact in
 * place. Pure builders and a parser, so what runs on a host can be read (and tested) here.
 *
 * A release is `<dir>/<version>`. Its `.nodrop-release` file records what it holds:
 *   version=<version>
 *   sha256=<the artifact's sha256, or "none" when the prepare command made it>
 *   prepared=<sha256 of the prepare command and the artifact's sha256>   (once prepare succeeded)
 * An upload goes into `<dir>/.nodrop-incoming-<host>-XXXXXX` and becomes the release by one rename,
 * so a cut connection or a full disk leaves no partial release; the next deploy to that host removes
 * such leftovers (its own only: hosts may share a filesystem). A pruned release is renamed to
 * `.nodrop-removing-<host>-XXXXXX` before it is removed, so a cut prune never leaves half a release
 * under its name.
 *
 * `<dir>` must be a directory of nodrop's uid that nobody else may write to (the state directory's
 * check): anyone who could write there could plant a release with the right marker.
 */

/** The marker a release keeps of what it holds. */
export const RELEASE_MARKER = ".nodrop-release";
const INCOMING = ".nodrop-incoming-";
const REMOVING = ".nodrop-removing-";

export interface ReleaseMarker {
  readonly version?: string | undefined;
  readonly sha256?: string | undefined;
  readonly prepared?: string | undefined;
}

/** What a host has at `<dir>/<version>`. */
export type ReleaseState =
  | { readonly kind: "absent"; readonly freeBytes: number | undefined }
  | { readonly kind: "present"; readonly marker: ReleaseMarker; readonly freeBytes: number | undefined }
  /** Something nodrop will not use or replace: a link, or not a directory. */
  | { readonly kind: "refused"; readonly why: string; readonly freeBytes: number | undefined };

/** `<dir>/<version>`, both checked where the path is made. */
export function releasePath(dir: string, version: string): string {
  if (!PLAIN_ABSOLUTE_PATH.test(dir) || dir === "/") throw new NodropError("E_RELEASE", `release directory ${describeValue(dir)} is not an absolute path of plain characters (letters, digits, . _ / @ + -) without ..`);
  if (!isSafeName(version)) throw new NodropError("E_RELEASE", `version ${describeValue(version)} cannot name a release directory`);
  return `${dir.replace(/\/+$/, "")}/${version}`;
}

/**
 * Makes the releases directory, removes what a cut upload left, and prints the state of the
 * release and the space left: one round trip.
 */
export function inspectScript(dir: string, version: string, host: string): string {
  const release = releasePath(dir, version);
  const own = leftoverPrefixes(host);
  return [
    "set -eu",
    `d=${shellQuote(dir)}; r=${shellQuote(release)}`,
    'if [ ! -L "$d" ]; then mkdir -p -m 0755 -- "$d"; fi',
    stateGuard([{ path: dir, type: "dir" }]).trimEnd(),
    // This host's uploads cut before their rename, and prunes cut midway (the deploy lock keeps two
    // deploys of the app apart; another host on a shared filesystem keeps its own).
    `for t in ${own.map((p) => `"$d"/${p}*`).join(" ")}; do if [ -e "$t" ] || [ -L "$t" ]; then rm -rf -- "$t"; fi; done`,
    'if [ -L "$r" ]; then echo "state link $(readlink -- "$r" | head -c 200 | tr -d "\\n" | tr -c "[:print:]" "?")"',
    'elif [ -d "$r" ]; then echo "state present"; if [ -f "$r/' + RELEASE_MARKER + '" ] && [ ! -L "$r/' + RELEASE_MARKER + '" ]; then head -c 4096 -- "$r/' + RELEASE_MARKER + '" | sed "s/^/marker /"; fi',
    'elif [ -e "$r" ]; then echo "state other"',
    'else echo "state absent"; fi',
    `echo "free $(df -Pk -- "$d" | awk 'NR == 2 { print $4 }')"`,
  ].join("\n");
}

/** Reads what `inspectScript` printed; anything unexpected is refused, not guessed at. */
export function parseInspection(stdout: string, where: string): ReleaseState {
  const lines = stdout.split("\n").filter(Boolean);
  const state = lines.find((l) => l.startsWith("state "))?.slice(6);
  const freeText = lines.find((l) => l.startsWith("free "))?.slice(5);
  const freeBytes = freeText && /^\d{1,15}$/.test(freeText) ? Number(freeText) * 1024 : undefined;
  if (state === "absent") return { kind: "absent", freeBytes };
  if (state === "other") return { kind: "refused", why: `${where} exists and is not a directory`, freeBytes };
  if (state?.startsWith("link ")) return { kind: "refused", why: `${where} is a symbolic link (to ${describeValue(state.slice(5))})`, freeBytes };
  if (state !== "present") throw new NodropError("E_RELEASE", `unexpected answer about ${where}: ${describeValue(stdout, 200)}`);
  return { kind: "present", marker: parseMarker(lines.filter((l) => l.startsWith("marker ")).map((l) => l.slice(7))), freeBytes };
}

const HEX64 = /^[0-9a-f]{64}$/;

/** A marker's fields, each only when it is well formed (a marker is a file anyone with access could edit). */
export function parseMarker(lines: readonly string[]): ReleaseMarker {
  const field = (key: string) => lines.find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
  const version = field("version");
  const sha256 = field("sha256");
  const prepared = field("prepared");
  return {
    ...(version !== undefined && isSafeName(version) ? { version } : {}),
    ...(sha256 !== undefined && (sha256 === "none" || HEX64.test(sha256)) ? { sha256 } : {}),
    ...(prepared !== undefined && HEX64.test(prepared) ? { prepared } : {}),
  };
}

/** The names this host's leftovers start with: cut uploads and cut prunes. */
function leftoverPrefixes(host: string): string[] {
  if (!isSafeName(host)) throw new NodropError("E_RELEASE", `host ${describeValue(host)} cannot name an upload directory`);
  return [`${INCOMING}${host}-`, `${REMOVING}${host}-`];
}

/** A fresh upload directory beside the releases (mode 0700, mktemp's); its path is the one line printed. */
export function incomingScript(dir: string, host: string): string {
  return `set -eu\nmktemp -d -- ${shellQuote(`${dir.replace(/\/+$/, "")}/${leftoverPrefixes(host)[0]}XXXXXX`)}`;
}

/** Whether a path printed by `incomingScript` is one it makes (for some host). */
export function isIncomingPath(dir: string, path: string): boolean {
  const prefix = `${dir.replace(/\/+$/, "")}/${INCOMING}`;
  const rest = path.slice(prefix.length);
  return path.startsWith(prefix) && /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}-[A-Za-z0-9]{6,}$/.test(rest);
}

/** How an artifact becomes a release's files. */
export type Unpack = "tar.gz" | "tar" | "none";

/** The name an artifact is uploaded as inside its incoming directory. */
export const UPLOADED_NAME = ".nodrop-artifact";

/**
 * Checks the upload's sha256, unpacks it (a tarball) or keeps it as `name` (any other file), writes
 * the marker and renames the result to `<dir>/<version>`. A release that appeared at that name
 * meanwhile fails the rename (`mv -T` never moves into a directory): nothing is ever replaced.
 */
export function installScript(o: { dir: string; version: string; incoming: string; sha256: string; unpack: Unpack; name: string }): string {
  if (!HEX64.test(o.sha256)) throw new NodropError("E_RELEASE", `not a sha256: ${describeValue(o.sha256)}`);
  if (!isIncomingPath(o.dir, o.incoming)) throw new NodropError("E_RELEASE", `${describeValue(o.incoming)} is not an upload directory of ${describeValue(o.dir)}`);
  if (!/^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/.test(o.name)) throw new NodropError("E_RELEASE", `artifact name ${describeValue(o.name)} is not a plain file name`);
  const release = releasePath(o.dir, o.version);
  const unpack = {
    "tar.gz": `tar -xzf ${UPLOADED_NAME} -C content --no-same-owner --no-same-permissions; rm -f -- ${UPLOADED_NAME}`,
    tar: `tar -xf ${UPLOADED_NAME} -C content --no-same-owner --no-same-permissions; rm -f -- ${UPLOADED_NAME}`,
    none: `mv -- ${UPLOADED_NAME} content/${shellQuote(o.name)}`,
  }[o.unpack];
  return [
    "set -eu",
    `t=${shellQuote(o.incoming)}; r=${shellQuote(release)}; want=${o.sha256}`,
    // Whatever happens (a bad checksum, a full disk while unpacking), nothing of the upload stays.
    `trap 'cd / && rm -rf -- "$t"' EXIT`,
    'cd -- "$t"',
    `got=$(sha256sum -- ${UPLOADED_NAME} | cut -d " " -f 1)`,
    '[ "$got" = "$want" ] || { echo "checksum mismatch: the file on this host has sha256 $got, nodrop sent $want" >&2; exit 3; }',
    "mkdir content",
    unpack,
    // The artifact's own marker (a copied release, a link planted in the tarball) never counts.
    `rm -rf -- content/${RELEASE_MARKER}`,
    `printf 'version=%s\\nsha256=%s\\n' ${shellQuote(o.version)} "$want" > content/${RELEASE_MARKER}`,
    'mv -T -- content "$r"',
  ].join("\n");
}

/** An empty release (for a prepare command that fills it, e.g. a git checkout), made by one rename too. */
export function emptyReleaseScript(dir: string, version: string, incoming: string): string {
  if (!isIncomingPath(dir, incoming)) throw new NodropError("E_RELEASE", `${describeValue(incoming)} is not an upload directory of ${describeValue(dir)}`);
  const release = releasePath(dir, version);
  return [
    "set -eu",
    `t=${shellQuote(incoming)}; r=${shellQuote(release)}`,
    `trap 'rm -rf -- "$t"' EXIT`,
    'mkdir -- "$t/content"',
    `printf 'version=%s\\nsha256=none\\n' ${shellQuote(version)} > "$t/content/${RELEASE_MARKER}"`,
    'mv -T -- "$t/content" "$r"',
  ].join("\n");
}

/** Records in the marker that prepare succeeded for `hash` (a temp file and a rename: never half written). */
export function markPreparedScript(dir: string, version: string, hash: string): string {
  if (!HEX64.test(hash)) throw new NodropError("E_RELEASE", `not a sha256: ${describeValue(hash)}`);
  const release = releasePath(dir, version);
  return [
    "set -eu",
    `r=${shellQuote(release)}; f="$r/${RELEASE_MARKER}"`,
    // A regular file, not a link or a FIFO (prepare runs the user's command in the release).
    '[ -d "$r" ] && [ ! -L "$r" ] && [ -f "$f" ] && [ ! -L "$f" ] || { echo "$r or its marker is missing, a link or not a file" >&2; exit 1; }',
    `tmp=$(mktemp -- "$f.XXXXXX")`,
    `{ grep -v '^prepared=' -- "$f" || true; printf 'prepared=%s\\n' ${hash}; } > "$tmp"`,
    'mv -fT -- "$tmp" "$f"',
  ].join("\n");
}

/** Lists the releases nodrop made in `dir` (a directory with its marker): `release <name> <marker's mtime>` per line. */
export function listReleasesScript(dir: string): string {
  return [
    "set -eu",
    `d=${shellQuote(dir)}`,
    '[ -e "$d" ] || [ -L "$d" ] || exit 0',
    stateGuard([{ path: dir, type: "dir" }]).trimEnd(),
    'for r in "$d"/*; do',
    `  [ -d "$r" ] && [ ! -L "$r" ] && [ -f "$r/${RELEASE_MARKER}" ] && [ ! -L "$r/${RELEASE_MARKER}" ] || continue`,
    // Nanoseconds where stat has them (GNU coreutils 8.6 on), else seconds: several deploys a second still sort.
    `  printf 'release %s %s\\n' "$(basename -- "$r")" "$(stat -c %.9Y -- "$r/${RELEASE_MARKER}" 2>/dev/null || stat -c %Y -- "$r/${RELEASE_MARKER}")"`,
    "done",
  ].join("\n");
}

/** The releases `listReleasesScript` printed, each name checked (a name is what `rm` gets). */
export function parseReleaseList(stdout: string): { name: string; mtime: number }[] {
  return stdout
    .split("\n")
    .map((line) => /^release (\S+) (\d{1,15}(?:\.\d{1,9})?)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && isSafeName(m[1]))
    .map((m) => ({ name: m[1]!, mtime: Number(m[2]) }));
}

/**
 * Removes releases by name from `dir`, each renamed out of the way first (one rename: a cut prune
 * leaves a hidden leftover, never half a release under its name). Every name is a version, checked
 * here again, and `dir` passes the state directory's check.
 */
export function removeReleasesScript(dir: string, host: string, names: readonly string[]): string {
  for (const name of names) if (!isSafeName(name)) throw new NodropError("E_RELEASE", `not a release name: ${describeValue(name)}`);
  releasePath(dir, names[0] ?? "x");
  const removing = leftoverPrefixes(host)[1];
  return [
    "set -eu",
    stateGuard([{ path: dir, type: "dir" }]).trimEnd(),
    `cd -- ${shellQuote(dir)}`,
    `for r in ${names.map(shellQuote).join(" ")}; do`,
    '  [ -d "$r" ] && [ ! -L "$r" ] || continue',
    `  t=$(mktemp -d -- ${removing}XXXXXX)`,
    '  mv -T -- "$r" "$t/release"',
    '  rm -rf -- "$t"',
    "done",
  ].join("\n");
}
