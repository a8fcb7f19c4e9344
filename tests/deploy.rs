//! The files under deploy/ pass the checks of the tools that load them.

mod common;

use std::process::Command;

use common::{have, skip};

fn promtool(args: &[&str]) {
    let out = Command::new("promtool").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_passes_promtool() {
    if !have("promtool") && skip("promtool not installed") {
        return;
    }
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    promtool(&["check", "config", "deploy/prometheus/probe.yml"]);
}

/// The rule files under deploy/prometheus/rules (`*.yml`, `*.yaml`), sorted.
fn rule_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir("deploy/prometheus/rules")
        .expect("deploy/prometheus/rules exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yml" || ext == "yaml")
        })
        .map(|path| path.to_str().unwrap().to_string())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no rule files in deploy/prometheus/rules"
    );
    files
}

#[test]
fn prometheus_rules_pass_promtool_check() {
    if !have("promtool") && skip("promtool not installed") {
        return;
    }
    for file in rule_files() {
        promtool(&["check", "rules", &file]);
    }
}

#[test]
fn prometheus_rules_pass_their_unit_tests() {
    if !have("promtool") && skip("promtool not installed") {
        return;
    }
    // promtool resolves the test file's rule_files against the test file's directory.
    let tests = "deploy/prometheus/tests/port_exporter_test.yml";
    let text = std::fs::read_to_string(tests).expect("the rule unit tests exist");
    for file in rule_files() {
        let name = std::path::Path::new(&file).file_name().unwrap();
        let entry = format!("../rules/{}", name.to_str().unwrap());
        assert!(
            text.contains(&entry),
            "{tests} does not load {file} (add `{entry}` to its rule_files)"
        );
    }
    promtool(&["test", "rules", tests]);
}
