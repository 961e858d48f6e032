#!/usr/bin/env python3
"""A/B two ztunnel binaries on one local cluster, alternating.

Usage (root; iperf3 and python3 installed):
    sudo scripts/ztunnel-ab.py BIN_A BIN_B [--pairs 3] [--seconds 5] [--rr 3000] [--no-throughput]

One `meshctl local` cluster (named `ab`) is built once; for each pair,
both ztunnels are restarted with one binary, measured, restarted with the
other, measured (A first in odd pairs, B first in even ones).
Measured: each ztunnel's RSS once ready (idle); across nodes: single-stream iperf3 throughput and the ztunnels'
CPU during it, 64-stream throughput and the ztunnels' peak RSS (skipped
with --no-throughput), a 64-byte request/response p50/p99 over one
connection and with a new connection per request (pooled HBONE), and a
brand-new HBONE connection to first byte (the first connection to each of
12 echo pods, each its own pool key, after the above warmed the process)
(Python clients: they include ~10 us of their own). Prints every run and each binary's medians. Single runs on a shared
2-core machine differ by more than most changes; this is how the per-change
table in docs/performance.md was measured. The cluster is removed at exit.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

NAME = "ab"
STATE = f"/var/run/mesh-local/{NAME}/state.json"

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec: {nodeName: node-a, serviceAccountName: client, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: mesh}
spec:
  nodeName: node-b
  serviceAccountName: server
  containers:
  - {name: echo, image: none, command: [mesh-sample, echo, --port, "8080"]}
"""

# Echo pods nothing talks to until the new-connection measurement: the first
# connection to each needs a brand-new HBONE connection (its own pool key).
FRESH_PODS = 12
FRESH = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: fresh-{i}, namespace: mesh}}
spec:
  nodeName: node-b
  serviceAccountName: server
  containers:
  - {{name: echo, image: none, command: [mesh-sample, echo, --port, "8080"]}}
""" for i in range(FRESH_PODS))

# 64-byte request/response, p50 and p99 in us. `new`: a new connection for
# each request (timed from connect), else one connection for all.
RR_CLIENT = """
import socket, sys, time
host, n, new = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "new"
warm = 100 if new else 500
def connect():
    s = socket.create_connection((host, 8080)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
s = None if new else connect()
req = b"a" * 64; lat = []
for i in range(n + warm):
    t = time.perf_counter_ns()
    c = connect() if new else s
    c.sendall(req); got = 0
    while got < 64: got += len(c.recv(64 - got))
    if i >= warm: lat.append(time.perf_counter_ns() - t)
    if new: c.close()
lat.sort()
print(lat[len(lat) // 2] / 1000, lat[int((len(lat) - 1) * 0.99)] / 1000)
"""

FIRST_BYTE_CLIENT = """
import socket, sys, time
warm, targets = sys.argv[1], sys.argv[2:]
socket.create_connection((warm, 8080)).close()  # Python's own first-connection cost
lat = []
for host in targets:
    t = time.perf_counter_ns()
    s = socket.create_connection((host, 8080)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"x"); s.recv(1)
    lat.append(time.perf_counter_ns() - t)
    s.close()
lat.sort()
print(lat[len(lat) // 2] / 1000, lat[-1] / 1000)
"""

READY = """
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", 15021), timeout=1)
    s.sendall(b"GET /healthz/ready HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    sys.exit(0 if s.recv(64).split(b" ")[1] == b"200" else 1)
except Exception:
    sys.exit(1)
"""


def netns(ns, *cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, **kw)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def environment_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = f.read().decode(errors="replace").split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def alive(pid):
    """Running and not yet a zombie (meshctl's children are reaped by init)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith(field + ":")).split()[1])


def peak_kib(pid):
    return status_kib(pid, "VmHWM")


def iperf(ns, host, seconds, streams):
    out = netns(ns, "iperf3", "-c", host, "-t", str(seconds), "-l", "256K", "-P", str(streams),
                "-J", capture_output=True, text=True).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8 / 2**20


class Ztunnels:
    """The cluster's two ztunnels, restartable with another binary."""

    def __init__(self, state, logdir):
        self.components = [c for c in state["components"] if c["label"].startswith("ztunnel-")]
        self.logdir = logdir
        self.procs = {}
        # Restarts run with the environment localmesh gave the first ones
        # (RUST_LOG, MALLOC_ARENA_MAX...), read from the running processes.
        self.env = {c["label"]: environment_of(c["pid"]) for c in self.components}

    def restart(self, binary):
        for c in self.components:
            proc = self.procs.pop(c["label"], None)
            pid = proc.pid if proc else c["pid"]
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if proc:
                proc.wait()
            else:
                while alive(pid):
                    time.sleep(0.02)
        for c in self.components:
            log = open(os.path.join(self.logdir, c["label"] + ".log"), "a")
            self.procs[c["label"]] = subprocess.Popen(
                ["ip", "netns", "exec", c["netns"], binary, *c["args"]],
                env=self.env[c["label"]], stdout=log, stderr=log)
        for c in self.components:
            for _ in range(300):
                if subprocess.run(["ip", "netns", "exec", c["netns"], "python3", "-c", READY]).returncode == 0:
                    break
                time.sleep(0.05)
            else:
                sys.exit(f"{c['label']} did not become ready with {binary}")

    def pids(self):
        # `ip netns exec` execs the binary: the Popen pid is ztunnel's.
        return [p.pid for p in self.procs.values()]

    def stop(self):
        for p in self.procs.values():
            p.terminate()
            p.wait()


def rr(client, server, rounds, connections):
    out = netns(client, "python3", "-c", RR_CLIENT, server, str(rounds), connections,
                capture_output=True, text=True)
    return map(float, out.stdout.split())


def measure(zt, client, server, fresh, args):
    pids = zt.pids()
    time.sleep(1)  # ready, then settled
    r = {"idle MiB a": status_kib(pids[0], "VmRSS") / 1024, "idle MiB b": status_kib(pids[1], "VmRSS") / 1024}
    netns(client, "python3", "-c", RR_CLIENT, server, "50", "one", capture_output=True)  # warm the pool
    if args.throughput:
        before = [cpu_seconds(p) for p in pids]
        one = iperf(client, server, args.seconds, 1)
        cpu = [cpu_seconds(p) - b for p, b in zip(pids, before)]
        many = iperf(client, server, args.seconds, 64)
        gib = one * args.seconds / 1024
        r.update({
            "1 stream MiB/s": one,
            "64 streams MiB/s": many,
            "CPU-s/GiB a": cpu[0] / gib,
            "CPU-s/GiB b": cpu[1] / gib,
            "peak MiB a": peak_kib(pids[0]) / 1024,
            "peak MiB b": peak_kib(pids[1]) / 1024,
        })
    r["RR p50 us"], r["RR p99 us"] = rr(client, server, args.rr, "one")
    r["new-conn RR p50 us"], r["new-conn RR p99 us"] = rr(client, server, args.rr // 3, "new")
    out = netns(client, "python3", "-c", FIRST_BYTE_CLIENT, server, *fresh, capture_output=True, text=True)
    r["new HBONE p50 us"], r["new HBONE max us"] = map(float, out.stdout.split())
    return r


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rr", type=int, default=3000,
                        help="rounds over one connection; a third of it with new connections")
    parser.add_argument("--no-throughput", dest="throughput", action="store_false",
                        help="request/response only (no iperf3, CPU or peak memory)")
    parser.add_argument("--meshctl", default=None, help="default: meshctl beside BIN_A")
    args = parser.parse_args()
    binaries = {"A": os.path.abspath(args.a), "B": os.path.abspath(args.b)}
    meshctl = args.meshctl or os.path.join(os.path.dirname(binaries["A"]), "meshctl")
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "cluster.yaml")
        with open(spec, "w") as f:
            f.write(CLUSTER + FRESH)
        subprocess.run([meshctl, "local", "up", "-f", spec, "--name", NAME], check=True,
                       stdout=subprocess.DEVNULL)
        zt = None
        iperf_servers = []
        try:
            with open(STATE) as f:
                state = json.load(f)
            pod = {f"{p['namespace']}/{p['name']}": p for p in state["pods"]}
            client, server = pod["mesh/client"]["netns"], pod["mesh/server"]
            fresh = [pod[f"mesh/fresh-{i}"]["ip"] for i in range(FRESH_PODS)]
            iperf_servers.append(subprocess.Popen(["ip", "netns", "exec", server["netns"], "iperf3", "-s"],
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            zt = Ztunnels(state, tmp)
            results = {"A": [], "B": []}
            for pair in range(1, args.pairs + 1):
                # ABBA...: whatever the first run of a pair leaves behind
                # (TIME_WAIT sockets, conntrack entries) falls on both.
                for which in ("A", "B") if pair % 2 else ("B", "A"):
                    zt.restart(binaries[which])
                    r = measure(zt, client, server["ip"], fresh, args)
                    results[which].append(r)
                    print(f"pair {pair} {which}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
            print("\nmedians")
            for which in ("A", "B"):
                keys = results[which][0].keys()
                print(f"{which} ({binaries[which]}): " +
                      ", ".join(f"{k} {statistics.median(r[k] for r in results[which]):.1f}" for k in keys))
        finally:
            if zt:
                zt.stop()
            for s in iperf_servers:
                s.terminate()
            subprocess.run([meshctl, "local", "down", "--name", NAME], stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
