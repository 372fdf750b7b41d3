//! Unit tests of the readers' syntax and rules, on files written at test time; the
//! end-to-end tests (real nginx and Apache, Portico serving the output) are in
//! tests/it/import.rs.

use std::path::Path;

use proptest::prelude::*;

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write");
    path
}

fn nginx_plan(text: &str) -> Plan {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "nginx.conf", text);
    nginx::read(&file).expect("reads")
}

fn apache_plan(text: &str) -> Plan {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "apache2.conf", text);
    apache::read(&file).expect("reads")
}

fn messages(plan: &Plan, class: Class) -> Vec<String> {
    plan.findings
        .iter()
        .filter(|f| f.class == class)
        .map(|f| {
            format!(
                "{}: {}",
                f.at.as_ref().map(|a| a.line).unwrap_or(0),
                f.message
            )
        })
        .collect()
}

fn hosts(site: &Site) -> Vec<&str> {
    site.served_hosts().map(|h| h.name.as_str()).collect()
}

#[test]
fn nginx_syntax_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, line, what) in [
        (
            "http {\n server {\n  server_name \"a.test;\n }\n}\n",
            3,
            "never closed",
        ),
        ("http {\n}\n}\n", 3, "unexpected \"}\""),
        ("http {\n server {\n", 2, "unexpected end of file"),
        ("events {}\nworker_processes 1\n", 2, "not terminated"),
        ("http {\n ;\n}\n", 2, "unexpected \";\""),
    ] {
        let file = write(dir.path(), "nginx.conf", text);
        let e = nginx::read(&file).expect_err(text);
        let shown = e.to_string();
        assert!(
            shown.contains(&format!("nginx.conf:{line}:")) && shown.contains(what),
            "{text:?}: {shown}"
        );
    }
}

#[test]
fn nginx_tokens_quotes_comments_and_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "nginx.conf",
        "# a comment; with { braces }\nhttp { server { server_name 'a.test' \"b\\\".test\" ${x}y; # trailing\n return 200 \"a;b{c}\"; } }\n",
    );
    let tree = nginx::parse(&file).expect("parses");
    let server = &tree[0].block.as_ref().expect("http")[0];
    let block = server.block.as_ref().expect("server");
    assert_eq!(block[0].args, ["a.test", "b\".test", "${x}y"]);
    assert_eq!(block[1].args, ["200", "a;b{c}"]);
    assert_eq!(block[1].at.line, 3);
}

#[test]
fn nginx_includes_resolve_against_the_main_files_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // sites/a.conf includes "snippets/x.conf": nginx looks for it next to nginx.conf, not
    // next to sites/a.conf.
    write(d, "snippets/x.conf", "server_name from-main-dir.test;\n");
    write(d, "sites/snippets/x.conf", "server_name wrong-dir.test;\n");
    write(
        d,
        "sites/a.conf",
        "server {\n listen 443 ssl;\n include snippets/x.conf;\n}\n",
    );
    let file = write(d, "nginx.conf", "http {\n include sites/*.conf;\n}\n");
    let plan = nginx::read(&file).expect("reads");
    assert_eq!(hosts(&plan.sites[0]), ["from-main-dir.test"]);
    assert!(plan.sites[0].hosts[0].at.file.ends_with("snippets/x.conf"));
    // A missing plain include is an error; a glob may match nothing.
    let file = write(d, "nginx.conf", "http {\n include missing.conf;\n}\n");
    assert!(nginx::read(&file)
        .expect_err("missing")
        .to_string()
        .contains("missing.conf"));
    let file = write(d, "nginx.conf", "http {\n include none/*.conf;\n}\n");
    assert!(nginx::read(&file).is_ok());
    // An include of itself ends.
    let file = write(d, "nginx.conf", "include nginx.conf;\n");
    assert!(nginx::read(&file)
        .expect_err("loop")
        .to_string()
        .contains("nest deeper"));
}

#[test]
fn nginx_listen_forms_and_the_default_server() {
    let plan = nginx_plan(
        "http {\n\
         server { listen 443 ssl; listen [::]:443 ssl; server_name first.test; ssl_certificate a.pem; return 200; }\n\
         server { listen 0.0.0.0:443 ssl default_server; server_name chosen.test; ssl_certificate a.pem; return 200; }\n\
         server { listen 127.0.0.2:8443 ssl; server_name ip.test; ssl_certificate a.pem; return 200; }\n\
         server { listen unix:/run/x.sock; server_name sock.test; }\n\
         }\n",
    );
    let addresses: Vec<&str> = plan.listeners.iter().map(|l| l.address.as_str()).collect();
    assert_eq!(addresses, ["*:443", "127.0.0.2:8443"]);
    assert_eq!(plan.listeners[0].no_sni.as_deref(), Some("chosen.test"));
    assert_eq!(plan.listeners[1].no_sni.as_deref(), Some("ip.test"));
    let wrong = messages(&plan, Class::Wrong);
    assert!(
        wrong
            .iter()
            .any(|m| m.contains("on *:443") && m.contains("its default_server")),
        "{wrong:?}"
    );
    let not = messages(&plan, Class::NotTranslated);
    assert!(
        not.iter().any(|m| m.contains("unix:/run/x.sock")),
        "{not:?}"
    );
    // Port 8443 has no *:8443, so nothing is hidden.
    assert!(
        !wrong.iter().any(|m| m.contains("hides it there")),
        "{wrong:?}"
    );
}

#[test]
fn nginx_an_ip_listen_hides_the_all_addresses_servers_on_its_ip() {
    let plan = nginx_plan(
        "http {\n\
         server { listen 443 ssl; server_name a.test; ssl_certificate a.pem; return 200; }\n\
         server { listen 10.0.0.5:443 ssl; server_name ip.test; ssl_certificate b.pem; return 200; }\n\
         server { listen 443 ssl; listen 80; server_name both.test; ssl_certificate c.pem; return 200; }\n\
         }\n",
    );
    let wrong = messages(&plan, Class::Wrong).join("\n");
    assert!(
        wrong.contains(
            "2: a.test is served on *:443, but the server block on 10.0.0.5:443 hides it there"
        ),
        "{wrong}"
    );
    assert!(wrong.contains("both.test is served on *:443"), "{wrong}");
    assert!(!wrong.contains("ip.test is served"), "{wrong}");
    let translated = messages(&plan, Class::Translated).join("\n");
    assert!(
        translated.contains("4: nginx also serves this server block over plain HTTP on *:80"),
        "{translated}"
    );
}

#[test]
fn nginx_server_names_actions_and_what_is_not_translated() {
    let plan = nginx_plan(
        "http {\n\
         upstream app { server 127.0.0.1:3000; server 127.0.0.1:3001; }\n\
         server {\n listen 443 ssl;\n server_name .example.test ~^www\\d+ mail.*;\n ssl_certificate a.pem;\n location / { proxy_pass http://app; proxy_set_header Host $host; }\n if ($x) { return 404; }\n add_header X-A b;\n}\n\
         server { listen 443 ssl; server_name old.test; ssl_certificate a.pem; rewrite ^/(.*)$ https://new.test/$1 permanent; }\n\
         server { listen 443 ssl; server_name health.test; ssl_certificate a.pem; return 200 \"ok\"; }\n\
         server { listen 443 ssl; server_name x.test; ssl_certificate a.pem; return 302 https://y.test$request_uri; }\n\
         }\n",
    );
    assert_eq!(hosts(&plan.sites[0]), ["example.test", "*.example.test"]);
    assert_eq!(
        plan.sites[0].action,
        Some(Action::Proxy(vec![
            "http://127.0.0.1:3000".to_string(),
            "http://127.0.0.1:3001".to_string()
        ]))
    );
    assert_eq!(
        plan.sites[1].action,
        Some(Action::Redirect {
            to: "https://new.test".to_string(),
            status: 301
        })
    );
    assert_eq!(
        plan.sites[2].action,
        Some(Action::Respond {
            status: 200,
            body: "ok".to_string()
        })
    );
    assert_eq!(
        plan.sites[3].action,
        Some(Action::Redirect {
            to: "https://y.test".to_string(),
            status: 302
        })
    );
    let not = messages(&plan, Class::NotTranslated).join("\n");
    for what in ["~^www\\d+", "mail.*", "if ($x)", "add_header X-A b"] {
        assert!(not.contains(what), "{what}: {not}");
    }
    assert!(!not.contains("proxy_set_header"), "{not}");
}

#[test]
fn nginx_plain_http_redirects_bind_the_https_site_to_an_http_listener() {
    let plan = nginx_plan(
        "http {\n\
         server { listen 80; server_name a.test; return 301 https://$host$request_uri; }\n\
         server { listen 443 ssl; server_name a.test; ssl_certificate a.pem; root /srv; }\n\
         server { listen 80; server_name plain.test; root /srv; }\n\
         }\n",
    );
    assert_eq!(plan.sites.len(), 1);
    assert_eq!(plan.sites[0].listeners, ["*:443", "*:80"]);
    assert_eq!(plan.listeners[1].kind, Kind::Http);
    let not = messages(&plan, Class::NotTranslated).join("\n");
    assert!(not.contains("4: a plain-HTTP server block"), "{not}");
}

#[test]
fn nginx_names_claimed_twice_stay_with_the_first_block() {
    let plan = nginx_plan(
        "http {\nserver { listen 443 ssl; server_name a.test b.test; ssl_certificate a.pem; root /srv; }\nserver { listen 443 ssl; server_name b.test c.test; ssl_certificate b.pem; root /srv; }\n}\n",
    );
    assert_eq!(hosts(&plan.sites[0]), ["a.test", "b.test"]);
    assert_eq!(hosts(&plan.sites[1]), ["c.test"]);
    let wrong = messages(&plan, Class::Wrong);
    assert!(
        wrong
            .iter()
            .any(|m| m.starts_with("3: b.test is claimed twice on *:443: first at")),
        "{wrong:?}"
    );
}

#[test]
fn nginx_old_protocols_are_reported_where_they_are_set() {
    let plan = nginx_plan("http {\n ssl_protocols TLSv1.2 TLSv1.3;\n server {\n  ssl_protocols TLSv1 TLSv1.2;\n }\n}\n");
    let wrong = messages(&plan, Class::Wrong);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].starts_with("4: ssl_protocols still enables TLSv1 "),
        "{wrong:?}"
    );
}

#[test]
fn apache_syntax_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, line, what) in [
        (
            "<VirtualHost *:443>\n ServerName a\n</IfModule>\n",
            3,
            "closes <VirtualHost>",
        ),
        ("<VirtualHost *:443>\n ServerName a\n", 1, "never closed"),
        ("</VirtualHost>\n", 1, "without matching"),
        ("<VirtualHost *:443\n</VirtualHost>\n", 1, "closing \">\""),
        ("Include missing.conf\n", 1, "missing.conf"),
    ] {
        let file = write(dir.path(), "apache2.conf", text);
        let shown = apache::read(&file).expect_err(text).to_string();
        assert!(
            shown.contains(&format!("apache2.conf:{line}"))
                || (what == "missing.conf" && shown.contains(what)),
            "{text:?}: {shown}"
        );
        assert!(shown.contains(what), "{text:?}: {shown}");
    }
}

#[test]
fn apache_vhosts_first_is_default_and_includes_follow_server_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let root = d.join("etc");
    write(
        &root,
        "sites/a.conf",
        "<VirtualHost *:443>\n  ServerName https://a.test:443\n  ServerAlias www.a.test \\\n     *.b.test\n  SSLEngine on\n  SSLCertificateFile certs/a.pem\n  DocumentRoot /srv/a\n</VirtualHost>\n",
    );
    write(
        &root,
        "sites/b.conf",
        "<IfModule ssl_module>\n<VirtualHost 10.0.0.5:443 *:443>\n  ServerName www.a.test\n  ServerAlias c?.test\n  SSLEngine on\n  SSLCertificateFile certs/b.pem\n  SSLCertificateKeyFile /k/b.key\n  Redirect permanent / https://new.test/\n</VirtualHost>\n</IfModule>\n<VirtualHost *:80>\n  ServerName a.test\n  Redirect / https://a.test/\n</VirtualHost>\n",
    );
    let main = write(
        d,
        "main.conf",
        &format!(
            "ServerRoot {}\nIncludeOptional sites/*.conf\nIncludeOptional nothing/*.conf\n",
            root.display()
        ),
    );
    let plan = apache::read(&main).expect("reads");
    assert_eq!(hosts(&plan.sites[0]), ["a.test", "www.a.test", "*.b.test"]);
    let tls = plan.sites[0].tls.as_ref().expect("tls");
    assert_eq!(tls.cert, root.join("certs/a.pem"));
    assert_eq!(tls.key, root.join("certs/a.pem"));
    assert_eq!(
        plan.sites[0].action,
        Some(Action::Root(PathBuf::from("/srv/a")))
    );
    // www.a.test is the first VirtualHost's on *:443; on 10.0.0.5 it is this one's.
    assert_eq!(plan.sites[1].listeners, ["10.0.0.5:443", "*:443"]);
    assert_eq!(
        plan.sites[1].action,
        Some(Action::Redirect {
            to: "https://new.test".to_string(),
            status: 301
        })
    );
    assert_eq!(plan.sites[0].listeners, ["*:443", "*:80"]);
    let wrong = messages(&plan, Class::Wrong).join("\n");
    assert!(
        wrong.contains("www.a.test is claimed twice on *:443"),
        "{wrong}"
    );
    assert!(wrong.contains("on 10.0.0.5:443, Apache answers"), "{wrong}");
    let not = messages(&plan, Class::NotTranslated).join("\n");
    assert!(not.contains("c?.test"), "{not}");
}

#[test]
fn apache_ssl_protocol_is_read_as_apache_reads_it() {
    for (value, old) in [
        ("all -SSLv3", true),
        ("all -SSLv3 -TLSv1 -TLSv1.1", false),
        ("-all +TLSv1.2 +TLSv1.3", false),
        ("TLSv1.2", false),
        ("TLSv1.2 +TLSv1.1", true),
        ("+TLSv1", true),
    ] {
        let plan = apache_plan(&format!("SSLProtocol {value}\n"));
        assert_eq!(!messages(&plan, Class::Wrong).is_empty(), old, "{value}");
    }
}

#[test]
fn netsh_output_is_read_in_utf8_and_in_powershells_utf16() {
    let text = "\nSSL Certificate bindings:\n-------------------------\n\n    IP:port                      : 0.0.0.0:443\n    Certificate Hash             : AB12\n    Application ID               : {x}\n\n    Hostname:port                : www.Example.com:8443\n    Certificate Hash             : cd34\n\n    Central Certificate Store    : 443\n    Certificate Hash             : (null)\n\n    IP:port                      : [::1]:443\n    Certificate Hash             : ef56\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let utf8 = write(dir.path(), "a.txt", text);
    let mut utf16 = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        utf16.extend(u.to_le_bytes());
    }
    let wide = dir.path().join("b.txt");
    std::fs::write(&wide, utf16).expect("write");
    for f in [utf8, wide] {
        let certs = iis::parse_sslcert(&f).expect("parses");
        let keys: Vec<(iis::SslKey, &str)> = certs
            .iter()
            .map(|c| (c.key.clone(), c.thumbprint.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (iis::SslKey::Ip("*:443".to_string()), "ab12"),
                (
                    iis::SslKey::Host("www.example.com".to_string(), 8443),
                    "cd34"
                ),
                (iis::SslKey::Ccs(443), "(null)"),
                (iis::SslKey::Ip("[::1]:443".to_string()), "ef56"),
            ]
        );
        assert_eq!(certs[1].at.line, 9);
    }
}

#[test]
fn iis_bindings_without_the_sni_flag_get_the_ip_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "applicationHost.config",
        "<configuration><system.applicationHost><sites>\n<site name=\"a\" id=\"1\"><bindings>\n<binding protocol=\"https\" bindingInformation=\"*:443:a.test\" />\n<binding protocol=\"https\" bindingInformation=\"[::1]:443:b.test\" sslFlags=\"3\" />\n<binding protocol=\"net.tcp\" bindingInformation=\"808:*\" />\n</bindings></site>\n</sites></system.applicationHost></configuration>\n",
    );
    let sslcert = write(
        dir.path(),
        "sslcert.txt",
        "    IP:port : 0.0.0.0:443\n    Certificate Hash : 11\n    Hostname:port : b.test:443\n    Certificate Hash : 22\n",
    );
    let files = IisFiles {
        sslcert: Some(sslcert),
        cert_dir: None,
    };
    let plan = iis::read(&config, &files).expect("reads");
    let wrong = messages(&plan, Class::Wrong).join("\n");
    assert!(
        wrong.contains("3: the binding for a.test has no SNI flag"),
        "{wrong}"
    );
    let addresses: Vec<&str> = plan.listeners.iter().map(|l| l.address.as_str()).collect();
    assert_eq!(addresses, ["*:443", "[::1]:443"]);
    let not = messages(&plan, Class::NotTranslated).join("\n");
    assert!(not.contains("net.tcp"), "{not}");
}

#[test]
fn finish_leaves_out_hosts_the_check_finds_uncovered_and_maps_findings_back() {
    // No certificate files at all: every host is uncovered, the check says so, and the
    // output still checks (without the hosts).
    let plan = nginx_plan(
        "http {\nserver { listen 443 ssl; server_name a.test; root /nonexistent-root; }\n}\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = finish(plan, &dir.path().join("portico.toml"), Vec::new());
    assert!(
        out.toml.contains("# \"a.test\"") || out.toml.contains("not written"),
        "{}",
        out.toml
    );
    let report = out.report();
    assert!(
        report.contains("a.test: no certificate of the server block"),
        "{report}"
    );
    assert!(out.problems() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No input makes a reader panic: it reads, or says which file and line it cannot read.
    #[test]
    fn readers_never_panic(text in "[ -~\\n\\t{};#'\"\\\\<>/$]{0,200}") {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "x.conf", &text);
        let _ = nginx::read(&file).map(|p| finish(p, &dir.path().join("o.toml"), Vec::new()));
        let _ = apache::read(&file).map(|p| finish(p, &dir.path().join("o.toml"), Vec::new()));
        let _ = iis::read(&file, &IisFiles { sslcert: Some(file.clone()), cert_dir: None });
    }
}
