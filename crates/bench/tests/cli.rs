//! The runner's command line: help on request, a clear error for a flag it does not know.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_laneway-bench")).args(args).output().expect("laneway-bench runs")
}

#[test]
fn help_prints_the_usage_and_succeeds() {
    for args in [&["--help"][..], &["-h"], &["help"], &["run", "--help"]] {
        let out = bench(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("Usage: laneway-bench run"), "{args:?}: {text}");
    }
}

#[test]
fn an_unknown_flag_is_refused_by_name_with_the_usage() {
    let out = bench(&["run", "--fast"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("unknown argument `--fast`") && text.contains("Usage:"), "{text}");
}
