//! Rows of the diagnostics table: the [log] table.

use super::*;

fn log(lines: &str) -> String {
    format!("[log]\n{lines}\n")
}

fn served() -> String {
    [base(), site("a", &["a.test"], &[RESPOND])].concat()
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "log format json",
            [log(r#"format = "json""#), served()].concat(),
            vec![],
        ),
        case(
            "log format text",
            [log(r#"format = "text""#), served()].concat(),
            vec![],
        ),
        case("empty log table", [log(""), served()].concat(), vec![]),
        case(
            "log format that does not exist",
            [log(r#"format = "logfmt""#), served()].concat(),
            vec![error_fix(
                "log.format",
                "unknown log format \"logfmt\"",
                "set format = \"text\" (the default) or \"json\"",
            )],
        ),
        case(
            "unknown key in [log]",
            [log("format = \"json\"\nformt = \"json\""), served()].concat(),
            vec![error("log.formt", "unknown key \"formt\"")],
        ),
    ]
}
