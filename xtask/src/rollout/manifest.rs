//! `rollout.yaml` and the defaults of the blue/green tasks, held together:
//! the names, the ports, the probe path. And the manifest as the API server
//! would take it: known fields only, and the settings the design asks for.

use serde_yaml_ng::{Mapping, Value};

use super::{
    DEFAULT_ACTIVE_SERVICE, DEFAULT_CONTAINER, DEFAULT_PREVIEW_SERVICE, DEFAULT_ROLLOUT,
    HEALTH_PATH, SERVICE_PORT,
};

/// The port the api listens on by default (its PORT), which the pods must expose.
const API_PORT: u64 = 8080;
/// The probes' own port (the api's PROBE_PORT), which the kubelet's probes ask.
const PROBE_PORT: u64 = 8081;
/// The api's readiness path: 503 once it drains (`api --help`).
const READY_PATH: &str = "/ready";

fn documents() -> Vec<Value> {
    let path = crate::context::workspace_root().join("rollout.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rollout.yaml parses"))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("rollout.yaml has no {kind} named {name}"))
}

fn rollout(docs: &[Value]) -> &Value {
    find(docs, "Rollout", DEFAULT_ROLLOUT)
}

fn container(docs: &[Value]) -> &Value {
    rollout(docs)["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == DEFAULT_CONTAINER)
        .unwrap_or_else(|| panic!("the Rollout has no container {DEFAULT_CONTAINER}"))
}

/// The container port a Service's targetPort names (by name or number).
fn target_port(docs: &[Value], target: &Value) -> u64 {
    match target {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(name) => container(docs)["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap(),
        other => panic!("targetPort {other:?}"),
    }
}

#[test]
fn the_rollout_and_container_are_the_task_defaults() {
    let docs = documents();
    let rollout = rollout(&docs);
    assert_eq!(rollout["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(container(&docs)["name"], DEFAULT_CONTAINER);
}

#[test]
fn the_services_are_the_task_defaults_and_forward_port_80_to_the_api() {
    let docs = documents();
    let blue_green = &rollout(&docs)["spec"]["strategy"]["blueGreen"];
    assert_eq!(blue_green["activeService"], DEFAULT_ACTIVE_SERVICE);
    assert_eq!(blue_green["previewService"], DEFAULT_PREVIEW_SERVICE);
    for name in [DEFAULT_ACTIVE_SERVICE, DEFAULT_PREVIEW_SERVICE] {
        let service = find(&docs, "Service", name);
        let ports = service["spec"]["ports"].as_sequence().unwrap();
        assert_eq!(ports.len(), 1, "{name}");
        assert_eq!(
            ports[0]["port"].as_u64(),
            Some(u64::from(SERVICE_PORT)),
            "{name}"
        );
        assert_eq!(
            target_port(&docs, &ports[0]["targetPort"]),
            API_PORT,
            "{name}"
        );
    }
}

#[test]
fn the_services_and_the_rollout_select_the_pods_of_the_template() {
    let docs = documents();
    let spec = &rollout(&docs)["spec"];
    let labels = spec["template"]["metadata"]["labels"].as_mapping().unwrap();
    let selects = |selector: &Mapping| selector.iter().all(|(k, v)| labels.get(k) == Some(v));
    assert!(selects(
        spec["selector"]["matchLabels"].as_mapping().unwrap()
    ));
    for name in [DEFAULT_ACTIVE_SERVICE, DEFAULT_PREVIEW_SERVICE] {
        let selector = find(&docs, "Service", name)["spec"]["selector"]
            .as_mapping()
            .unwrap();
        assert!(
            !selector.is_empty() && selects(selector),
            "{name} selects no pod of the Rollout"
        );
    }
}

#[test]
fn probes_ask_the_health_path_on_the_probe_port() {
    let docs = documents();
    let container = container(&docs);
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(API_PORT)
    );
    // The api serves a probe port only when PROBE_PORT says which.
    assert_eq!(env_secs(&docs, "PROBE_PORT"), PROBE_PORT);
    // Liveness on /health, which stays 200 while draining; readiness on /ready.
    for (probe, path) in [
        ("readinessProbe", READY_PATH),
        ("livenessProbe", HEALTH_PATH),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(target_port(&docs, &get["port"]), PROBE_PORT, "{probe}");
    }
}

/// A setting of the container's `env`, as a number.
fn env_secs(docs: &[Value], name: &str) -> u64 {
    container(docs)["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("the container does not set {name}"))["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_grace_period_outlasts_the_drain_and_readiness_fails_within_the_delay() {
    let docs = documents();
    let delay = env_secs(&docs, "DRAIN_DELAY_SECS");
    let bound = env_secs(&docs, "SHUTDOWN_TIMEOUT_SECS");
    let grace = rollout(&docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > delay + bound,
        "grace {grace}s <= delay {delay}s + drain {bound}s"
    );
    let ready = &container(&docs)["readinessProbe"];
    let unready_after =
        ready["periodSeconds"].as_u64().unwrap() * ready["failureThreshold"].as_u64().unwrap();
    assert!(
        delay > 0 && unready_after <= delay,
        "readiness turns after {unready_after}s, the delay is {delay}s"
    );
}

#[test]
fn the_pod_runs_as_the_user_of_the_image() {
    let path = crate::context::workspace_root().join("Dockerfile");
    let dockerfile = std::fs::read_to_string(&path).unwrap();
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the Dockerfile names a USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let docs = documents();
    let pod = &rollout(&docs)["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsUser"].as_u64(), Some(uid.parse().unwrap()));
    assert_eq!(pod["runAsGroup"].as_u64(), Some(gid.parse().unwrap()));
}

#[test]
fn promotion_is_manual_and_scale_down_delays_are_set() {
    let docs = documents();
    let blue_green = &rollout(&docs)["spec"]["strategy"]["blueGreen"];
    assert_eq!(blue_green["autoPromotionEnabled"], false);
    assert!(blue_green["scaleDownDelaySeconds"].as_u64().unwrap() > 0);
    assert!(blue_green["abortScaleDownDelaySeconds"].as_u64().unwrap() > 0);
    // The rollout reports Degraded before `deploy --wait` (300s by default) gives up.
    assert!(
        rollout(&docs)["spec"]["progressDeadlineSeconds"]
            .as_u64()
            .unwrap()
            < 300
    );
}

#[test]
fn the_container_is_locked_down_and_sized() {
    let docs = documents();
    let container = container(&docs);
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    let pod_security = &rollout(&docs)["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource} is not set"
            );
        }
    }
}

/// The fields of each object the manifest uses, from the Kubernetes API
/// (core/v1) and the Rollout CRD (argoproj.io/v1alpha1). The API server
/// rejects (or, for a CRD, prunes) anything else, so a typo here fails.
fn known_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Rollout" | "Service" | "AnalysisTemplate" => &["apiVersion", "kind", "metadata", "spec"],
        // pkg/apis/rollouts/v1alpha1 types.go RolloutAnalysis, AnalysisRunArgument.
        "RolloutAnalysis" => &["templates", "args", "dryRun", "measurementRetention"],
        "AnalysisTemplateRef" => &["templateName", "clusterScope"],
        "AnalysisRunArgument" => &["name", "value", "valueFrom"],
        "ArgumentValueFrom" => &["podTemplateHashValue", "fieldRef"],
        "FieldRef" => &["fieldPath"],
        // analysis_types.go AnalysisTemplateSpec, Argument, Metric, MetricProvider, JobMetric.
        "AnalysisTemplateSpec" => &[
            "args",
            "dryRun",
            "measurementRetention",
            "metrics",
            "templates",
        ],
        "Argument" => &["name", "value", "valueFrom"],
        "Metric" => &[
            "name",
            "interval",
            "initialDelay",
            "count",
            "successCondition",
            "failureCondition",
            "failureLimit",
            "inconclusiveLimit",
            "consecutiveErrorLimit",
            "consecutiveSuccessLimit",
            "provider",
        ],
        "MetricProvider" => &[
            "prometheus",
            "kayenta",
            "web",
            "datadog",
            "wavefront",
            "newRelic",
            "job",
            "cloudWatch",
            "graphite",
            "influxdb",
            "skywalking",
            "plugin",
        ],
        "JobMetric" => &["metadata", "spec"],
        // batch/v1 JobSpec.
        "JobSpec" => &[
            "parallelism",
            "completions",
            "activeDeadlineSeconds",
            "podFailurePolicy",
            "successPolicy",
            "backoffLimit",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
            "selector",
            "manualSelector",
            "template",
            "ttlSecondsAfterFinished",
            "completionMode",
            "suspend",
            "podReplacementPolicy",
            "managedBy",
        ],
        "ObjectMeta" => &["name", "namespace", "labels", "annotations"],
        "RolloutSpec" => &[
            "replicas",
            "selector",
            "template",
            "workloadRef",
            "minReadySeconds",
            "strategy",
            "revisionHistoryLimit",
            "paused",
            "progressDeadlineSeconds",
            "progressDeadlineAbort",
            "restartAt",
            "rollbackWindow",
            "analysis",
        ],
        "LabelSelector" => &["matchLabels", "matchExpressions"],
        "Strategy" => &["blueGreen", "canary"],
        "BlueGreen" => &[
            "activeService",
            "previewService",
            "previewReplicaCount",
            "autoPromotionEnabled",
            "autoPromotionSeconds",
            "maxUnavailable",
            "scaleDownDelaySeconds",
            "scaleDownDelayRevisionLimit",
            "abortScaleDownDelaySeconds",
            "antiAffinity",
            "prePromotionAnalysis",
            "postPromotionAnalysis",
            "previewMetadata",
            "activeMetadata",
        ],
        "PodTemplate" => &["metadata", "spec"],
        "TemplateMeta" => &["labels", "annotations"],
        "PodSpec" => &[
            "containers",
            "initContainers",
            "volumes",
            "securityContext",
            "serviceAccountName",
            "automountServiceAccountToken",
            "terminationGracePeriodSeconds",
            "nodeSelector",
            "affinity",
            "tolerations",
            "topologySpreadConstraints",
            "priorityClassName",
            "imagePullSecrets",
            "enableServiceLinks",
            "restartPolicy",
        ],
        "PodSecurityContext" => &[
            "runAsNonRoot",
            "runAsUser",
            "runAsGroup",
            "fsGroup",
            "seccompProfile",
            "supplementalGroups",
            "sysctls",
        ],
        "Container" => &[
            "name",
            "image",
            "imagePullPolicy",
            "command",
            "args",
            "workingDir",
            "env",
            "envFrom",
            "ports",
            "readinessProbe",
            "livenessProbe",
            "startupProbe",
            "resources",
            "securityContext",
            "volumeMounts",
            "lifecycle",
        ],
        "EnvVar" => &["name", "value", "valueFrom"],
        "ContainerPort" => &["name", "containerPort", "protocol", "hostPort", "hostIP"],
        "Probe" => &[
            "httpGet",
            "tcpSocket",
            "exec",
            "grpc",
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "successThreshold",
            "failureThreshold",
            "terminationGracePeriodSeconds",
        ],
        "HTTPGetAction" => &["path", "port", "host", "scheme", "httpHeaders"],
        "Resources" => &["requests", "limits"],
        "Quantities" => &["cpu", "memory", "ephemeral-storage"],
        "SecurityContext" => &[
            "runAsNonRoot",
            "runAsUser",
            "runAsGroup",
            "readOnlyRootFilesystem",
            "allowPrivilegeEscalation",
            "privileged",
            "capabilities",
            "seccompProfile",
            "procMount",
            "seLinuxOptions",
            "appArmorProfile",
        ],
        "Capabilities" => &["add", "drop"],
        "SeccompProfile" => &["type", "localhostProfile"],
        "ServiceSpec" => &[
            "type",
            "selector",
            "ports",
            "clusterIP",
            "sessionAffinity",
            "externalTrafficPolicy",
            "internalTrafficPolicy",
            "ipFamilyPolicy",
            "publishNotReadyAddresses",
        ],
        "ServicePort" => &[
            "name",
            "port",
            "targetPort",
            "protocol",
            "appProtocol",
            "nodePort",
        ],
        other => panic!("no field list for {other}"),
    }
}

/// What kind of object each field of `kind` holds (objects only; scalars and
/// free-form maps such as labels are not walked).
fn child_kind(kind: &str, field: &str) -> Option<&'static str> {
    Some(match (kind, field) {
        ("Rollout", "metadata") | ("Service", "metadata") => "ObjectMeta",
        ("Rollout", "spec") => "RolloutSpec",
        ("AnalysisTemplate", "metadata") => "ObjectMeta",
        ("AnalysisTemplate", "spec") => "AnalysisTemplateSpec",
        ("BlueGreen", "prePromotionAnalysis") | ("BlueGreen", "postPromotionAnalysis") => {
            "RolloutAnalysis"
        }
        ("RolloutAnalysis", "templates") => "AnalysisTemplateRef",
        ("RolloutAnalysis", "args") => "AnalysisRunArgument",
        ("AnalysisRunArgument", "valueFrom") | ("Argument", "valueFrom") => "ArgumentValueFrom",
        ("ArgumentValueFrom", "fieldRef") => "FieldRef",
        ("AnalysisTemplateSpec", "args") => "Argument",
        ("AnalysisTemplateSpec", "metrics") => "Metric",
        ("Metric", "provider") => "MetricProvider",
        ("MetricProvider", "job") => "JobMetric",
        ("JobMetric", "metadata") => "TemplateMeta",
        ("JobMetric", "spec") => "JobSpec",
        ("JobSpec", "template") => "PodTemplate",
        ("Service", "spec") => "ServiceSpec",
        ("RolloutSpec", "selector") => "LabelSelector",
        ("RolloutSpec", "strategy") => "Strategy",
        ("RolloutSpec", "template") => "PodTemplate",
        ("Strategy", "blueGreen") => "BlueGreen",
        ("PodTemplate", "metadata") => "TemplateMeta",
        ("PodTemplate", "spec") => "PodSpec",
        ("PodSpec", "securityContext") => "PodSecurityContext",
        ("PodSpec", "containers") => "Container",
        ("PodSecurityContext", "seccompProfile") | ("SecurityContext", "seccompProfile") => {
            "SeccompProfile"
        }
        ("Container", "env") => "EnvVar",
        ("Container", "ports") => "ContainerPort",
        ("Container", "readinessProbe") | ("Container", "livenessProbe") => "Probe",
        ("Container", "resources") => "Resources",
        ("Container", "securityContext") => "SecurityContext",
        ("Probe", "httpGet") => "HTTPGetAction",
        ("Resources", _) => "Quantities",
        ("SecurityContext", "capabilities") => "Capabilities",
        ("ServiceSpec", "ports") => "ServicePort",
        _ => return None,
    })
}

fn check_fields(kind: &str, value: &Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                check_fields(kind, item, &format!("{path}[{i}]"), unknown);
            }
        }
        Value::Mapping(map) => {
            for (key, child) in map {
                let key = key.as_str().expect("string keys");
                if !known_fields(kind).contains(&key) {
                    unknown.push(format!("{path}.{key} (not a field of {kind})"));
                }
                if let Some(child_kind) = child_kind(kind, key) {
                    check_fields(child_kind, child, &format!("{path}.{key}"), unknown);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn every_field_is_one_the_api_server_knows() {
    let docs = documents();
    assert_eq!(
        docs.len(),
        4,
        "a Rollout, two Services and an AnalysisTemplate"
    );
    let mut unknown = Vec::new();
    for doc in &docs {
        let kind = doc["kind"].as_str().expect("every document has a kind");
        check_fields(kind, doc, kind, &mut unknown);
    }
    assert!(
        unknown.is_empty(),
        "unknown fields in rollout.yaml:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn the_field_check_catches_a_typo() {
    let mut docs = documents();
    let container = &mut docs[0]["spec"]["template"]["spec"]["containers"][0];
    container
        .as_mapping_mut()
        .unwrap()
        .insert("readinesProbe".into(), Value::Null);
    let mut unknown = Vec::new();
    check_fields("Rollout", &docs[0], "Rollout", &mut unknown);
    assert_eq!(
        unknown,
        ["Rollout.spec.template.spec.containers[0].readinesProbe (not a field of Container)"]
    );
}

// ---- the gate: the preview checked in the cluster ----

fn analysis_template(docs: &[Value]) -> &Value {
    let name = &rollout(docs)["spec"]["strategy"]["blueGreen"]["prePromotionAnalysis"]["templates"]
        [0]["templateName"];
    find(
        docs,
        "AnalysisTemplate",
        name.as_str().expect("a templateName"),
    )
}

fn check_job(docs: &[Value]) -> &Value {
    &analysis_template(docs)["spec"]["metrics"][0]["provider"]["job"]
}

#[test]
fn the_preview_is_checked_by_its_own_image_against_the_preview_service() {
    let docs = documents();
    let analysis = &rollout(&docs)["spec"]["strategy"]["blueGreen"]["prePromotionAnalysis"];
    let args: Vec<&Value> = analysis["args"].as_sequence().unwrap().iter().collect();
    // The image: the template's container `api`, by its index (utils/analysis/factory.go
    // extractValueFromRollout walks the Rollout's JSON by `.` and `[N]`).
    let containers = rollout(&docs)["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let index = containers
        .iter()
        .position(|c| c["name"] == DEFAULT_CONTAINER)
        .unwrap();
    let image = args
        .iter()
        .find(|a| a["name"] == "image")
        .expect("an image arg");
    assert_eq!(
        image["valueFrom"]["fieldRef"]["fieldPath"],
        format!("spec.template.spec.containers[{index}].image").as_str()
    );
    let url = args
        .iter()
        .find(|a| a["name"] == "preview-url")
        .expect("a preview-url arg");
    assert_eq!(
        url["value"],
        format!("http://{DEFAULT_PREVIEW_SERVICE}/").as_str()
    );
    assert_eq!(SERVICE_PORT, 80, "the URL names no port");

    // The template declares exactly the args the Rollout passes.
    let template = analysis_template(&docs);
    let declared: Vec<&Value> = template["spec"]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| &a["name"])
        .collect();
    let passed: Vec<&Value> = args.iter().map(|a| &a["name"]).collect();
    assert_eq!(declared, passed);

    let metrics = template["spec"]["metrics"].as_sequence().unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["failureLimit"], 0u64);
    let container = &check_job(&docs)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "{{args.image}}");
    let argv: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        argv,
        [
            "healthcheck",
            "--url",
            "{{args.preview-url}}",
            "--expect-version",
            "SELF"
        ]
    );
    assert!(
        container.get("command").is_none(),
        "the image's entrypoint is /api"
    );
}

#[test]
fn the_check_job_runs_as_the_image_does_once_and_goes_away() {
    let docs = documents();
    let job = check_job(&docs);
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0u64);
    assert!(spec["activeDeadlineSeconds"].as_u64().is_some());
    assert!(spec["ttlSecondsAfterFinished"].as_u64().is_some());
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsUser"], 65534u64);
    assert_eq!(pod["securityContext"]["runAsGroup"], 65534u64);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(container["resources"][kind][resource].is_string());
        }
    }
    // Not selected by the Services (app.kubernetes.io/name=api).
    for labels in [
        &job["metadata"]["labels"],
        &spec["template"]["metadata"]["labels"],
    ] {
        assert_ne!(labels["app.kubernetes.io/name"], DEFAULT_ROLLOUT);
    }
}

/// The check's Job, as the controller makes it (metricproviders/job/job.go
/// newMetricJob: the template's metadata and spec), through
/// `kubernetes-validate --strict`, which knows batch/v1 Job but not the CRD around it.
#[test]
fn the_check_job_is_a_valid_batch_v1_job() {
    let Ok(validator) = which::which("kubernetes-validate") else {
        let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(
            !in_ci,
            "kubernetes-validate is not installed (pip install -r .ci/lint-requirements.txt)"
        );
        eprintln!("skipped: kubernetes-validate is not installed");
        return;
    };
    let docs = documents();
    let job = check_job(&docs);
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), "check".into());
    metadata.insert("labels".into(), job["metadata"]["labels"].clone());
    let mut object = Mapping::new();
    object.insert("apiVersion".into(), "batch/v1".into());
    object.insert("kind".into(), "Job".into());
    object.insert("metadata".into(), Value::Mapping(metadata));
    object.insert("spec".into(), job["spec"].clone());
    let dir = std::env::temp_dir().join(format!("xtask-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("job.yaml");
    std::fs::write(
        &file,
        serde_yaml_ng::to_string(&Value::Mapping(object)).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(validator)
        .args(["--strict", "--no-warn"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("passed for resource job/check"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
