//! Templates end to end: includes and macros from the config repo, the
//! machine facts, and an undefined variable's error with a caret.

mod common;

use common::Repo;

const MANIFEST: &str = "[vars]\nname = \"me\"\n[file.t]\npath = \"~/t\"\ntemplate = \"t.j2\"\n";

#[test]
fn include_macro_and_facts_render_into_the_file() {
    let r = Repo::new(MANIFEST);
    r.write_source("parts/head.j2", "# for {{ name }}\n");
    r.write_source(
        "macros.j2",
        "{% macro kv(k, v) %}{{ k }}={{ v }}{% endmacro %}",
    );
    r.write_source(
        "t.j2",
        "{% include \"parts/head.j2\" %}{% import \"macros.j2\" as m %}{{ m.kv(\"kernel\", kernel) }}\n",
    );
    r.ok(&["apply", "--yes"]);
    let text = std::fs::read_to_string(r.path("t")).unwrap();
    let kernel = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(text, format!("# for me\nkernel={kernel}\n"));
}

#[test]
fn an_undefined_variable_is_named_with_file_line_and_a_caret() {
    let r = Repo::new(MANIFEST);
    r.write_source("t.j2", "a\nemail = {{ emial }}\n");
    let (code, out, err) = r.run(&["plan"]);
    assert_eq!(code, 1, "{out}");
    let err = r.redact(&err);
    assert!(
        err.contains(
            "template <config>/t.j2: line 2: undefined variable `emial`\n  2 | email = {{ emial }}\n    |            ^^^^^\n"
        ),
        "{err}"
    );
}
