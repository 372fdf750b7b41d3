"""Measuring a running server from the outside: CPU and memory of its process tree, load on
its CPU from everything else, h2load runs, and TLS clients written in Python for what h2load
cannot do (resumed handshakes, and probing one site's certificate).

Server CPU comes from /proc/<pid>/stat: utime + stime, plus cutime + cstime so that a worker
that exits and is reaped during a window (nginx and HAProxy after a reload) still counts,
summed over the whole process tree. The kernel counts it in clock ticks (10 ms on this
machine), so every window is made long enough for that to be a small error.
"""

import os
import re
import socket
import ssl
import subprocess
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def tree(root):
    """The pid and all its descendants (nginx and HAProxy run a master and workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(entry)[1])
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_split(root):
    """(user, system) CPU seconds used so far by the tree, own and reaped children's."""
    user = system = 0
    for pid in tree(root):
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        # Fields 14-17 of stat (utime, stime, cutime, cstime); f starts at field 3.
        user += int(f[11]) + int(f[13])
        system += int(f[12]) + int(f[14])
    return user / TICK, system / TICK


def cpu_seconds(root):
    """CPU seconds used so far by the tree: user + system."""
    return sum(cpu_split(root))


def memory_kib(root):
    """(VmRSS summed over the tree, Pss summed over the tree) in KiB.

    RSS counts pages shared between a master and its forked workers once per process, which
    overstates a forking server; PSS divides each shared page among its sharers, so its sum
    is the tree's real footprint. Both are reported.
    """
    rss = pss = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
                rss += int(m.group(1)) if m else 0
            with open(f"/proc/{pid}/smaps_rollup") as f:
                m = re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M)
                pss += int(m.group(1)) if m else 0
        except OSError:
            continue
    return rss, pss


def cpu_busy(cpu):
    """(busy, total) ticks of one CPU since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle + iowait
                return sum(v) - idle, sum(v)
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


class Window:
    """Server CPU and the load on the server's CPU over one measurement."""

    def __init__(self, pid, server_cpu=0):
        self.pid, self.server_cpu = pid, server_cpu

    def __enter__(self):
        self.t0 = time.monotonic()
        self.u0, self.s0 = cpu_split(self.pid)
        self.c0 = self.u0 + self.s0
        self.b0 = cpu_busy(self.server_cpu)
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.t0
        u1, s1 = cpu_split(self.pid)
        # The kernel's own work for the server (system calls, TCP) apart from its code's.
        self.user, self.system = u1 - self.u0, s1 - self.s0
        self.cpu = self.user + self.system
        b1 = cpu_busy(self.server_cpu)
        busy = (b1[0] - self.b0[0]) / TICK
        # What ran on the server's CPU besides the server: other engineers' compilers,
        # kernel network work (softirq) for loopback traffic, and so on.
        self.other_load = max(0.0, busy - self.cpu) / self.elapsed if self.elapsed else 0.0
        return False

    def summary(self):
        return {
            "elapsed_s": round(self.elapsed, 3),
            "server_cpu_s": round(self.cpu, 3),
            "server_user_s": round(self.user, 3),
            "server_system_s": round(self.system, 3),
            "other_load_on_server_cpu": round(self.other_load, 3),
        }


# ---------------------------------------------------------------------------------------
# h2load


def h2load(args, timeout):
    """Runs h2load (pinned by the caller's CPU affinity) and parses its summary."""
    cmd = ["h2load"] + args
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    r = {"cmd": " ".join(cmd), "exit": p.returncode, "wall_s": round(time.monotonic() - t0, 3)}
    r.update(parse_h2load(p.stdout))
    if "succeeded" not in r:
        r["output"] = (p.stdout + p.stderr)[-2000:]
    return r


def parse_h2load(out):
    r = {}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    if m:
        secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        r.update(finished_s=secs, req_per_s=float(m.group(3)))
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    if m:
        keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
        r.update({k: int(v) for k, v in zip(keys, m.groups())})
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["status_2xx"] = int(m.group(1))
        r["status_other"] = sum(int(x) for x in m.groups()[1:])
    for key, pat in [
        ("tls_protocol", r"TLS Protocol: (\S+)"),
        ("cipher", r"Cipher: (\S+)"),
        ("temp_key", r"Server Temp Key: (.+)"),
        ("alpn", r"Application protocol: (\S+)"),
    ]:
        m = re.search(pat, out)
        if m:
            r[key] = m.group(1).strip()
    return r


class Batches(threading.Thread):
    """Bounded h2load runs one after another until stopped: the load kept up during a
    reload. h2load's own rate (--rps) and duration (-D) modes do not work with a new
    connection per request (1.52 ignores --rps and never ends with -D), so the rate is
    set by small batches: `batch` requests every `period` seconds."""

    KEYS = ("total", "succeeded", "failed", "errored", "timeout", "status_other")

    def __init__(self, args, batch, period, limit_s):
        super().__init__(daemon=True)
        self.args = args + ["-n", str(batch)]
        self.period, self.limit_s = period, limit_s
        self.stop_event = threading.Event()
        self.sums = dict.fromkeys(self.KEYS, 0)
        self.runs = 0

    def run(self):
        t0 = time.monotonic()
        while not self.stop_event.is_set() and time.monotonic() - t0 < self.limit_s:
            start = time.monotonic()
            r = h2load(self.args, timeout=60)
            self.runs += 1
            for k in self.KEYS:
                self.sums[k] += r.get(k) or 0
            if "total" not in r:  # h2load itself failed: count the batch as failed
                self.sums["total"] += int(self.args[-1])
                self.sums["failed"] += int(self.args[-1])
            self.stop_event.wait(max(0.0, self.period - (time.monotonic() - start)))

    def finish(self):
        self.stop_event.set()
        self.join()
        return dict(self.sums, h2load_runs=self.runs)


def passive_opens():
    """TCP connections accepted so far in this network namespace (/proc/net/snmp). Its
    growth over a run says how many connections the run really opened (other loopback
    traffic on the machine adds to it, so it is a check, not a figure)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("PassiveOpens")])


# ---------------------------------------------------------------------------------------
# Python TLS clients


def client_context(ca_file):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def one_request(ctx, port, name, session=None, timeout=10):
    """One connection: TLS handshake for `name` (verified), GET /index.html, read the response.

    Returns (ok, session, reused). The response is read by its Content-Length, not to EOF,
    so no server's way of closing (some linger before they close) sets the pace. A TLS 1.3
    server sends its NewSessionTicket right after the handshake, before the response, so
    by then `session` is resumable.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        # Without it, Nagle holds the request behind the unacknowledged Finished message
        # until the server's delayed ACK (40 ms) on servers that send nothing meanwhile.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname=name, session=session) as s:
            s.sendall(
                f"GET /index.html HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            need = None
            while need is None or len(data) < need:
                try:
                    chunk = s.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not chunk:
                    break
                data += chunk
                if need is None and b"\r\n\r\n" in data:
                    head, _ = data.split(b"\r\n\r\n", 1)
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    need = len(head) + 4 + int(m.group(1)) if m else None
            ok = data.startswith(b"HTTP/1.1 200") and (need is None or len(data) >= need)
            return ok, s.session, s.session_reused


def handshakes(ctx, port, names, count, sessions, deadline):
    """`count` connections in turn, cycling through `names`. With `sessions` (a dict, name
    -> session, filled by a priming pass) each connection offers the ticket from the previous
    connection to the same name, as a browser would; with None every handshake is full.
    """
    ok = reused = errors = done = 0
    for k in range(count):
        if time.monotonic() > deadline:
            break
        name = names[k % len(names)]
        offer = sessions.get(name) if sessions is not None else None
        done += 1
        try:
            good, sess, was_reused = one_request(ctx, port, name, offer)
        except (OSError, ssl.SSLError):
            errors += 1
            continue
        ok += good
        reused += was_reused
        if sessions is not None:
            sessions[name] = sess
    return {"connections": done, "ok": ok, "resumed": reused, "errors": errors}


def probe(ctx, port, name, timeout=2.0):
    """True when `name` answers a verified handshake and a request with 200."""
    try:
        return one_request(ctx, port, name, timeout=timeout)[0]
    except (OSError, ssl.SSLError):
        return False


def wait_until_serves(ctx, port, name, proc, since, limit_s, on_poll=None):
    """Seconds from `since` until `name` answers, polling every 20 ms; None if `proc` exits
    or the limit passes first. `on_poll` runs between attempts (memory sampling)."""
    while time.monotonic() - since < limit_s:
        if proc.poll() is not None:
            return None
        if probe(ctx, port, name):
            return time.monotonic() - since
        if on_poll:
            on_poll()
        time.sleep(0.02)
    return None
