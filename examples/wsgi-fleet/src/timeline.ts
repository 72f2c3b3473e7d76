import { compareVersions, type RequestRecord } from "@nodrop/loadgen";

export interface TimelinePhase {
  name: string;
  /** ms since load start, like the records' times. */
  startMs: number;
  endMs: number;
}

export interface TimelineInput {
  title: string;
  records: readonly RequestRecord[];
  phases: readonly TimelinePhase[];
  /**
   * Instance endpoints the routing in force served, each from `atMs` (ms since load start) until
   * the next: drawn as a step line on a second y axis on the right. None: no line, no axis.
   */
  serving?: readonly { atMs: number; count: number }[];
  /** Width of one bar, in ms of completion time. Default 250. */
  bucketMs?: number;
  /** Default 960. */
  width?: number;
  /** Default 420. */
  height?: number;
}

// Tableau-like palette without red: red means "failed" and nothing else.
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#86bcb6", "#bab0ac"];
const FAILED = "#d62728";
const BANDS = ["#f3f3f3", "#e6edf5"];
const NO_VERSION = "(no version)";
const FONT = 11;
const CHAR_W = 6.2; // rough width of one character at FONT px: enough to decide whether a label fits
const RED_STRIP = 8; // height of the strip of red ticks under the x axis
const SERVING = "#222222"; // dark, not a version's colour: it is a count, not traffic

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!);
const r1 = (n: number) => Math.round(n * 10) / 10; // coordinates to 0.1 px keep the file small
const secs = (ms: number) => String(Math.round(ms) / 1000);
const isFailed = (r: RequestRecord) => r.error !== undefined || r.status < 200 || r.status > 299;

/** A round step (1, 2 or 5 times a power of ten) giving at most `maxTicks` ticks over `span`. */
function niceStep(span: number, maxTicks: number): number {
  const raw = span / Math.max(1, maxTicks);
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw * 0.999)!;
}

/**
 * Colours keyed by the version's last number (v1 blue, v2 orange, ...), so two charts of different
 * runs agree; by sorted position when that would give two versions of this chart the same colour.
 */
function versionColours(versions: readonly string[]): Map<string, string> {
  const named = versions.filter((v) => v !== NO_VERSION);
  const lastNumber = (v: string) => /\d+(?!.*\d)/.exec(v)?.[0];
  const byNumber = named.map((v) => (lastNumber(v) === undefined ? undefined : PALETTE[(Number(lastNumber(v)) + PALETTE.length - 1) % PALETTE.length]));
  const distinct = byNumber.every((c, i) => c !== undefined && byNumber.indexOf(c) === i);
  return new Map([...named.map((v, i) => [v, distinct ? byNumber[i]! : PALETTE[i % PALETTE.length]!] as const), [NO_VERSION, "#888888"] as const]);
}

/**
 * Draws a deploy under load as a self-contained SVG: completed requests per time bucket stacked by
 * the version that answered, failures in red on top (and as ticks under the axis, since one failure
 * among hundreds is thinner than a pixel), the deploy's phases as labelled background bands.
 * Every bar segment carries data-version/data-count and a <title> tooltip with its numbers.
 */
export function timelineSvg(input: TimelineInput): string {
  const bucketMs = input.bucketMs ?? 250;
  const width = input.width ?? 960;
  const height = input.height ?? 420;
  const phases = [...input.phases].sort((a, b) => a.startMs - b.startMs);
  const serving = [...(input.serving ?? [])].sort((a, b) => a.atMs - b.atMs);
  // A loop, not Math.max(...records): a long load has more records than a call takes arguments.
  let lastMs = bucketMs;
  for (const p of phases) lastMs = Math.max(lastMs, p.endMs);
  for (const r of input.records) lastMs = Math.max(lastMs, r.end);
  const n = Math.floor(lastMs / bucketMs) + 1;
  const domainMs = n * bucketMs;

  // Count by completion time; a failure counts as failed whatever version (if any) answered it.
  const counts = new Map<string, number[]>();
  const failed = new Array<number>(n).fill(0);
  const failTimes: number[] = [];
  for (const r of input.records) {
    const b = Math.min(n - 1, Math.max(0, Math.floor(r.end / bucketMs)));
    if (isFailed(r)) {
      failed[b]!++;
      failTimes.push(r.end);
      continue;
    }
    const v = r.version ?? NO_VERSION;
    if (!counts.has(v)) counts.set(v, new Array<number>(n).fill(0));
    counts.get(v)![b]!++;
  }
  const versions = [...counts.keys()].sort((a, b) => (a === NO_VERSION ? 1 : b === NO_VERSION ? -1 : compareVersions(a, b)));
  const colour = versionColours(versions);
  const total = (v: string) => counts.get(v)!.reduce((a, b) => a + b, 0);

  // Legend first: its rows decide how much height is left for the plot.
  const legendItems: { label: string; fill: string; line?: boolean }[] = [
    ...versions.map((v) => ({ label: `${v} (${total(v)})`, fill: colour.get(v)! })),
    { label: `failed (${failTimes.length})`, fill: FAILED },
    { label: `phase (${phases.length})`, fill: BANDS[1]! },
    ...(serving.length > 0 ? [{ label: `instances serving (min ${Math.min(...serving.map((s) => s.count))})`, fill: SERVING, line: true }] : []),
  ];
  let lx = 56;
  let rows = 1;
  const legendAt: { x: number; row: number }[] = [];
  for (const item of legendItems) {
    const w = 18 + item.label.length * CHAR_W + 16;
    if (lx + w > width - 16 && lx > 56) [lx, rows] = [56, rows + 1];
    legendAt.push({ x: lx, row: rows - 1 });
    lx += w;
  }
  const left = 56, right = width - (serving.length > 0 ? 44 : 16), top = 52; // title, then a strip for horizontal phase labels; a right axis needs room
  const bottom = height - 50 - rows * 18; // x tick labels, axis title, red-tick strip and legend below
  const plotH = bottom - top;
  const x = (ms: number) => r1(left + (ms / domainMs) * (right - left));
  const perSec = 1000 / bucketMs;
  const maxRps = failed.reduce((m, f, i) => Math.max(m, (f + versions.reduce((s, v) => s + counts.get(v)![i]!, 0)) * perSec), 0);
  const yStep = niceStep(maxRps || 1, 5);
  const yMax = Math.max(yStep, Math.ceil(maxRps / yStep) * yStep);
  const y = (rps: number) => r1(bottom - (rps / yMax) * plotH);

  // Layers, back to front: bands, grid, bars, then what must stay readable over the bars.
  const bands: string[] = [];
  const overlay: string[] = [];
  const grid: string[] = [];
  const bars: string[] = [];

  // Phases: alternating bands from the label strip down to the axis. A label goes horizontally
  // above the plot when it fits its band, rotated (over the bars, with a white halo) when the band
  // is at least one line wide, else only into the band's tooltip: many short phases never pile up.
  phases.forEach((p, i) => {
    const x0 = x(Math.max(0, p.startMs));
    const w = Math.max(0.5, x(Math.min(domainMs, p.endMs)) - x0);
    const tip = `${p.name}: ${secs(p.startMs)}–${secs(p.endMs)} s`;
    bands.push(`<rect class="phase" data-phase="${esc(p.name)}" x="${x0}" y="${top - 16}" width="${r1(w)}" height="${plotH + 16}" fill="${BANDS[i % 2]}"><title>${esc(tip)}</title></rect>`);
    if (w < FONT + 2) return;
    // Bars hide the bands, so a labelled phase also gets its start marked across the bars.
    overlay.push(`<line x1="${x0}" x2="${x0}" y1="${top - 16}" y2="${bottom}" stroke="#555555" stroke-opacity="0.5" stroke-dasharray="2 3"/>`);
    if (p.name.length * CHAR_W + 6 <= w) {
      overlay.push(`<text x="${r1(x0 + 3)}" y="${top - 4}">${esc(p.name)}</text>`);
    } else {
      const max = Math.floor((plotH - 8) / CHAR_W);
      const label = p.name.length > max ? `${p.name.slice(0, max - 1)}…` : p.name;
      const [tx, ty] = [r1(x0 + w / 2 - FONT * 0.35), top + 4]; // rotate(90) puts the glyphs right of x
      overlay.push(`<text x="${tx}" y="${ty}" transform="rotate(90 ${tx} ${ty})" stroke="#ffffff" stroke-width="3" paint-order="stroke">${esc(label)}</text>`);
    }
  });

  // Axes with light grid lines; the x axis in seconds, whatever the bucket size.
  for (let k = 0; k * yStep <= yMax * 1.000001; k++) {
    const v = k * yStep;
    grid.push(`<line x1="${left}" x2="${right}" y1="${y(v)}" y2="${y(v)}" stroke="${k === 0 ? "#333333" : "#cccccc"}" stroke-width="${k === 0 ? 1 : 0.5}"/>`);
    grid.push(`<text x="${left - 5}" y="${y(v) + 4}" text-anchor="end">${+v.toFixed(6)}</text>`);
  }
  const xStep = niceStep(domainMs / 1000, Math.floor((right - left) / 60)) * 1000;
  for (let k = 0; k * xStep <= domainMs * 1.000001; k++) {
    grid.push(`<line x1="${x(k * xStep)}" x2="${x(k * xStep)}" y1="${bottom}" y2="${bottom + 4}" stroke="#333333"/>`);
    grid.push(`<text x="${x(k * xStep)}" y="${bottom + RED_STRIP + 16}" text-anchor="middle">${secs(k * xStep)}</text>`);
  }
  grid.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${bottom}" stroke="#333333"/>`);
  grid.push(`<text x="${r1((left + right) / 2)}" y="${bottom + RED_STRIP + 32}" text-anchor="middle">seconds since load start (bars: ${bucketMs} ms, by completion time)</text>`);
  grid.push(`<text x="14" y="${r1(top + plotH / 2)}" transform="rotate(-90 14 ${r1(top + plotH / 2)})" text-anchor="middle">requests / s</text>`);

  // Bars: versions stacked bottom-up in version order, failures in red on top.
  const bw = r1(Math.max(0.5, x(bucketMs) - x(0) - (x(bucketMs) - x(0) > 4 ? 1 : 0)));
  for (let i = 0; i < n; i++) {
    let base = 0;
    const span = `${secs(i * bucketMs)}–${secs((i + 1) * bucketMs)} s`;
    const stack = [...versions.map((v) => [v, counts.get(v)![i]!, colour.get(v)!] as const), ["failed", failed[i]!, FAILED] as const];
    for (const [key, count, fill] of stack) {
      if (count === 0) continue;
      const [yTop, yBase] = [y((base + count) * perSec), y(base * perSec)];
      const tip = `${key}: ${count} requests (${r1(count * perSec)}/s) at ${span}`;
      bars.push(`<rect class="bar${key === "failed" ? " failed" : ""}" data-version="${esc(key)}" data-count="${count}" x="${x(i * bucketMs)}" y="${yTop}" width="${bw}" height="${r1(Math.max(0.5, yBase - yTop))}" fill="${fill}"><title>${esc(tip)}</title></rect>`);
      base += count;
    }
  }

  // One red tick per pixel column with failures: visible even when the red bar segment is not.
  const ticks = new Map<number, number>();
  for (const t of failTimes) ticks.set(Math.round(x(t)), (ticks.get(Math.round(x(t))) ?? 0) + 1);
  for (const [px, count] of ticks) overlay.push(`<line data-count="${count}" x1="${px}" x2="${px}" y1="${bottom + 2}" y2="${bottom + 2 + RED_STRIP}" stroke="${FAILED}" stroke-width="1.5"><title>${count} failed</title></line>`);

  const servingLine = servingLayer(serving, { right, top, bottom, domainMs, x });

  const legend = legendItems.map((item, i) => {
    const { x: lx, row } = legendAt[i]!;
    const ly = height - 8 - (rows - 1 - row) * 18;
    const swatch = item.line
      ? `<line x1="${r1(lx)}" x2="${r1(lx + 12)}" y1="${ly - 4}" y2="${ly - 4}" stroke="${item.fill}" stroke-width="2"/>`
      : `<rect x="${r1(lx)}" y="${ly - 10}" width="12" height="12" fill="${item.fill}" stroke="#999999" stroke-width="0.5"/>`;
    return `${swatch}<text x="${r1(lx + 17)}" y="${ly}">${esc(item.label)}</text>`;
  });

  const font = `font-size="${FONT}" fill="#333333"`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<title>${esc(input.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="20" font-size="14" font-weight="bold" fill="#222222">${esc(input.title)}</text>`,
    `<g class="phases">`, ...bands, `</g>`,
    `<g class="axes" ${font}>`, ...grid, `</g>`,
    `<g class="bars">`, ...bars, `</g>`,
    `<g class="overlay" ${font}>`, ...overlay, `</g>`,
    ...(servingLine.length > 0 ? [`<g class="serving" ${font}>`, ...servingLine, `</g>`] : []),
    `<g class="legend" ${font}>`, ...legend, `</g>`,
    `</svg>`,
    "",
  ].join("\n");
}

interface Plot {
  right: number;
  top: number;
  bottom: number;
  domainMs: number;
  x: (ms: number) => number;
}

/**
 * The instances-serving step line and its right-hand integer axis. The axis goes one step above
 * the largest count, so that the line at full fleet sits below the top of the tallest bars' area
 * and a drop by one instance is still a visible step.
 */
function servingLayer(serving: readonly { atMs: number; count: number }[], plot: Plot): string[] {
  if (serving.length === 0) return [];
  const { right, top, bottom, domainMs, x } = plot;
  const max = Math.max(1, ...serving.map((s) => s.count));
  const step = Math.max(1, niceStep(max, 4));
  const axisMax = (Math.floor(max / step) + 1) * step;
  const y = (count: number) => r1(bottom - (count / axisMax) * (bottom - top));
  const out: string[] = [];
  for (let k = 0; k * step <= axisMax; k++) {
    const v = k * step;
    out.push(`<line x1="${right}" x2="${right + 4}" y1="${y(v)}" y2="${y(v)}" stroke="#333333"/>`);
    out.push(`<text x="${right + 6}" y="${y(v) + 4}">${v}</text>`);
  }
  out.push(`<line x1="${right}" x2="${right}" y1="${top}" y2="${bottom}" stroke="#333333"/>`);
  const mid = r1(top + (bottom - top) / 2);
  const ax = r1(right + 34);
  out.push(`<text x="${ax}" y="${mid}" transform="rotate(90 ${ax} ${mid})" text-anchor="middle">instances serving</text>`);
  // A step line: each count holds from its sample to the next (the last one to the chart's end).
  const points: string[] = [];
  serving.forEach((s, i) => {
    const from = x(Math.min(domainMs, Math.max(0, s.atMs)));
    const to = x(Math.min(domainMs, Math.max(0, serving[i + 1]?.atMs ?? domainMs)));
    points.push(`${from},${y(s.count)}`, `${to},${y(s.count)}`);
  });
  const tips = serving.map((s, i) => `${s.count} from ${secs(s.atMs)} s${serving[i + 1] ? ` to ${secs(serving[i + 1]!.atMs)} s` : ""}`).join("; ");
  out.push(`<polyline points="${points.join(" ")}" fill="none" stroke="#ffffff" stroke-width="4" stroke-opacity="0.8"/>`);
  out.push(`<polyline class="serving-line" data-counts="${serving.map((s) => s.count).join(",")}" points="${points.join(" ")}" fill="none" stroke="${SERVING}" stroke-width="1.5"><title>${esc(`instances serving: ${tips}`)}</title></polyline>`);
  return out;
}
