import { open } from "node:fs/promises";
import { NodropError, abortError } from "./errors.js";
import { type Executor, execOrThrow } from "./executor.js";
import { shellQuote } from "./template.js";

export interface UploadOptions {
  readonly signal?: AbortSignal | undefined;
  /** Called as bytes go out, at most every few percent: bytes sent so far and the file's size. */
  readonly onProgress?: ((sentBytes: number, totalBytes: number) => void) | undefined;
}

/** Raw bytes per exec when an executor has no upload of its own (base64 makes each a third larger). */
const CHUNK_BYTES = 3 * 1024 * 1024;

/**
 * Copies a local file to `remoteFile` on the executor's host, a path in a directory the caller
 * made for it (nothing else is created). Through the executor's own `upload` (SFTP over the SSH
 * connection, a copy locally); an executor without one (a plugin's) gets the file in base64
 * chunks through `exec`, so every executor can take an artifact. Whether the bytes arrived intact
 * is for the caller to check on the host (its sha256).
 */
export async function uploadFile(executor: Executor, localFile: string, remoteFile: string, options: UploadOptions = {}): Promise<void> {
  if (options.signal?.aborted) throw abortError(options.signal);
  if (executor.upload) return executor.upload(localFile, remoteFile, options);
  await uploadThroughExec(executor, localFile, remoteFile, options);
}

async function uploadThroughExec(executor: Executor, localFile: string, remoteFile: string, options: UploadOptions): Promise<void> {
  const file = await open(localFile, "r");
  try {
    const total = (await file.stat()).size;
    const target = shellQuote(remoteFile);
    await execOrThrow(executor, `: > ${target}`, `creating ${remoteFile}`, { signal: options.signal });
    const buffer = Buffer.alloc(CHUNK_BYTES);
    for (let sent = 0; sent < total; ) {
      if (options.signal?.aborted) throw abortError(options.signal);
      const { bytesRead } = await file.read(buffer, 0, CHUNK_BYTES, sent);
      if (bytesRead === 0) throw new NodropError("E_RELEASE", `${localFile} ended at ${sent} bytes while being sent to ${executor.host} (it was ${total}): was it changed meanwhile?`);
      await execOrThrow(executor, `base64 -d >> ${target}`, `writing ${remoteFile}`, { signal: options.signal, input: buffer.subarray(0, bytesRead).toString("base64") });
      sent += bytesRead;
      options.onProgress?.(sent, total);
    }
  } finally {
    await file.close();
  }
}

/**
 * Reports progress at most once per `step` of the total (and always at the end), so a 1 GB upload
 * makes a few dozen log lines, not thousands.
 */
export function throttledProgress(onProgress: ((sent: number, total: number) => void) | undefined, step = 0.1): ((sent: number, total: number) => void) | undefined {
  if (!onProgress) return undefined;
  let next = 0;
  return (sent, total) => {
    if (sent < total && sent < next) return;
    next = sent + Math.max(1, Math.floor(total * step));
    onProgress(sent, total);
  };
}

/** A size for people: KiB below one MiB, MiB with one decimal below 10, whole MiB above. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.max(1, Math.round(bytes / 1024))} KiB`;
  const mib = bytes / 1024 / 1024;
  return `${mib.toFixed(mib < 10 ? 1 : 0)} MiB`;
}
