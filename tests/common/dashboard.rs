//! The Grafana dashboard's queries, for the dashboard test and for the lab, which evaluates
//! them against a real Prometheus.

use std::path::Path;

use serde_json::Value;

/// Every PromQL expression of the dashboard, as (panel title, expression with the variables
/// substituted as Grafana would for "All": `.*` for `$job`, `$target` and `$host`, `1m` for
/// `$__rate_interval`, `$__interval` and `$__range`), ready to send to a real Prometheus.
/// Panel targets come first, in panel order; then the selector inside each template variable's
/// `label_values(selector, label)`, titled `variable <name>`.
pub fn dashboard_queries() -> Vec<(String, String)> {
    raw_queries(&dashboard())
        .into_iter()
        .map(|q| {
            let expr = substitute(&q.expr, lab_value)
                .unwrap_or_else(|e| panic!("{}: {e}\n  {}", q.title, q.expr));
            (q.title, expr)
        })
        .collect()
}

pub const DASHBOARD: &str = "deploy/grafana/dashboards/port_exporter.json";
pub const DATASOURCE_UID: &str = "${datasource}";
/// The template variables that filter labels, each filtering the label of its name.
pub const LABEL_VARIABLES: [&str; 3] = ["job", "target", "host"];

/// What Grafana puts in place of a variable when "All" is selected (label variables) and for a
/// typical time range and scrape interval (the built-in interval variables).
pub fn lab_value(var: &str) -> Option<String> {
    let value = match var {
        "job" | "target" | "host" => ".*",
        "__rate_interval" | "__interval" | "__range" => "1m",
        "__interval_ms" | "__range_ms" => "60000",
        "__range_s" => "60",
        _ => return None,
    };
    Some(value.to_string())
}

pub fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// One expression as written in the dashboard, variables not substituted.
pub struct RawQuery {
    /// The panel title, or `variable <name>` for a template variable.
    pub title: String,
    /// Whether it comes from a panel target or a template variable.
    pub kind: QueryKind,
    pub expr: String,
}

#[derive(Clone, Copy, PartialEq)]
pub enum QueryKind {
    Panel,
    Variable,
}

/// Every panel, including those nested in (collapsed) rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

pub fn title(panel: &Value) -> String {
    panel["title"].as_str().unwrap_or("<untitled>").to_string()
}

pub fn variables(dashboard: &Value) -> &[Value] {
    dashboard["templating"]["list"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

pub fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    variables(dashboard)
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no template variable {name:?}"))
}

pub fn raw_queries(dashboard: &Value) -> Vec<RawQuery> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {:?}: a target without expr", title(panel)));
            out.push(RawQuery {
                title: title(panel),
                kind: QueryKind::Panel,
                expr: expr.to_string(),
            });
        }
    }
    for var in variables(dashboard) {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("<unnamed>");
        // Grafana 10+ saves an object, older versions a string.
        let query = var["query"]
            .as_str()
            .or_else(|| var["query"]["query"].as_str())
            .unwrap_or_else(|| panic!("variable {name:?} has no query"));
        if let Some(expr) =
            variable_query_expr(query).unwrap_or_else(|e| panic!("variable {name:?}: {e}: {query}"))
        {
            out.push(RawQuery {
                title: format!("variable {name}"),
                kind: QueryKind::Variable,
                expr,
            });
        }
    }
    out
}

/// The PromQL inside a Prometheus template variable query: the selector of
/// `label_values(selector, label)` (none for `label_values(label)`), the expression of
/// `query_result(expr)`.
pub fn variable_query_expr(query: &str) -> Result<Option<String>, String> {
    let query = query.trim();
    let inner = |prefix: &str| {
        query
            .strip_prefix(prefix)
            .and_then(|rest| rest.trim_start().strip_prefix('('))
            .and_then(|rest| rest.strip_suffix(')'))
    };
    if let Some(args) = inner("label_values") {
        // A label name has no comma: the last one ends the selector.
        return match args.rsplit_once(',') {
            Some((selector, label)) if is_label_name(label.trim()) => {
                Ok(Some(selector.trim().to_string()))
            }
            Some(_) => Err("label_values(selector, label): bad label name".into()),
            None if is_label_name(args.trim()) => Ok(None),
            None => Err("label_values(label): bad label name".into()),
        };
    }
    if let Some(expr) = inner("query_result") {
        return Ok(Some(expr.trim().to_string()));
    }
    Err("not label_values(...) or query_result(...)".into())
}

pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces Grafana's variable forms `$name`, `${name}`, `${name:format}` and `[[name]]` with
/// `value(name)`; a variable `value` does not know is an error (a typo would silently match
/// nothing in Grafana). A `$` not followed by a name (a regex anchor) stays as it is.
pub fn substitute(expr: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let lookup = |name: &str| value(name).ok_or_else(|| format!("unknown variable {name:?}"));
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(braced) = tail.strip_prefix("${") {
            let end = braced.find('}').ok_or("unclosed ${")?;
            let name = braced[..end].split(':').next().unwrap_or_default();
            out.push_str(&lookup(name)?);
            rest = &braced[end + 1..];
        } else if let Some((name, after)) = tail
            .strip_prefix("[[")
            .and_then(|b| b.split_once("]]"))
            .map(|(inner, after)| (inner.split(':').next().unwrap_or_default(), after))
            .filter(|(name, _)| !name.is_empty() && name.chars().all(is_name_char))
        {
            out.push_str(&lookup(name)?);
            rest = after;
        } else if let Some(plain) = tail.strip_prefix('$') {
            let end = plain.find(|c| !is_name_char(c)).unwrap_or(plain.len());
            if end == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&plain[..end])?);
            }
            rest = &plain[end..];
        } else {
            out.push('[');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
