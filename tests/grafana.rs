//! The Grafana dashboard `deploy/grafana/dashboards/port_exporter.json` is well formed: every
//! PromQL expression in it parses (after substituting Grafana's variables the way Grafana
//! would), every selector is narrowed by the dashboard's variables, every panel queries the
//! `${datasource}` variable, and the panels this project documents are there.

use std::collections::BTreeSet;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use serde_json::Value;

mod common;

use common::dashboard::*;

/// Every vector selector of `expr` (those inside range selectors included).
fn selectors(expr: &Expr) -> Vec<&VectorSelector> {
    fn walk<'a>(expr: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
        match expr {
            Expr::VectorSelector(vs) => out.push(vs),
            Expr::MatrixSelector(ms) => out.push(&ms.vs),
            Expr::Aggregate(agg) => {
                walk(&agg.expr, out);
                if let Some(param) = &agg.param {
                    walk(param, out);
                }
            }
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Subquery(s) => walk(&s.expr, out),
            Expr::Call(call) => call.args.args.iter().for_each(|arg| walk(arg, out)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let mut out = Vec::new();
    walk(expr, &mut out);
    out
}

#[test]
fn every_expression_parses() {
    // Like dashboard_queries, but reporting every failure at once instead of the first.
    let queries = raw_queries(&dashboard());
    let mut failures = Vec::new();
    for q in &queries {
        match substitute(&q.expr, lab_value) {
            Err(e) => failures.push(format!("panel {:?}: {e}\n  {}", q.title, q.expr)),
            Ok(expr) => {
                if let Err(e) = parser::parse(&expr) {
                    failures.push(format!("panel {:?}: {e}\n  {expr}", q.title));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} expressions in {DASHBOARD} do not parse:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    assert!(
        queries.len() > 10,
        "only {} expressions found in {DASHBOARD}: is the test reading the right keys?",
        queries.len()
    );
    // The helper the lab test uses agrees: same expressions, all substituted.
    assert_eq!(dashboard_queries().len(), queries.len());
}

#[test]
fn every_expr_in_the_file_is_checked() {
    // An `expr` somewhere the collector does not look (an annotation, a library panel) would
    // escape the parse check.
    fn count_exprs(value: &Value) -> usize {
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| usize::from(k == "expr" && v.is_string()) + count_exprs(v))
                .sum(),
            Value::Array(list) => list.iter().map(count_exprs).sum(),
            _ => 0,
        }
    }
    let dashboard = dashboard();
    let panel_exprs = raw_queries(&dashboard)
        .iter()
        .filter(|q| q.kind == QueryKind::Panel)
        .count();
    assert_eq!(count_exprs(&dashboard), panel_exprs);
}

#[test]
fn selectors_are_filtered_by_the_variables() {
    // Substitute a marker per variable, so that the parsed matchers show which one they use.
    let marker = |var: &str| {
        if LABEL_VARIABLES.contains(&var) {
            Some(format!("VAR_{var}"))
        } else {
            lab_value(var)
        }
    };
    let dashboard = dashboard();
    let mut failures = Vec::new();
    for q in raw_queries(&dashboard) {
        // every_expression_parses reports what does not substitute or parse.
        let Ok(expr) = substitute(&q.expr, marker) else {
            continue;
        };
        let Ok(ast) = parser::parse(&expr) else {
            continue;
        };
        for vs in selectors(&ast) {
            let name = vs.name.as_deref().unwrap_or_default();
            // Per-port and per-target series (and rules over them) carry target and host;
            // the exporter's own metrics, its per-address timing (narrowed to the targets' by
            // a join) and `up` only job.
            let per_port = !name.starts_with("port_exporter_")
                && !name.starts_with("port_host_")
                && name != "up";
            // A variable's query is narrowed only by the variables before it.
            let wanted: &[&str] = match (q.kind, q.title.as_str()) {
                (QueryKind::Variable, "variable job") => &[],
                (QueryKind::Variable, "variable target") => &["job"],
                (QueryKind::Variable, _) => &["job", "target"],
                (QueryKind::Panel, _) if per_port => &LABEL_VARIABLES,
                (QueryKind::Panel, _) => &["job"],
            };
            for var in wanted {
                let filtered = vs.matchers.matchers.iter().any(|m| {
                    m.name == *var
                        && matches!(m.op, MatchOp::Re(_))
                        && m.value == format!("VAR_{var}")
                });
                if !filtered {
                    failures.push(format!(
                        "{}: {name} lacks {var}=~\"${var}\"\n  {}",
                        q.title, q.expr
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dashboard_has_the_documented_panels() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "port-exporter");
    assert_eq!(dashboard["title"], "Port exporter");
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {} predates panel datasource objects",
        dashboard["schemaVersion"]
    );
    let panels = panels(&dashboard);
    let types: BTreeSet<&str> = panels.iter().filter_map(|p| p["type"].as_str()).collect();
    for wanted in ["state-timeline", "table", "timeseries", "bargauge"] {
        assert!(
            types.contains(wanted),
            "no {wanted} panel; types: {types:?}"
        );
    }
    let uses = |metric: &str, kind: &str| {
        panels.iter().any(|p| {
            p["type"] == kind
                && p["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["expr"].as_str().is_some_and(|e| e.contains(metric)))
        })
    };
    for (metric, kind) in [
        ("port:port_state:code", "state-timeline"),
        ("port_state{state=\"open\"", "table"),
        ("port_state_unexpected", "table"),
        ("port_state_unexpected", "stat"),
        ("port_connect_duration_seconds", "timeseries"),
        ("port_state{state=\"error\"", "table"),
        ("port_exporter_dns_lookup_failures_total", "timeseries"),
        ("port_target_ports", "stat"),
        ("port_service_info", "table"),
        ("port_service_reason", "table"),
        ("port_service_unexpected", "table"),
        ("port_tls_cert_expiry_timestamp_seconds", "bargauge"),
        ("port_tls_cert_expiry_timestamp_seconds", "table"),
        ("port_tls_version_info", "table"),
        ("port_tls_cert_verified", "table"),
    ] {
        assert!(uses(metric, kind), "no {kind} panel queries {metric}");
    }
}

#[test]
fn state_timeline_maps_the_recording_rule_codes() {
    // port:port_state:code is 1 open, 2 closed, 3 filtered, 4 error, 5 open|filtered (UDP).
    let dashboard = dashboard();
    let timeline = panels(&dashboard)
        .into_iter()
        .find(|p| p["type"] == "state-timeline")
        .expect("a state-timeline panel");
    let mappings = &timeline["fieldConfig"]["defaults"]["mappings"];
    let options = mappings
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["type"] == "value")
        .map(|m| &m["options"])
        .expect("a value mapping");
    for (code, state, color) in [
        ("1", "open", "green"),
        ("2", "closed", "blue"),
        ("3", "filtered", "orange"),
        ("4", "error", "red"),
        ("5", "open|filtered", "purple"),
    ] {
        assert_eq!(options[code]["text"], state, "mapping of {code}");
        assert_eq!(options[code]["color"], color, "colour of {state}");
    }
    assert!(
        timeline["targets"][0]["legendFormat"] == "{{host}}:{{port}}/{{protocol}} {{ip}}",
        "legend {}",
        timeline["targets"][0]["legendFormat"]
    );
}

#[test]
fn certificate_expiry_is_in_days_soonest_first_with_thresholds_at_0_and_14() {
    // The PortTLSCertificateExpiringSoon alert warns at 14 days, PortTLSCertificateExpired
    // at 0: the dashboard colours the same boundaries.
    let dashboard = dashboard();
    let panels = panels(&dashboard);
    let expiry: Vec<&Value> = panels
        .into_iter()
        .filter(|p| {
            p["targets"].as_array().into_iter().flatten().any(|t| {
                t["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("port_tls_cert_expiry_timestamp_seconds"))
            })
        })
        .collect();
    assert_eq!(
        expiry.len(),
        2,
        "a bar gauge and a table of certificate expiry"
    );
    for panel in expiry {
        let title = title(panel);
        let expr = panel["targets"][0]["expr"].as_str().unwrap();
        assert!(
            expr.contains("- time()) / 86400"),
            "panel {title:?}: not days left: {expr}"
        );
        let (unit, thresholds) = if panel["type"] == "bargauge" {
            assert!(
                expr.starts_with("sort("),
                "panel {title:?}: not soonest first"
            );
            let defaults = &panel["fieldConfig"]["defaults"];
            (&defaults["unit"], &defaults["thresholds"])
        } else {
            assert_eq!(panel["type"], "table", "panel {title:?}");
            assert_eq!(
                panel["options"]["sortBy"][0],
                serde_json::json!({"displayName": "days left", "desc": false}),
                "panel {title:?}: not soonest first"
            );
            let properties = panel["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["matcher"]["options"] == "days left")
                .map(|o| &o["properties"])
                .unwrap_or_else(|| panic!("panel {title:?}: no override of days left"));
            let property = |id: &str| {
                properties
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["id"] == id)
                    .map(|p| &p["value"])
                    .unwrap_or_else(|| panic!("panel {title:?}: days left has no {id}"))
            };
            (property("unit"), property("thresholds"))
        };
        assert_eq!(unit, "d", "panel {title:?}: unit");
        let steps: Vec<(&Value, &Value)> = thresholds["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| (&s["value"], &s["color"]))
            .collect();
        assert_eq!(
            steps,
            [
                (&Value::Null, &Value::from("red")),
                (&Value::from(0), &Value::from("orange")),
                (&Value::from(14), &Value::from("green")),
            ],
            "panel {title:?}: thresholds"
        );
    }
}

#[test]
fn every_panel_uses_the_datasource_variable() {
    let dashboard = dashboard();
    let is_variable = |ds: &Value| ds["type"] == "prometheus" && ds["uid"] == DATASOURCE_UID;
    for panel in panels(&dashboard) {
        let title = title(panel);
        assert!(
            is_variable(&panel["datasource"]),
            "panel {title:?}: datasource {}",
            panel["datasource"]
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            let ds = &target["datasource"];
            assert!(
                ds.is_null() || is_variable(ds),
                "panel {title:?} target {}: datasource {ds}",
                target["refId"]
            );
        }
    }
    // Nowhere a hard-coded datasource: only the variable, and Grafana's built-in annotations.
    fn check(value: &Value, is_variable: &dyn Fn(&Value) -> bool) {
        match value {
            Value::Object(map) => {
                if let Some(ds) = map.get("datasource") {
                    assert!(
                        is_variable(ds) || ds["type"] == "grafana",
                        "hard-coded datasource {ds}"
                    );
                }
                map.values().for_each(|v| check(v, is_variable));
            }
            Value::Array(list) => list.iter().for_each(|v| check(v, is_variable)),
            _ => {}
        }
    }
    check(&dashboard, &is_variable);

    let datasource = variable(&dashboard, "datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for name in LABEL_VARIABLES {
        let var = variable(&dashboard, name);
        assert_eq!(var["type"], "query", "variable {name}");
        assert!(is_variable(&var["datasource"]), "variable {name}");
        assert_eq!(var["multi"], true, "variable {name} is multi-value");
        assert_eq!(var["includeAll"], true, "variable {name} includes All");
    }
}

#[test]
fn panels_have_unique_ids_and_titles_and_do_not_overlap() {
    let dashboard = dashboard();
    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for panel in &panels {
        let title = title(panel);
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?} has no numeric id"));
        assert!(ids.insert(id), "panel id {id} twice (again on {title:?})");
        assert!(titles.insert(title.clone()), "panel title {title:?} twice");
        let pos = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            pos[k]
                .as_u64()
                .unwrap_or_else(|| panic!("panel {title:?}: gridPos.{k}"))
        });
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "panel {title:?}: gridPos {pos}"
        );
        for (other, [ox, oy, ow, oh]) in &boxes {
            let apart = x + w <= *ox || *ox + ow <= x || y + h <= *oy || *oy + oh <= y;
            assert!(apart, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((title, [x, y, w, h]));
    }
}

#[test]
fn substitution_follows_grafana() {
    let value = |var: &str| lab_value(var);
    assert_eq!(
        substitute(
            r#"rate(x{job=~"$job",host=~"${host}",target=~"${target:regex}"}[$__rate_interval])"#,
            value
        )
        .unwrap(),
        r#"rate(x{job=~".*",host=~".*",target=~".*"}[1m])"#
    );
    assert_eq!(
        substitute(r#"rate(x{a=~"b$"}[[[__range]]])"#, value).unwrap(),
        r#"rate(x{a=~"b$"}[1m])"#
    );
    assert_eq!(substitute("y[5m]", value).unwrap(), "y[5m]");
    assert!(substitute("x{job=~\"$jbo\"}", value).is_err());
    assert_eq!(
        variable_query_expr(r#"label_values(port_state{job=~"$job", a="b,c"}, host)"#).unwrap(),
        Some(r#"port_state{job=~"$job", a="b,c"}"#.to_string())
    );
    assert_eq!(variable_query_expr("label_values(job)").unwrap(), None);
    assert!(variable_query_expr("metrics(port_.*)").is_err());
}
