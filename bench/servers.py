"""The servers under test: how each is configured for N sites, started, reloaded and stopped.

Every server gets the same sites (`s<i>.bench.test`, one ECDSA or RSA certificate each, see
pki.py), the same static file, one listener on 127.0.0.1:PORT, TLS 1.2 and 1.3, ALPN h2 and
http/1.1, and one worker (the server is pinned to one CPU, so a second worker could only
compete with the first). Settings that would otherwise skew a figure are set explicitly and
explained where they are set: keep-alive request limits, connection limits, HTTP/3.

Access logs: `logs = True` (the default, as users run them) gives each server the access
log an operator turns on or gets by default: nginx's `access_log` to a file (its default),
HAProxy's `option httplog` to a local log socket (read by bench/run), Caddy's `log` to a
file, Portico's default log level with stderr to a file. `logs = False` turns each off
(nginx `access_log off`, no HAProxy `log`, no Caddy server log, Portico `RUST_LOG=warn`).

Each server class knows `write_config(sites)`, `write_proxy_config(port)`,
`write_fixed_config()` (one site answering a fixed 200 "ok"), `command()`, `reload()`
(after `write_config` with the new sites) and the name of the process to find in `ps`.
Starting, waiting and measuring are the same for all and live in measure.py and bench/run.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request

import pki

# The document every keep-alive request fetches: 1 KiB of HTML, the same bytes everywhere.
STATIC_NAME = "index.html"
STATIC_BODY = (
    b"<!doctype html><title>bench</title><p>"
    + b"Portico benchmark static file. " * 32
)[:1020] + b"</p>\n"


def write_static(root):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, STATIC_NAME), "wb") as f:
        f.write(STATIC_BODY[:1024].ljust(1024, b" "))
    return root


def _write(path, text):
    """Writes then renames, so a server reloading never reads half a file."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# The fixed response every `write_fixed_config` answers with.
FIXED_BODY = "ok"


class Server:
    name = "?"
    binary = "?"
    # Access logs on, as users run the servers; bench/run turns them off for the second
    # set of request figures.
    logs = True

    def __init__(self, work, pki_dir, www, port):
        self.dir = os.path.join(work, self.name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.pki = pki_dir
        self.www = www
        self.port = port
        self.proc = None

    def version(self):
        return ""

    def pem(self, i):
        return pki.site_pem(self.pki, i)

    def reload(self):
        raise NotImplementedError

    def pid(self):
        return self.proc.pid


class Portico(Server):
    name = "portico"

    def __init__(self, work, pki_dir, www, port, binary):
        super().__init__(work, pki_dir, www, port)
        self.binary = binary

    def version(self):
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return out.stdout.strip().replace("portico ", "")

    def write_config(self, sites):
        # A pool certificate per site, as the issue asks: the pool indexes certificates by
        # their SAN names and each site takes the one covering its host.
        parts = [
            f'state_dir = "{self.dir}/state"\n\n'
            f'[[listener]]\nname = "https"\naddress = "127.0.0.1:{self.port}"\n\n'
        ]
        for i in sites:
            pem = self.pem(i)
            parts.append(f'[[certificate]]\ncert = "{pem}"\nkey = "{pem}"\n')
        parts.append("\n")
        for i in sites:
            parts.append(f'[[site]]\nname = "s{i}"\nhosts = ["{pki.host(i)}"]\nroot = "{self.www}"\n')
        # The default (10,000) would be a limit no other server here has.
        parts.append("\n[limits]\nmax_connections = 100000\n")
        self.config = os.path.join(self.dir, "portico.toml")
        _write(self.config, "".join(parts))

    def _one_site(self, action):
        pem = self.pem(0)
        self.config = os.path.join(self.dir, "portico.toml")
        _write(
            self.config,
            f'state_dir = "{self.dir}/state"\n\n'
            f'[[listener]]\nname = "https"\naddress = "127.0.0.1:{self.port}"\n\n'
            f'[[certificate]]\ncert = "{pem}"\nkey = "{pem}"\n\n'
            f'[[site]]\nname = "s0"\nhosts = ["{pki.host(0)}"]\n{action}\n'
            "\n[limits]\nmax_connections = 100000\n",
        )

    def write_proxy_config(self, backend_port):
        # Defaults otherwise: forwarded headers added, keep-alive pool to the backend.
        self._one_site(f'proxy = {{ upstreams = ["http://127.0.0.1:{backend_port}"] }}')

    def write_fixed_config(self):
        self._one_site(f'respond = {{ status = 200, body = "{FIXED_BODY}" }}')

    def command(self):
        return [self.binary, "serve", "-c", self.config]

    def env(self):
        # Its default log level writes the access log (to stderr, which bench/run sends to
        # a file); warn leaves it out.
        return {} if self.logs else {"RUST_LOG": "warn"}

    def reload(self):
        os.kill(self.proc.pid, signal.SIGHUP)


class Nginx(Server):
    name = "nginx"
    binary = "nginx"

    def version(self):
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        return out.stderr.strip().replace("nginx version: ", "")

    def _head(self, n):
        d = self.dir
        return f"""# One worker: the server is pinned to one CPU.
{_nginx_top(d)}master_process on;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{
{_nginx_http_common(d, os.path.join(d, "access.log") if self.logs else None)}    sendfile on;
    ssl_protocols TLSv1.2 TLSv1.3;
    # Session tickets are on by default (nginx's own keys); no session cache, as Portico.
    # Sized so that N names fit the server_name hash without nginx refusing to start.
    server_names_hash_max_size {max(512, 2 * n)};
    server_names_hash_bucket_size 128;
"""

    def write_config(self, sites):
        d = self.dir
        parts = [self._head(len(sites))]
        for i in sites:
            pem = self.pem(i)
            parts.append(
                f"    server {{ listen 127.0.0.1:{self.port} ssl http2; server_name {pki.host(i)}; "
                f"ssl_certificate {pem}; ssl_certificate_key {pem}; root {self.www}; }}\n"
            )
        parts.append("}\n")
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        self.config = os.path.join(d, "nginx.conf")
        _write(self.config, "".join(parts))

    def write_proxy_config(self, backend_port):
        # What an operator writes for a keep-alive proxy with forwarded headers: without
        # `keepalive` and HTTP/1.1 nginx opens a new backend connection per request.
        d, pem = self.dir, self.pem(0)
        text = self._head(1) + f"""    upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{self.port} ssl http2; server_name {pki.host(0)};
        ssl_certificate {pem}; ssl_certificate_key {pem};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        self.config = os.path.join(d, "nginx.conf")
        _write(self.config, text)

    def write_fixed_config(self):
        d, pem = self.dir, self.pem(0)
        text = self._head(1) + f"""    server {{
        listen 127.0.0.1:{self.port} ssl http2; server_name {pki.host(0)};
        ssl_certificate {pem}; ssl_certificate_key {pem};
        location / {{ default_type text/plain; return 200 "{FIXED_BODY}"; }}
    }}
}}
"""
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        self.config = os.path.join(d, "nginx.conf")
        _write(self.config, text)

    def command(self):
        return ["nginx", "-p", self.dir, "-e", os.path.join(self.dir, "error.log"), "-c", self.config]

    def reload(self):
        # What `nginx -s reload` does: SIGHUP to the master.
        os.kill(self.proc.pid, signal.SIGHUP)


class Haproxy(Server):
    name = "haproxy"
    binary = "haproxy"

    def version(self):
        out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True)
        return out.stdout.splitlines()[0].replace("HAProxy version ", "").split(" ")[0]

    sink = None

    def _log_socket(self):
        """A local syslog socket for `option httplog`, drained by a thread of bench/run
        (on the load generator's CPU): what a local syslog daemon would do."""
        path = os.path.join(self.dir, "log.sock")
        if Haproxy.sink is None:
            if os.path.exists(path):
                os.unlink(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind(path)

            def drain():
                while True:
                    s.recv(65536)

            threading.Thread(target=drain, daemon=True).start()
            Haproxy.sink = s
        return path

    def _write(self, pems, defaults, frontend, rest=""):
        """The configuration: the same global and defaults sections for every figure, one
        frontend on the port with the given certificates."""
        if self.logs:
            log_global = f"    log {self._log_socket()} local0\n"
            defaults = "    log global\n    option httplog\n" + defaults
        else:
            log_global = ""
        crt_list = os.path.join(self.dir, "crt-list.txt")
        # Without an SNI filter, HAProxy indexes each certificate by its own names.
        _write(crt_list, "".join(p + "\n" for p in pems))
        self.config = os.path.join(self.dir, "haproxy.cfg")
        _write(
            self.config,
            f"""global
    # One thread: the server is pinned to one CPU.
    nbthread 1
    # Each connection costs HAProxy two descriptors' worth of limit; this fits in 20,000.
    maxconn 9000
    ssl-default-bind-options ssl-min-ver TLSv1.2
{log_global}
defaults
    mode http
{defaults}    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:{self.port} ssl crt-list {crt_list} alpn h2,http/1.1
{frontend}{rest}""",
        )

    def write_config(self, sites):
        static = os.path.join(self.www, STATIC_NAME)
        # HAProxy has no file server: it answers with the file, read once at start. This is
        # cheaper than serving it from disk, so HAProxy's request figures are a lower bound.
        self._write(
            [self.pem(i) for i in sites],
            "",
            f"    http-request return status 200 content-type text/html file {static}\n",
        )

    def write_proxy_config(self, backend_port):
        # Connections to the backend are kept and reused by default (`http-reuse safe`).
        self._write(
            [self.pem(0)],
            "    option forwardfor\n",
            "    http-request set-header X-Forwarded-Proto https\n    default_backend app\n",
            f"\nbackend app\n    server app1 127.0.0.1:{backend_port}\n",
        )

    def write_fixed_config(self):
        self._write(
            [self.pem(0)],
            "",
            f"    http-request return status 200 content-type text/plain string {FIXED_BODY}\n",
        )

    def command(self):
        # Master-worker mode (-W) in the foreground: SIGUSR2 to the master reloads.
        return ["haproxy", "-W", "-f", self.config]

    def reload(self):
        os.kill(self.proc.pid, signal.SIGUSR2)


class Caddy(Server):
    name = "caddy"
    binary = "caddy"
    admin_port_offset = 1

    def version(self):
        out = subprocess.run(["caddy", "version"], capture_output=True, text=True)
        return out.stdout.strip().split(" ")[0]

    def admin(self):
        return f"127.0.0.1:{self.port + self.admin_port_offset}"

    def _config(self, sites):
        logs = {"default": {"level": "ERROR"}}
        server_logs = {}
        if self.logs:
            # What a Caddyfile's `log { output file ... }` becomes.
            logs["default"]["exclude"] = ["http.log.access.log0"]
            logs["log0"] = {
                "writer": {"output": "file", "filename": os.path.join(self.dir, "access.log")},
                "include": ["http.log.access.log0"],
            }
            server_logs = {"logs": {"default_logger_name": "log0"}}
        cfg = {
            "admin": {"listen": self.admin()},
            "logging": {"logs": logs},
            "storage": {"module": "file_system", "root": os.path.join(self.dir, "data")},
            "apps": {
                "tls": {
                    "certificates": {
                        "load_files": [{"certificate": self.pem(i), "key": self.pem(i)} for i in sites]
                    }
                },
                "http": {
                    "servers": {
                        "bench": {
                            "listen": [f"127.0.0.1:{self.port}"],
                            # No HTTP/3 (the others have none) and no ACME or redirects:
                            # certificates come from the files above only.
                            "protocols": ["h1", "h2"],
                            "automatic_https": {"disable": True},
                            "tls_connection_policies": [{}],
                            # One route for all hosts, as the Caddyfile adapter makes for
                            # site blocks with identical contents.
                            "routes": [
                                {
                                    "match": [{"host": [pki.host(i) for i in sites]}],
                                    "handle": [{"handler": "file_server", "root": self.www}],
                                    "terminal": True,
                                }
                            ],
                            **server_logs,
                        }
                    }
                },
            },
        }
        return cfg

    def write_config(self, sites):
        self.config = os.path.join(self.dir, "caddy.json")
        self._body = json.dumps(self._config(sites))
        _write(self.config, self._body)

    def write_proxy_config(self, backend_port):
        # Caddy's reverse_proxy adds X-Forwarded-* and keeps backend connections by default.
        cfg = self._config([0])
        route = cfg["apps"]["http"]["servers"]["bench"]["routes"][0]
        route["handle"] = [{"handler": "reverse_proxy", "upstreams": [{"dial": f"127.0.0.1:{backend_port}"}]}]
        self.config = os.path.join(self.dir, "caddy.json")
        self._body = json.dumps(cfg)
        _write(self.config, self._body)

    def write_fixed_config(self):
        cfg = self._config([0])
        route = cfg["apps"]["http"]["servers"]["bench"]["routes"][0]
        route["handle"] = [{"handler": "static_response", "status_code": 200, "body": FIXED_BODY,
                            "headers": {"Content-Type": ["text/plain"]}}]
        self.config = os.path.join(self.dir, "caddy.json")
        self._body = json.dumps(cfg)
        _write(self.config, self._body)

    def command(self):
        return ["caddy", "run", "--config", self.config]

    def env(self):
        return {"HOME": self.dir, "XDG_DATA_HOME": self.dir, "XDG_CONFIG_HOME": self.dir}

    def reload(self):
        # Caddy reloads through its admin API; the POST returns when the new config is in
        # place, so it runs beside the probe that watches for the new site.
        def post():
            req = urllib.request.Request(
                f"http://{self.admin()}/load",
                data=self._body.encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                urllib.request.urlopen(req, timeout=600).read()
            except Exception as e:  # reported by the probe timing out; keep the reason
                self.reload_error = str(e)

        self.reload_error = None
        threading.Thread(target=post, daemon=True).start()


class Backend:
    """The one backend every proxy forwards to: nginx on plain HTTP, serving the same static
    file, one worker, pinned by bench/run to the load generator's CPU (its CPU is not the
    proxy's, so it is not counted)."""

    def __init__(self, work, www, port):
        self.dir = os.path.join(work, "backend")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "tmp"))
        self.port = port
        self.config = os.path.join(self.dir, "nginx.conf")
        d = self.dir
        _write(
            self.config,
            f"""{_nginx_top(d)}events {{ worker_connections 4096; }}
http {{
{_nginx_http_common(d)}    server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
""",
        )

    command = Nginx.command


def _nginx_top(d):
    """The top of both nginx configurations: one worker, in the foreground, files in `d`."""
    return f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
"""


def _nginx_http_common(d, access_log=None):
    """The http-block lines both nginx configurations share; the access log, nginx's
    default `combined` format, to `access_log` (off without one)."""
    log = f"access_log {access_log};" if access_log else "access_log off;"
    return f"""    {log}
    default_type text/html;
    # nginx closes a keep-alive connection after 1000 requests by default; the other
    # servers do not, so the keep-alive figures would include reconnections for nginx only.
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
"""


def env_of(server):
    return getattr(server, "env", lambda: {})()


ALL = ["portico", "nginx", "haproxy", "caddy"]
