import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { adminStateOf, parseServersState, parseStatCsv, runtimeApi } from "./runtime-api.js";

// Answers recorded from HAProxy 2.6.12 (Debian 12).
const SERVERS_STATE = `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 web 1 web-8711 127.0.0.1 2 8 1 1 2 1 0 2 0 0 0 0 - 8711 - 0 0 - - 0
3 web 2 web-8712 127.0.0.1 2 0 1 1 2 1 0 2 0 0 0 0 - 8712 - 0 0 - - 0
3 web 3 web-8713 127.0.0.1 0 1 1 1 2 6 3 4 6 0 0 0 - 8713 - 0 0 - - 0
3 web 4 web-8714 127.0.0.1 0 5 1 1 2 1 0 2 0 0 0 0 - 8714 - 0 0 - - 0
`;

const STAT_HEADER =
  "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,";
const STAT = `${STAT_HEADER}
web,web-8711,0,0,1,1,,3,0,0,,0,,0,0,0,0,DRAIN,1,1,0,,,2,,,1,3,1,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:8711,,http,,
web,web-8712,2,2,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0,,,2,,,1,3,2,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:8712,,http,,
web,web-8713,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,2,0,,1,3,3,,0,,2,0,,0,L4OK,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,"Layer4 check passed, ""really""",,2,3,4,,,,127.0.0.1:8713,,http,,
web,BACKEND,0,0,1,1,,3,0,0,,0,,0,0,0,0,UP,3,3,0,,0,2,0,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,
`;

describe("parsing HAProxy's answers", () => {
  it("reads `show servers state`: names, addresses, admin and operational state", () => {
    expect(parseServersState(SERVERS_STATE).map((s) => [s.name, `${s.address}:${s.port}`, s.admin, s.operational])).toEqual([
      ["web-8711", "127.0.0.1:8711", "drain", "running"],
      ["web-8712", "127.0.0.1:8712", "ready", "running"],
      ["web-8713", "127.0.0.1:8713", "maint", "stopped"],
      // Forced maint and config-disabled (CMAINT): maint wins.
      ["web-8714", "127.0.0.1:8714", "maint", "stopped"],
    ]);
  });

  it("combines admin flags the way HAProxy does", () => {
    expect([0, 0x04, 0x08, 0x10, 0x01, 0x02, 0x20, 0x09, 0x0c].map(adminStateOf)).toEqual(["ready", "ready", "drain", "drain", "maint", "maint", "maint", "maint", "drain"]);
  });

  it("reads sessions and queued requests from the `show stat` CSV, server rows only, quoted fields included", () => {
    expect(parseStatCsv(STAT).map((s) => [s.name, s.sessions, s.queued, s.status])).toEqual([
      ["web-8711", 1, 0, "DRAIN"],
      ["web-8712", 0, 2, "no check"],
      ["web-8713", 0, 0, "UP"],
    ]);
  });

  it("refuses output it does not recognise", () => {
    expect(() => parseServersState("Can't find backend.")).toThrow(/format version 1/);
    expect(() => parseStatCsv("Unknown command")).toThrow(/CSV header/);
  });
});

describe("runtimeApi over a socket", () => {
  let dir: string | undefined;
  let server: net.Server | undefined;
  afterEach(async () => {
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
    if (dir) await rm(dir, { recursive: true, force: true });
    server = undefined;
    dir = undefined;
  });

  /** A stand-in for HAProxy's non-interactive CLI: reads one line, answers, closes. */
  const fakeHaproxy = async (answer: (line: string) => string | undefined) => {
    dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-haproxy-api-"));
    const socket = path.join(dir, "admin.sock");
    const seen: string[] = [];
    server = net.createServer((connection) => {
      let input = "";
      connection.on("data", (chunk) => {
        input += chunk.toString();
        if (!input.endsWith("\n")) return;
        seen.push(input);
        const text = answer(input.trim());
        if (text !== undefined) connection.end(text);
      });
    });
    await new Promise<void>((resolve) => server!.listen(socket, resolve));
    return { socket, seen };
  };

  it("sends one command per connection and treats any answer to `set server` as a refusal", async () => {
    const { socket, seen } = await fakeHaproxy((line) => (line.endsWith("web-8799 state drain") ? "No such server.\n\n" : "\n"));
    const api = runtimeApi({ socket });
    await api.setState("web", "web-8711", "drain");
    await expect(api.setState("web", "web-8799", "drain")).rejects.toThrow("HAProxy refused `set server web/web-8799 state drain`: No such server.");
    expect(seen).toEqual(["set server web/web-8711 state drain\n", "set server web/web-8799 state drain\n"]);
  });

  it("never sends a name that could carry a second command", async () => {
    const { socket, seen } = await fakeHaproxy(() => "\n");
    const api = runtimeApi({ socket });
    for (const name of ["web-8711;shutdown sessions server web/web-8712", "web-8711\nset server web/web-8712 state maint", "web 8711", "web/8711", ""]) {
      await expect(api.setState("web", name, "maint")).rejects.toMatchObject({ code: "E_PROXY_SETUP" });
    }
    await expect(api.command("show info; shutdown frontend www")).rejects.toMatchObject({ code: "E_PROXY_SETUP" });
    expect(seen).toEqual([]);
  });

  it("fails with the socket named when nothing listens or nothing answers", async () => {
    await expect(runtimeApi({ socket: "/nonexistent/admin.sock" }).level()).rejects.toMatchObject({ code: "E_PROXY_RELOAD", message: expect.stringContaining("/nonexistent/admin.sock: no such socket") });
    const { socket } = await fakeHaproxy(() => undefined);
    await expect(runtimeApi({ socket, timeoutMs: 200 }).level()).rejects.toMatchObject({ code: "E_PROXY_RELOAD", message: expect.stringContaining("did not answer `show cli level` within 200ms") });
  });
});
