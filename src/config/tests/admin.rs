//! Rows of the diagnostics table: the [admin] table.

use super::*;

fn admin(lines: &str) -> String {
    format!("[admin]\n{lines}\n")
}

fn served() -> String {
    [base(), site("a", &["a.test"], &[RESPOND])].concat()
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "admin on loopback TCP without tls",
            [admin(r#"address = "127.0.0.1:9900""#), served()].concat(),
            vec![],
        ),
        case(
            "admin on IPv6 loopback",
            [admin(r#"address = "[::1]:9900""#), served()].concat(),
            vec![],
        ),
        case(
            "admin off loopback needs tls",
            [admin(r#"address = "10.0.0.5:9900""#), served()].concat(),
            vec![error("admin.address", "is not a loopback address, and the admin listener has no tls")],
        ),
        case(
            "admin on every address needs tls",
            [admin(r#"address = "0.0.0.0:9900""#), served()].concat(),
            vec![error("admin.address", "0.0.0.0:9900 is not a loopback address")],
        ),
        case(
            "admin off loopback with tls",
            [
                admin("address = \"0.0.0.0:9900\"\ntls = { cert = \"a.pem\", key = \"a.key\" }\nhosts = [\"admin.example.net\", \"10.0.0.5\", \"[2001:db8::1]\"]"),
                served(),
            ]
            .concat(),
            vec![],
        ),
        case(
            "admin tls that does not load",
            [
                admin("address = \"127.0.0.1:9900\"\ntls = { cert = \"a.pem\", key = \"missing.key\" }"),
                served(),
            ]
            .concat(),
            vec![error("admin.tls", "missing.key")],
        ),
        case(
            "admin table problems, all reported",
            [
                admin("address = \"localhost\"\ntoken_file = \"\"\nhosts = [\"*.example.net\"]\nport = 1"),
                served(),
            ]
            .concat(),
            vec![
                error("admin.address", "is not \"unix:PATH\", \"IP:port\" or \"[v6]:port\""),
                error("admin.token_file", "the token file's path is empty"),
                error("admin.hosts[0]", "is not a host name or an IP address"),
                error("admin.port", "unknown key \"port\""),
            ],
        ),
        case(
            "admin on a listener's port",
            [admin(r#"address = "127.0.0.1:8443""#), served()].concat(),
            vec![error("admin.address", "overlaps listener[0]'s address *:8443")],
        ),
        case(
            "admin on port 0",
            [admin(r#"address = "127.0.0.1:0""#), served()].concat(),
            vec![error("admin.address", "port 0")],
        ),
        case(
            "admin on the control socket",
            [admin(r#"address = "unix:portico.sock""#), served()].concat(),
            vec![error("admin.address", "is the control socket's path")],
        ),
        case(
            "admin Unix socket with tls and hosts",
            [
                admin("address = \"unix:admin.sock\"\ntls = { cert = \"a.pem\", key = \"a.key\" }"),
                served(),
            ]
            .concat(),
            vec![warning("admin", "tls and hosts mean nothing on a Unix socket")],
        ),
        case(
            "admin Unix socket path too long",
            [
                admin(&format!("address = \"unix:{}\"", "s".repeat(120))),
                served(),
            ]
            .concat(),
            vec![error("admin.address", "a Unix socket path has at most 107")],
        ),
        case(
            "the default admin socket path too long: off, with a warning",
            [
                format!("state_dir = \"{}\"\n", "s".repeat(120)),
                served(),
            ]
            .concat(),
            vec![warning("admin", "the admin listener is off")],
        ),
        case(
            "admin disabled",
            [admin("enabled = false\naddress = \"10.0.0.5:9900\""), served()].concat(),
            vec![],
        ),
    ]
}
