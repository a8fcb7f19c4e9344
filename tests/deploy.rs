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
}
