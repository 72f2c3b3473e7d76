import { NodropError } from "./errors.js";
import { shellQuote } from "./template.js";

/** Exit code of a command refused by {@link stateGuard}; its reason is on stderr. */
export const REFUSED = 3;

// The check behind stateGuard, defined once per script.
const GUARD_FUNCTION = [
  "nd_guard() {",
  '  if [ -L "$1" ]; then echo "$1 is a symbolic link (to $(readlink -- "$1")); nodrop does not follow links in its state directory: remove it" >&2; return 3; fi',
  '  [ -e "$1" ] || return 0',
  // A path that vanishes between the two checks (a lock being released) is absent, so it passes.
  '  local s; s=$(stat -c "%u %h %a" -- "$1" 2>/dev/null) || { [ -e "$1" ] || [ -L "$1" ] || return 0; echo "$1: cannot stat it" >&2; return 3; }',
  '  set -- "$1" "$2" $s',
  '  if [ "$2" = dir ] && [ ! -d "$1" ]; then echo "$1 is not a directory" >&2; return 3; fi',
  '  if [ "$2" = file ] && [ ! -f "$1" ]; then echo "$1 is not a regular file" >&2; return 3; fi',
  '  if [ "$3" != "$EUID" ]; then echo "$1 is owned by uid $3, not by uid $EUID that nodrop runs as" >&2; return 3; fi',
  '  if [ "$2" = dir ] && (( 8#$5 & 8#022 )); then echo "$1 is writable by others (mode $5): make it 0700 and check what is in it" >&2; return 3; fi',
  '  if [ "$2" = file ] && [ "$4" -gt 1 ]; then echo "$1 has $4 hard links" >&2; return 3; fi',
  "}",
].join("\n");

type GuardedPath = { readonly path: string; readonly type: "dir" | "file" };

/**
 * Bash that refuses the given paths on the proxy host before nodrop reads or writes them: a path
 * that is a symbolic link, is not of the expected type, is owned by another uid than the one the
 * command runs as, is a file with more than one hard link, or is a directory that group or others
 * may write to. An absent path passes. On refusal it prints the path and the reason on stderr and
 * exits {@link REFUSED}. A state directory that passes (ours, mode 0700) is one nobody else can
 * plant anything in, which is what makes the plain commands that follow it safe.
 */
export function stateGuard(paths: readonly GuardedPath[]): string {
  return `${GUARD_FUNCTION}\n${stateCheck(paths)}`;
}

/** The checks of {@link stateGuard} again, for a script that already holds its function (one definition per script). */
export function stateCheck(paths: readonly GuardedPath[]): string {
  return `${paths.map((p) => `nd_guard ${shellQuote(p.path)} ${p.type}`).join(" && ")} || exit ${REFUSED}\n`;
}

/** The error of a refused state path, naming the host. */
function refusal(code: "E_STATE" | "E_JOURNAL", what: string, host: string, stderr: string): NodropError {
  return new NodropError(code, `refusing ${what} on ${host}: ${stderr.trim().split("\n").at(-1)}`);
}
export { refusal as stateRefusal };

/**
 * Bash that makes sure nodrop's state directory exists, is a real directory owned by this uid and
 * is mode 0700, its files 0600 (tightening what an older nodrop created with the default mode), or
 * refuses it.
 */
export function prepareStateDir(dir: string): string {
  const paths = [{ path: dir, type: "dir" }] as const;
  return `umask 077\n${stateGuard(paths)}[ -e ${shellQuote(dir)} ] || mkdir -p -- ${shellQuote(dir)} || exit 1\n${stateCheck(paths)}chmod 700 -- ${shellQuote(dir)} || exit 1\nfind ${shellQuote(dir)} -mindepth 1 -maxdepth 1 -type f -perm /077 -exec chmod go-rwx -- {} + 2>/dev/null || true\n`;
}
