"""Prints the Markdown report of one benches/load/run.sh run from the files in OUT:
meta.txt, results.tsv, openssl-speed.txt, memory.tsv and micro.txt.

    python3 report.py target/bench-load
"""

import os
import re
import sys

out = sys.argv[1]


def read(name):
    path = os.path.join(out, name)
    return open(path).read() if os.path.exists(path) else ""


meta = dict(line.split("=", 1) for line in read("meta.txt").splitlines() if "=" in line)
tick = 1e6 / float(meta.get("clk_tck", "100"))  # µs per clock tick

rows = []  # dicts, in run order
for line in read("results.tsv").splitlines():
    f = line.split("\t")
    nums = [int(x) for x in f[4].split()]
    reqs, dur_us, e_conn, e_read, e_write, e_status, e_timeout, p50, p99, p999 = nums
    proxy_ticks, up_ticks, hwm_kb = int(f[5]), int(f[6]), int(f[7])
    rows.append(
        dict(
            id=f[0], label=f[1], expect=int(f[2]), conns=int(f[3]), reqs=reqs,
            rps=reqs / (dur_us / 1e6) if dur_us else 0.0,
            socket_errors=e_conn + e_read + e_write + e_timeout, status_errors=e_status,
            p50=p50, p99=p99, p999=p999,
            proxy_us=proxy_ticks * tick / reqs if reqs else float("nan"),
            up_us=up_ticks * tick / reqs if reqs else float("nan"),
            hwm_mib=hwm_kb / 1024,
        )
    )


def row(rid, conns=32):
    return next((r for r in rows if r["id"] == rid and r["conns"] == conns), None)


def check(r):
    bad = []
    if r["socket_errors"]:
        bad.append(f"{r['socket_errors']} socket errors")
    wanted = 0 if r["expect"] < 400 else r["reqs"]
    if r["status_errors"] != wanted:
        bad.append(f"{r['status_errors']} of {r['reqs']} ≥ 400 (expected {r['expect']})")
    return "; ".join(bad) or f"all {r['expect']}"


print(f"## Load benchmark, {meta.get('date', '?')} ({meta.get('mode')} run, commit {meta.get('commit')})")
print()
print(
    f"{meta.get('cpu')}, {meta.get('cores')} cores, Linux {meta.get('kernel')}; nginx "
    f"{meta.get('nginx')}, HAProxy {meta.get('haproxy')}, wrk {meta.get('wrk')} (1 thread). "
    f"Servers and the upstream on cpu {meta.get('server_cpu')}, wrk on cpu "
    f"{meta.get('client_cpu')}. {meta.get('duration')} s per row at 32 connections, "
    f"{meta.get('duration1')} s at 1, after {meta.get('warmup')} s of warm-up. CPU from "
    f"/proc utime+stime ({tick:.0f} µs ticks). Load average (1/5/15 min) {meta.get('loadavg')}: "
    "anything above ~2 means other work shared the cores."
)
print()
if meta.get("mode") == "smoke":
    print("**Smoke run: debug binary, 1 s rows, no warm-up. It proves the script works; its figures mean nothing.**")
    print()
print("| row | conns | req/s | × nginx | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req | upstream CPU µs/req | peak RSS MiB | responses |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
for r in rows:
    base = row("nginx", r["conns"])
    ratio = f"{r['rps'] / base['rps']:.2f}" if base and base["rps"] else "-"
    direct = r["id"] == "direct"
    proxy_us = "-" if direct else f"{r['proxy_us']:.1f}"
    hwm = "-" if direct else f"{r['hwm_mib']:.1f}"
    print(
        f"| {r['label']} | {r['conns']} | {r['rps']:,.0f} | {ratio} | {r['p50']} | {r['p99']} | "
        f"{r['p999']} | {proxy_us} | {r['up_us']:.1f} | {hwm} | {check(r)} |"
    )
print()

# Raw signature verification, from openssl speed on the server core.
speed = read("openssl-speed.txt")
raw = {}
m = re.search(r"^rsa 2048 bits\s.*\s([\d.]+)\s*$", speed, re.M)
if m:
    raw["RS256"] = 1e6 / float(m.group(1))
m = re.search(r"^\s*256 bits ecdsa \(nistp256\)\s.*\s([\d.]+)\s*$", speed, re.M)
if m:
    raw["ES256"] = 1e6 / float(m.group(1))
print(
    "Raw verify (`openssl speed rsa2048 ecdsap256`, same core): "
    + ", ".join(f"{k} {v:.1f} µs" for k, v in raw.items())
)
print()

# Memory.
mem = []
for line in read("memory.tsv").splitlines():
    label, ok, failed, idle, open_, hwm, after = line.split("\t")
    ok = int(ok)
    per = (int(open_) - int(idle)) / ok if ok else float("nan")
    mem.append(dict(label=label, ok=ok, failed=int(failed), idle=int(idle), open=int(open_),
                    hwm=int(hwm), after=int(after), per=per))
if mem:
    print(f"### Memory: {meta.get('mem_conns')} idle keep-alive connections (each served one request)")
    print()
    print("| server | RSS idle MiB | RSS with connections MiB | KiB per connection | peak MiB | RSS after close MiB | connections ok / failed |")
    print("|---|--:|--:|--:|--:|--:|---|")
    for x in mem:
        print(
            f"| {x['label']} | {x['idle'] / 1024:.1f} | {x['open'] / 1024:.1f} | {x['per']:.1f} | "
            f"{x['hwm'] / 1024:.1f} | {x['after'] / 1024:.1f} | {x['ok']} / {x['failed']} |"
        )
    print()

# Micro benchmarks: lines "= key value" from benches/routes.rs and benches/micro.rs.
micro = dict(
    (m.group(1), float(m.group(2)))
    for m in re.finditer(r"^= (\S+) ([\d.]+)\s*$", read("micro.txt"), re.M)
)
if micro:
    print("### Micro benchmarks (ns per operation, median of runs)")
    print()
    print("```")
    print("\n".join(l for l in read("micro.txt").splitlines() if not l.startswith("= ")).strip())
    print("```")
    print()

# Targets.
def fmt(x, unit=""):
    return "n/a" if x is None else f"{x:.2f}{unit}"


targets = []


def target(name, value, goal, met):
    targets.append((name, value, goal, "n/a" if met is None else ("met" if met else "**not met**")))


n32, n1, d1 = row("nginx"), row("nginx", 1), row("direct", 1)
rc, rc1 = row("rs-cached"), row("rs-cached", 1)
if n32 and rc:
    v = rc["rps"] / n32["rps"]
    target("RS256 cached: throughput", f"{v:.2f}× nginx", "≥ 1.0×", v >= 1.0)
    v = rc["proxy_us"] / n32["proxy_us"]
    target("RS256 cached: proxy CPU/req", f"{rc['proxy_us']:.1f} vs {n32['proxy_us']:.1f} µs ({v:.2f}×)", "≤ nginx's", v <= 1.0)
if n1 and rc1 and d1:
    a, b = rc1["p50"] - d1["p50"], n1["p50"] - d1["p50"]
    target("RS256 cached: added p50 at 1 conn", f"{a} vs nginx {b} µs", "≤ nginx's", a <= b)
else:
    target("RS256 cached: added p50 at 1 conn", "n/a", "≤ nginx's", None)
for alg, rid in (("RS256", "rs-nocache"), ("ES256", "es-nocache")):
    r = row(rid)
    if n32 and r and alg in raw:
        extra = (r["proxy_us"] - n32["proxy_us"]) / raw[alg]
        target(
            f"{alg} cache off: proxy CPU/req",
            f"{r['proxy_us']:.1f} µs = nginx {n32['proxy_us']:.1f} + {extra:.2f}× raw verify ({raw[alg]:.1f} µs)",
            "≤ nginx + 1.5× raw", extra <= 1.5,
        )
for rid, other, name in (
    ("badsig", "rs-nocache", "bad signature vs accept with cache off"),
    ("expired", "rs-cached", "expired vs cached accept"),
    ("malformed", "rs-cached", "malformed vs cached accept"),
):
    a, b = row(rid), row(other)
    if a and b:
        target(f"reject {name}: CPU/req", f"{a['proxy_us']:.1f} vs {b['proxy_us']:.1f} µs ({a['proxy_us'] / b['proxy_us']:.2f}×)", "≤ 1.0×", a["proxy_us"] <= b["proxy_us"])
pub, publog = row("public"), row("public-log")
if pub and n32:
    v = pub["rps"] / n32["rps"]
    target("public route: throughput", f"{v:.2f}× nginx", "≥ 1.1×", v >= 1.1)
if pub and publog:
    v = 1 - publog["rps"] / pub["rps"]
    target("access log on: throughput cost", f"{v * 100:.1f}%", "≤ 10%", v <= 0.10)
    nl = row("nginx-log")
    if nl and n32:
        target("(nginx's own access log cost, for reference)", f"{(1 - nl['rps'] / n32['rps']) * 100:.1f}%", "-", None)
for x in mem:
    if x["label"] == "authgate, plaintext":
        target("RSS idle", f"{x['idle'] / 1024:.1f} MiB", "≤ 20 MiB", x["idle"] <= 20 * 1024)
        target("KiB per idle connection, plaintext", f"{x['per']:.1f}", "≤ 30", x["per"] <= 30)
    if x["label"] == "authgate, TLS":
        target("KiB per idle connection, TLS", f"{x['per']:.1f}", "report", None)
if "route_10000_ns" in micro:
    v = micro["route_10000_ns"]
    target("route match, 10,000 routes", f"{v:.0f} ns", "≤ 1 µs", v <= 1000)
if "denylist_1m_ns" in micro:
    v = micro["denylist_1m_ns"]
    target("denylist lookup, 1,000,000 entries", f"{v:.0f} ns", "≤ 200 ns", v <= 200)
again = row("nginx-again")
if again and n32:
    target("(drift: nginx again at the end / nginx)", f"{again['rps'] / n32['rps']:.2f}", "-", None)

print("### Targets (issue #11)")
print()
print("| target | measured | goal | |")
print("|---|---|---|---|")
for name, value, goal, met in targets:
    print(f"| {name} | {value} | {goal} | {met} |")
