"""Writes BENCHMARKS.md from bench/run's results (bench/results.json).

Every figure in BENCHMARKS.md comes from the results file; the only hand-written part is
bench/profiling.md, included as it is. To change the text around the figures, change this
file and run `bench/run --report-only`.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = ["nginx", "haproxy", "caddy"]


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _fmt(v, digits=1):
    if v is None:
        return "—"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _mib(kib):
    return None if kib is None else kib / 1024


KEEPALIVE = "Keep-alive, 1 KiB static file"
FIXED = "Fixed response (respond, return 200, http-request return)"
PROXY = "Reverse proxy to one local backend, 1 KiB file"
OFF = ", access logs off"


def rows(res):
    """(section, label, {server: value}, lower_is_better, note) for every figure."""
    meta, servers = res["meta"], res["servers"]
    out = []

    def row(section, label, fn, lower=True, digits=1):
        vals = {}
        for name, s in servers.items():
            try:
                vals[name] = fn(s)
            except (TypeError, KeyError, ZeroDivisionError):
                vals[name] = None
        out.append((section, label, vals, lower, digits))

    hs = "Handshakes"
    row(hs, "full TLS 1.3 handshake + 1 request: server CPU µs", lambda s: _get(s, "handshakes", "full", "server_cpu_us_per_handshake"))
    row(hs, "— full: in the kernel (system time), µs", lambda s: _get(s, "handshakes", "full", "server_system_us_per_handshake"))
    row(hs, "— full: in the server's own code (user time), µs", lambda s: _get(s, "handshakes", "full", "server_user_us_per_handshake"))
    row(hs, "resumed TLS 1.3 handshake + 1 request: server CPU µs", lambda s: _get(s, "handshakes", "resumed", "server_cpu_us_per_handshake"))
    row(hs, "— resumed: in the kernel (system time), µs", lambda s: _get(s, "handshakes", "resumed", "server_system_us_per_handshake"))
    row(hs, "— resumed: in the server's own code (user time), µs", lambda s: _get(s, "handshakes", "resumed", "server_user_us_per_handshake"))
    row(hs, "resumed: share of offers accepted", lambda s: _get(s, "handshakes", "resumed", "resumed_fraction"), lower=False, digits=3)
    row(hs, "new connection per request (h2load): server CPU µs", lambda s: _get(s, "handshakes", "h2load_new_connection", "server_cpu_us_per_request"))
    row(hs, "new connection per request (h2load): connections/s", lambda s: _get(s, "handshakes", "h2load_new_connection", "req_per_s"), lower=False)
    def requests(section, key):
        for proto, label in [("http1", "HTTP/1.1"), ("http2", "HTTP/2")]:
            row(section, f"{label}: requests/s", lambda s, p=proto: _get(s, key, p, "req_per_s"), lower=False)
            row(section, f"{label}: server CPU µs per request", lambda s, p=proto: _get(s, key, p, "server_cpu_us_per_request"), digits=2)

    requests(KEEPALIVE, "keepalive")
    requests(FIXED, "fixed")
    for size in meta["sizes"]:
        sec = f"Startup, {size:,} sites"
        k = str(size)
        row(sec, "time until the last site answers, s", lambda s, k=k: _get(s, "startup", k, "startup_s"), digits=2)
        row(sec, "CPU used to start, s", lambda s, k=k: _get(s, "startup", k, "startup_cpu_s"), digits=2)
        row(sec, "resident memory (VmRSS, process tree), MiB", lambda s, k=k: _mib(_get(s, "startup", k, "rss_kib")))
        row(sec, "proportional memory (PSS, process tree), MiB", lambda s, k=k: _mib(_get(s, "startup", k, "pss_kib")))
        row(sec, "GET /metrics (Portico's admin socket): median of 3 scrapes, s", lambda s, k=k: _get(s, "startup", k, "metrics_scrape_s"), digits=3)
    requests(PROXY, "proxy")
    sec = f"Reload, {meta['reload_size']:,} sites + 1"
    row(sec, "time until the new site answers, s", lambda s: _get(s, "reload", "reload_s"), digits=2)
    row(sec, "server CPU during it, s", lambda s: _get(s, "reload", "reload_server_cpu_s"), digits=2)
    row(sec, "failed requests during the bounded load", lambda s: _get(s, "reload", "failed_requests"))
    row(sec, "peak resident memory during it (VmRSS), MiB", lambda s: _mib(_get(s, "reload", "peak_rss_kib")))
    # The same request figures with every server's access log off.
    requests(KEEPALIVE + OFF, "keepalive_nolog")
    requests(FIXED + OFF, "fixed_nolog")
    requests(PROXY + OFF, "proxy_nolog")
    return out


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


TARGETS = [
    # (what, row label, section prefix, peer, bound) — Portico/peer must be <= bound.
    ("full handshake CPU ≤ 0.5× nginx", "full TLS 1.3 handshake + 1 request: server CPU µs", "Handshakes", "nginx", 0.5),
    ("resumed handshake CPU ≤ 0.5× nginx", "resumed TLS 1.3 handshake + 1 request: server CPU µs", "Handshakes", "nginx", 0.5),
    ("HTTP/1.1 CPU per request ≤ 0.7× nginx", "HTTP/1.1: server CPU µs per request", "Keep-alive", "nginx", 0.7),
    ("HTTP/1.1 CPU per request below HAProxy", "HTTP/1.1: server CPU µs per request", "Keep-alive", "haproxy", 1.0),
    ("HTTP/1.1 CPU per request below Caddy", "HTTP/1.1: server CPU µs per request", "Keep-alive", "caddy", 1.0),
    ("HTTP/2 CPU per request ≤ 0.7× nginx", "HTTP/2: server CPU µs per request", "Keep-alive", "nginx", 0.7),
    ("HTTP/2 CPU per request below HAProxy", "HTTP/2: server CPU µs per request", "Keep-alive", "haproxy", 1.0),
    ("HTTP/2 CPU per request below Caddy", "HTTP/2: server CPU µs per request", "Keep-alive", "caddy", 1.0),
    ("reverse proxy, HTTP/1.1 CPU per request below nginx", "HTTP/1.1: server CPU µs per request", "Reverse proxy", "nginx", 1.0),
    ("reverse proxy, HTTP/1.1 CPU per request below HAProxy", "HTTP/1.1: server CPU µs per request", "Reverse proxy", "haproxy", 1.0),
    ("reverse proxy, HTTP/2 CPU per request below HAProxy", "HTTP/2: server CPU µs per request", "Reverse proxy", "haproxy", 1.0),
    ("fixed response, HTTP/2 CPU per request below HAProxy", "HTTP/2: server CPU µs per request", "Fixed response", "haproxy", 1.0),
    ("10k sites: startup ≤ 0.1× nginx", "time until the last site answers, s", "Startup, 10,000 sites", "nginx", 0.1),
    ("10k sites: resident memory ≤ 0.2× nginx", "resident memory (VmRSS, process tree), MiB", "Startup, 10,000 sites", "nginx", 0.2),
]


def targets(res, table):
    lines = ["| target | Portico/peer | verdict |", "|---|---|---|"]
    for what, label, section, peer, bound in TARGETS:
        vals = next((v for s, l, v, _, _ in table if l == label and s.startswith(section)), None)
        r = ratio(vals.get("portico"), vals.get(peer)) if vals else None
        verdict = "not measured" if r is None else ("met" if r <= bound else "missed")
        lines.append(f"| {what} | {_fmt(r, 2)} | {verdict} |")
    # What the kernel's share says about the handshake targets: it is work both servers must
    # have done (accepting, TCP over loopback, closing), so it bounds how low a ratio can go.
    for kind in ("full", "resumed"):
        p = _get(res, "servers", "portico", "handshakes", kind) or {}
        n = _get(res, "servers", "nginx", "handshakes", kind) or {}
        total_n = n.get("server_cpu_us_per_handshake")
        sys_p, user_p = p.get("server_system_us_per_handshake"), p.get("server_user_us_per_handshake")
        if total_n and sys_p is not None and user_p is not None:
            budget = 0.5 * total_n - sys_p
            lines.append(
                f"| {kind} handshake: what 0.5× nginx leaves for Portico's own code after its kernel part "
                f"({_fmt(sys_p)} µs; nginx's: {_fmt(n.get('server_system_us_per_handshake'))} µs) | "
                f"{_fmt(budget)} µs (it used {_fmt(user_p)}) | {'within' if budget >= user_p else 'over'} |"
            )
    start = _get(res, "servers", "portico", "startup", "100000")
    if start and "startup_s" in start:
        ok = start["startup_s"] is not None and start["startup_s"] <= 3
        lines.append(f"| 100k sites: serving within 3 s | {_fmt(start['startup_s'], 2)} s | {'met' if ok else 'missed'} |")
        mib = _mib(start.get("rss_kib"))
        lines.append(f"| 100k sites: under 300 MiB resident | {_fmt(mib)} MiB | {'met' if mib is not None and mib < 300 else 'missed'} |")
    else:
        lines.append("| 100k sites: serving within 3 s, under 300 MiB | — | not measured (run with `--sizes 1000,10000,100000`) |")
    scrape = _get(res, "servers", "portico", "startup", "100000", "metrics_scrape_s")
    if scrape is not None:
        series = _get(res, "servers", "portico", "startup", "100000", "metrics_series")
        lines.append(f"| 100k sites: a metrics scrape under 1 s | {_fmt(scrape, 3)} s ({_fmt(series, 0)} series) | {'met' if scrape < 1 else 'missed'} |")
    else:
        lines.append("| 100k sites: a metrics scrape under 1 s | — | not measured (run with `--sizes 1000,10000,100000`) |")
    crit = res.get("criterion") or {}
    sni = [v for k, v in crit.items() if k.startswith("sni_1M/")]
    if sni:
        worst = max(v["mean_ns"] for v in sni)
        lines.append(f"| SNI resolution under 1 µs with 1M names (worst case of exact, wildcard, miss) | {worst:.0f} ns | {'met' if worst < 1000 else 'missed'} |")
    else:
        lines.append("| SNI resolution under 1 µs with 1M names | — | not measured (`cargo bench --bench sni`, then `bench/run`) |")
    return "\n".join(lines)


# The figures bench/run measures in rounds (its keep_medians): label, where in a server's
# results, the figure, digits shown.
HS, REQ = "server_cpu_us_per_handshake", "server_cpu_us_per_request"
REPEATED = [
    ("full handshake + 1 request, server CPU µs", ("handshakes", "full"), HS, 1),
    ("resumed handshake + 1 request, server CPU µs", ("handshakes", "resumed"), HS, 1),
    ("HTTP/1.1 keep-alive, server CPU µs per request", ("keepalive", "http1"), REQ, 2),
    ("HTTP/2 keep-alive, server CPU µs per request", ("keepalive", "http2"), REQ, 2),
    ("proxy, HTTP/1.1, server CPU µs per request", ("proxy", "http1"), REQ, 2),
    ("proxy, HTTP/2, server CPU µs per request", ("proxy", "http2"), REQ, 2),
    ("fixed response, HTTP/1.1, server CPU µs per request", ("fixed", "http1"), REQ, 2),
    ("fixed response, HTTP/2, server CPU µs per request", ("fixed", "http2"), REQ, 2),
    ("logs off: HTTP/1.1 keep-alive, server CPU µs per request", ("keepalive_nolog", "http1"), REQ, 2),
    ("logs off: HTTP/2 keep-alive, server CPU µs per request", ("keepalive_nolog", "http2"), REQ, 2),
    ("logs off: proxy, HTTP/1.1, server CPU µs per request", ("proxy_nolog", "http1"), REQ, 2),
    ("logs off: proxy, HTTP/2, server CPU µs per request", ("proxy_nolog", "http2"), REQ, 2),
    ("logs off: fixed response, HTTP/1.1, server CPU µs per request", ("fixed_nolog", "http1"), REQ, 2),
    ("logs off: fixed response, HTTP/2, server CPU µs per request", ("fixed_nolog", "http2"), REQ, 2),
]


def repeated(res):
    """Every run of the figures measured more than once; the tables above show the median."""
    names = list(res["servers"])
    lines = []
    for label, path, _, digits in REPEATED:
        cells = []
        for n in names:
            runs = (_get(res, "servers", n, *path) or {}).get("runs") or []
            cells.append(", ".join(_fmt(v, digits) for v in runs) if len(runs) > 1 else "—")
        if any(c != "—" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = "| figure | " + " | ".join(names) + " |\n" + "|---" * (1 + len(names)) + "|"
    return head + "\n" + "\n".join(lines)


def main_table(res, table):
    names = list(res["servers"])
    peers = [p for p in PEERS if p in names and "portico" in names]
    head = "| figure | " + " | ".join(names) + " | " + " | ".join(f"Portico/{p}" for p in peers) + " |"
    sep = "|---" * (1 + len(names) + len(peers)) + "|"
    out, current = [], None
    for section, label, vals, lower, digits in table:
        if section != current:
            out += ["", f"**{section}**" + (" (lower is better unless marked ↑)" if current is None else ""), "", head, sep]
            current = section
        cells = [_fmt(vals.get(n), digits) for n in names]
        ratios = [_fmt(ratio(vals.get("portico"), vals.get(p)), 2) for p in peers]
        out.append(f"| {label}{'' if lower else ' ↑'} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(out)


def details(res):
    out = []
    for name, s in res["servers"].items():
        out.append(f"### {name} {s.get('version', '')}\n")
        if "error" in s:
            out.append(f"Failed: `{s['error']}`\n\n```\n{s.get('log', '')}\n```\n")
            continue
        out.append(f"Command: `{s.get('command', '')}`\n")
        hs = s.get("handshakes") or {}
        for key in ("full", "resumed"):
            r = hs.get(key)
            if r:
                out.append(
                    f"- {key} handshakes (Python client, one at a time): {r['connections']} connections, "
                    f"{r['ok']} answered 200, {r['resumed']} resumed, {r['errors']} errors, "
                    f"{r['elapsed_s']} s, server CPU {r['server_cpu_s']} s, other load on CPU 0: {r['other_load_on_server_cpu']:.0%}"
                )
        one_site = []
        for part, writer in (("proxy", "write_proxy_config"), ("fixed", "write_fixed_config")):
            for suffix in ("", "_nolog"):
                px = s.get(part + suffix) or {}
                what = part + (" (logs off)" if suffix else "")
                if px.get("error"):
                    out.append(f"- {what}: {px['error']}\n\n```\n{px.get('log', '')}\n```")
                elif px.get("command"):
                    out.append(f"- {what}: `{px['command']}` (configuration: `{writer}` in bench/servers.py)")
                one_site += [(f"{what} {k}", v) for k, v in px.items()]
        keepalive = list((s.get("keepalive") or {}).items()) + list((s.get("keepalive_nolog") or {}).items())
        for key, r in list(hs.items()) + keepalive + one_site:
            if isinstance(r, dict) and "cmd" in r:
                out.append(
                    f"- `{r['cmd']}`: {_fmt(r.get('succeeded'))} succeeded, "
                    f"{_fmt(r.get('failed'))} failed, {_fmt(r.get('errored'))} errored; "
                    f"{r.get('tls_protocol', '?')} {r.get('cipher', '')} {r.get('temp_key', '')}, ALPN {r.get('alpn', '?')}; "
                    f"{r['elapsed_s']} s, server CPU {r['server_cpu_s']} s, TCP connections accepted {r.get('tcp_accepted')}, "
                    f"other load on CPU 0: {r['other_load_on_server_cpu']:.0%}"
                )
        for size, st in (s.get("startup") or {}).items():
            if "skipped" in st:
                out.append(f"- {int(size):,} sites: skipped: {st['skipped']}")
            elif st.get("error"):
                out.append(f"- {int(size):,} sites: {st['error']}")
        rl = s.get("reload")
        if rl:
            out.append(
                f"- reload: `{rl['h2load_cmd']}` repeated every 0.5 s ({rl.get('h2load_runs')} runs) from 2 s "
                f"before the reload until 2 s after the new site answered: "
                f"{_fmt(rl.get('total'))} requests, {_fmt(rl.get('succeeded'))} succeeded, "
                f"{_fmt(rl.get('failed_requests'))} failed; memory 2 s after: RSS {_fmt(_mib(rl.get('rss_after_kib')))} MiB"
                + (f"; error: {rl['error']}" if rl.get("error") else "")
            )
        out.append("")
    return "\n".join(out)


def rsa_section(rsa):
    """The handshake and start-up figures of a run with RSA-2048 certificates."""
    meta = rsa["meta"]
    table = [r for r in rows(rsa) if r[0].startswith(("Handshakes", "Startup"))]
    return [
        "## With RSA-2048 certificates",
        "",
        f"Run by `{meta['argv']}` on {meta['date']} at commit `{meta['git']['commit']}`"
        f"{' (with uncommitted changes in src/)' if meta['git']['dirty'] else ''}; every site has an "
        "RSA-2048 certificate instead. Only the figures a key type changes are shown: the "
        "signature in each full handshake, and loading the keys at start. The results are in "
        "bench/results-rsa.json.",
        main_table(rsa, table),
        "",
    ]


def fleet_section(fleet):
    """The fleet figures of bench/fleet (bench/results-fleet.json): no peer has an etcd fleet
    to compare with, so they stand alone."""
    meta = fleet["meta"]
    prop = fleet.get("propagation") or {}
    cold = fleet.get("cold") or []
    lines = [
        "## A fleet through etcd (issue 14)",
        "",
        f"`bench/fleet` on {meta['date']} ({meta['portico']}, {meta['etcd']}): a three-member etcd "
        f"and Portico nodes on one machine (nodes on CPU 0, etcd and the client on CPU 1), "
        f"{meta['certs']:,} admin-API certificates, one site each. Node 1 starts with them in its "
        "state_dir and offers them to the fleet; nodes 2 and 3 start with an empty state_dir. "
        "No peer shares certificates through etcd, so there is nothing to set beside these figures.",
        "",
        "| Figure | Value |",
        "|---|---|",
        f"| node 1: start until it serves ({meta['certs']:,} certificates from its own files) | {_fmt(fleet.get('node1_serves_s'), 3)} s |",
        f"| node 1: start until etcd holds every pair | {_fmt(fleet.get('push_s'), 3)} s |",
    ]
    for c in cold:
        lines.append(
            f"| {c['node']}, empty state_dir: start until it serves every certificate from etcd "
            f"| {_fmt(c['serves_s'], 3)} s ({c['failed']} names failed; RSS {_fmt(_mib(c['memory_kib']))} MiB) |"
        )
    if prop:
        lines += [
            f"| a renewal (PUT on node 1) until every node presents it: median of {len(prop['trials'])} "
            f"| {_fmt(prop['median_s'], 3)} s |",
            f"| the same, maximum | {_fmt(prop['max_s'], 3)} s |",
        ]
    lines.append(f"| private keys in etcd that are not sealed | {fleet.get('unsealed_keys_in_etcd', '—')} |")
    return lines + [""]


def _verdict(ok):
    return "—" if ok is None else ("met" if ok else "missed")


def scale_section(scale):
    """The figures of bench/scale (bench/results-scale.json): a directory of N certificates
    behind one catch-all site, against issue 15's targets; no peer to set beside them."""
    n = scale["certs"]
    first, cached = scale.get("first_start") or {}, scale.get("cached_start") or {}
    hs, add, sc = scale.get("handshakes") or {}, scale.get("add") or {}, scale.get("scrape") or {}
    big = n >= 1_000_000

    def row(text, value, goal="—", ok=None):
        return f"| {text} | {value} | {goal} | {_verdict(ok if big else None) if goal != '—' else '—'} |"

    def at_most(v, limit):
        return None if v is None else v <= limit

    lines = [
        "## A million domains: a certificate directory behind a catch-all site (issue 15)",
        "",
        f"`bench/scale --certs {n}` on {scale.get('when', '?')}: `[[certificate]] dir` with {n:,} pairs "
        "(ECDSA P-256, one SAN each) and one `hosts = [\"*\"]` site, Portico as a user starts it "
        "(release build, default logging) pinned to CPU 0, so its start-up runs on one core; the "
        "client on CPU 1. Times are until the last name and a sample of 50 answer a verified "
        "handshake. Verdicts only for a run at 1M, the issue's size.",
        "",
        "| Figure | Value | Target | Verdict |",
        "|---|---|---|---|",
        row("first start (no names cache: every pair read and parsed)",
            f"{_fmt(first.get('serves_s'), 2)} s, {_fmt(first.get('cpu_s'), 2)} s CPU, RSS {_fmt(first.get('rss_mib'))} MiB"),
        row("cached start (state_dir/names.cache from the first) until it serves",
            f"{_fmt(cached.get('serves_s'), 2)} s", "≤ 3 s", at_most(cached.get("serves_s"), 3)),
        row("… until the files of the certificates it took from the cache were looked at (in the background)",
            f"{_fmt(cached.get('files_checked_s'), 2)} s ({_fmt(cached.get('cpu_s'), 2)} s CPU by then)"),
        row("resident memory then", f"{_fmt(cached.get('rss_mib'))} MiB", "< 600 MiB",
            at_most(cached.get("rss_mib"), 600)),
        row("resident memory once settled (after the handshakes and added pairs below)",
            f"{_fmt(scale.get('rss_after_handshakes_mib'))} MiB", "< 600 MiB",
            at_most(scale.get("rss_after_handshakes_mib"), 600)),
        row(f"a handshake for a name whose chain and key are not in memory, beyond a warm one "
            f"(median of {hs.get('names', '?')}: {_fmt(hs.get('cold_median_ms'), 3)} against "
            f"{_fmt(hs.get('warm_median_ms'), 3)} ms, client included)",
            f"+{_fmt(hs.get('cold_extra_ms'), 3)} ms", "+≤ 2 ms", at_most(hs.get("cold_extra_ms"), 2)),
        row(f"a pair renamed into the directory until its name is served (median of {add.get('count', '?')}; "
            f"maximum {_fmt(add.get('serves_max_s'), 3)} s)", f"{_fmt(add.get('serves_median_s'), 3)} s", "< 2 s",
            at_most(add.get("serves_max_s"), 1.999)),
        row(f"server CPU for that added pair (median; maximum {_fmt(add.get('cpu_max_ms'))} ms; "
            "the kernel counts 10 ms ticks)", f"{_fmt(add.get('cpu_median_ms'))} ms", "< 50 ms",
            at_most(add.get("cpu_median_ms"), 49.999)),
        row("a metrics scrape on the admin socket",
            f"{_fmt(sc.get('wall_s'), 3)} s, {sc.get('series', '—')} series, {_fmt((sc.get('bytes') or 0) / 1024)} KiB"),
        row(f"resident memory after {scale.get('fill_names', 0):,} distinct names were handshaked",
            f"{_fmt(scale.get('rss_after_fill_mib'))} MiB"),
        "",
    ]
    return lines


def write(res, path, rsa=None, fleet=None, scale=None):
    meta = res["meta"]
    m = meta["machine"]
    table = rows(res)
    quick = meta["mode"] == "quick"
    other = [
        r.get("other_load_on_server_cpu")
        for s in res["servers"].values()
        for group in (s.get("handshakes") or {}, s.get("keepalive") or {})
        for r in group.values()
        if isinstance(r, dict) and r.get("other_load_on_server_cpu") is not None
    ]
    crit = res.get("criterion") or {}
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/run (bench/report.py) from bench/results.json. Do not edit by hand:",
        "     the hand-written part is bench/profiling.md. -->",
        "",
        f"Portico side by side with nginx, HAProxy and Caddy on one machine, run by `{meta['argv']}` "
        f"on {meta['date']} at commit `{meta['git']['commit']}`"
        f"{' (with uncommitted changes in src/)' if meta['git']['dirty'] else ''}; {meta['key']} certificates, "
        f"one per site. It took {meta.get('duration_s', '?')} s.",
        "",
    ]
    if quick:
        parts += [
            f"> **This is a smoke run (`--quick`)**: small counts ({meta['counts']['handshakes']} handshakes, "
            f"{meta['counts']['requests']:,} requests per keep-alive figure). It shows that the harness "
            "works; its handshake and request figures are not the ones to quote. Run `bench/run` for those.",
            "",
        ]
    if other:
        parts += [
            f"> **Load on the server's CPU from other work** during the measurements: "
            f"{min(other):.0%} to {max(other):.0%} of CPU 0 (load average {' '.join(m['loadavg_at_start'])} at the start, "
            f"{' '.join(meta.get('loadavg_at_end', ['?']))} at the end). Server CPU per handshake or request is "
            "counted by the kernel per process and is the robust figure; requests/s and times fall "
            "with that load. Compare runs made on a quiet machine only.",
            "",
        ]
    parts += [
        "## Results",
        "",
        "Ratios are Portico's figure divided by the peer's: below 1 is better for Portico where lower "
        "is better, above 1 where higher is better (↑). — means not measured (see the notes per server).",
        main_table(res, table),
        "",
        "## Targets (from the benchmark issues)",
        "",
        "Request figures with every server's access log on, as users run them.",
        "",
        targets(res, table),
        "",
    ]
    if rsa:
        parts += rsa_section(rsa)
    if fleet:
        parts += fleet_section(fleet)
    if scale:
        parts += scale_section(scale)
    runs = repeated(res)
    if runs:
        parts += [
            "## Every round of the repeated figures",
            "",
            "Handshake, keep-alive and proxy figures are measured in rounds, each round going "
            "through every server in turn (so each server's figures are spread over the whole "
            "run, not taken back to back); the tables above show each server's median round. "
            "Server CPU per request drifts by 10–15% over minutes on this shared machine, which "
            "is how far apart a ratio and its target must be before the verdict means something.",
            "",
            runs,
            "",
        ]
    if crit:
        parts += ["## Micro-benchmarks (criterion)", "", "| benchmark | mean | measured |", "|---|---|---|"]
        for k, v in sorted(crit.items()):
            mean = v["mean_ns"]
            shown = f"{mean / 1e6:.1f} ms" if mean > 1e6 else (f"{mean / 1e3:.2f} µs" if mean > 1e3 else f"{mean:.0f} ns")
            parts.append(f"| {k} | {shown} | {v.get('measured', '')} |")
        parts += ["", "From `cargo bench` (benches/), which a full bench/run runs last (pinned to CPU 0); "
                  "bench/run copies criterion's estimates from `target/criterion`, with the time each was measured.", ""]
    parts += [
        "## How it was measured",
        "",
        "- **Placement.** Each server runs alone, pinned to CPU 0 (`taskset -c 0`), with one worker "
        "(nginx `worker_processes 1`, HAProxy `nbthread 1`; Portico and Caddy size themselves from "
        "the CPU affinity: Portico then runs every connection on one thread, Caddy's Go runtime gets "
        "`GOMAXPROCS` 1). bench/run and every client it starts "
        "are pinned to CPU 1. Servers run one after another, never at the same time.",
        "- **Sites.** N sites `s<i>.bench.test` on `127.0.0.1`, one certificate each (one CA, leaves "
        f"with one SAN), each site serving the same 1 KiB `index.html`. HAProxy has no file server and "
        "answers with the file loaded at start (`http-request return ... file`), which favours it.",
        "- **Server CPU** is utime+stime (+ reaped children's) from `/proc/<pid>/stat`, summed over the "
        "process tree, read before and after each measurement; the kernel counts it in 10 ms ticks, so "
        "each window lasts long enough for that to be small. **Other load on CPU 0** is CPU 0's busy "
        "time from `/proc/stat` minus the server's, over the same window (it includes the kernel's "
        "loopback network work).",
        "- **Full handshakes**: a Python client (`ssl`, "
        f"{meta.get('python_ssl', 'OpenSSL')}) on CPU 1 opens one connection at a time, does a verified "
        "TLS 1.3 handshake for one of 64 site names without offering a session, sends one "
        "`GET /index.html` with `Connection: close` and reads to the end. It checks every "
        "connection's `session_reused` (0 here), so each is a full handshake (X25519, the site's "
        "certificate signature). The figure is per connection: handshake, one small request, close.",
        "- **Resumed handshakes**: the same client, offering on each connection the TLS 1.3 session "
        "ticket from the previous connection to the same name (primed once per name beforehand); "
        "the share of offers the server accepted is in the table.",
        "- **New connection per request (h2load)**: `h2load --h1 -H 'Connection: close'` does open a "
        "new TCP connection per request (checked: TCP connections accepted, below), **but h2load "
        "keeps each client's TLS session and offers it on reconnect, so these handshakes are mostly "
        "resumed** (seen in nginx's `$ssl_session_reused`). It is a throughput figure for "
        "connection-heavy traffic, not a full-handshake figure.",
        "- **TLS settings** are each server's defaults apart from the protocol versions; the cipher "
        "suite each one negotiated with h2load is listed per server below (HAProxy prefers its own "
        "order and picks AES-256/SHA-384; the others follow h2load's AES-128/SHA-256). The Python "
        "client offers OpenSSL's default order (AES-256/SHA-384 first).",
        "- **Keep-alive**: h2load over HTTP/1.1 (16 connections) and HTTP/2 (16 connections, 10 "
        "streams each), after a warm-up run of 5% of the requests.",
        "- **Startup**: from starting the process until a verified handshake and `200` for the last "
        "site's name (`s<N-1>.bench.test`), polled every 20 ms; memory 1 s later. Every certificate "
        "file is read once just before each start, so every server starts with them in the page "
        "cache. VmRSS summed over "
        "a master and its workers counts their shared pages twice; PSS divides them, so both are "
        "shown. A peer whose startup at the next size would take over 10 minutes (extrapolated "
        "linearly from the previous size), or need over 80% of the available memory, is skipped.",
        "- **Reload**: with N sites running, h2load makes about 100 new connections a second (batches "
        "of 50 every 0.5 s: h2load 1.52 ignores `--rps` and never ends with `-D` when the server closes "
        "each connection); the configuration is rewritten with one more site and the reload is "
        "asked for (Portico: SIGHUP; nginx: SIGHUP, as `nginx -s reload`; HAProxy: SIGUSR2 to the "
        "master; Caddy: `POST /load` on its admin API). Portico gives no completion signal yet, so "
        "for every server the time is until the new site answers a verified handshake.",
        "- **Proxy**: each server is started again with one site that forwards every request to "
        "one backend, nginx on plain HTTP serving the same 1 KiB file "
        f"({meta.get('proxy_backend', 'not run')}; its CPU is not counted as the server's). Each "
        "proxy is configured as an operator would for keep-alive to the backend and the usual "
        "forwarded headers (nginx: `upstream` with `keepalive 32`, `proxy_http_version 1.1`, "
        "`Host`, `X-Forwarded-For`, `X-Forwarded-Proto`; HAProxy: `option forwardfor`, default "
        "connection reuse; Caddy and Portico: their defaults, which add X-Forwarded-* and keep "
        "connections). h2load as for keep-alive, HTTP/1.1 and HTTP/2 from the client; HTTP/1.1 "
        "to the backend. Requests/s is bounded by CPU 1, which carries both h2load and the "
        "backend; server CPU per request is the figure to compare.",
        "- **Fixed response**: one site answering `200` with the body `ok` (Portico `respond`, nginx "
        "`return 200`, HAProxy `http-request return`, Caddy `static_response`), h2load as for "
        "keep-alive.",
        "- **Access logs**: every figure above is measured with each server's access log on, as "
        "users run them: nginx's default `access_log` (combined format) to a file, HAProxy's "
        "`option httplog` to a local syslog socket that bench/run drains, Caddy's `log` to a file, "
        "Portico at its default log level with stderr to a file. The keep-alive, proxy and fixed "
        "figures are measured again with every log off (nginx `access_log off`, no HAProxy `log`, "
        "no Caddy server log, Portico `RUST_LOG=warn`): the sections marked *access logs off*.",
        "",
        "### Exact commands",
        "",
        "```sh",
        meta["argv"],
        "```",
        "",
        "Each server's command and each h2load command are listed per server below; the "
        "configurations are generated by `bench/servers.py` into the work directory "
        "(`/tmp/portico-bench` by default).",
        "",
        details(res),
    ]
    if res.get("unavailable"):
        parts += ["Not measured:", ""] + [f"- {k}: {v}" for k, v in res["unavailable"].items()] + [""]
    parts += [
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cpus']} logical CPUs, {m['cpu_mhz']} MHz (from /proc/cpuinfo)",
        f"- Kernel: {m['kernel']}",
        f"- Load generator: {meta['h2load']}; Python client on {meta.get('python_ssl', '')}",
        f"- Counts: {meta['counts']}",
        "",
        "`free -m` at the start:",
        "",
        "```",
        m["free_m"].rstrip(),
        "```",
        "",
    ]
    prof = os.path.join(HERE, "profiling.md")
    if os.path.exists(prof):
        with open(prof) as f:
            parts += [f.read().rstrip(), ""]
    with open(path, "w") as f:
        f.write("\n".join(parts))
