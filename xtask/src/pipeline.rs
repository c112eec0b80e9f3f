//! `.gitlab-ci.yml` held to the code: every `cargo xtask ...` line of the
//! pipeline parses with the real command line, and every job names an
//! existing stage and existing needs. A renamed flag breaks these tests, not
//! the next deploy.

use crate::Cli;

/// Every `cargo xtask ...` line of the pipeline, parsed by the real command line:
/// a renamed flag breaks this test, not the next deploy.
#[test]
fn pipeline_commands_parse() {
    let pipeline = pipeline();
    let mut seen = 0;
    for line in script_lines(&pipeline) {
        let Some(args) = line.strip_prefix("cargo xtask") else {
            continue;
        };
        assert!(
            !args.contains(['$', '"', '\'', '|', ';', '&', '`']),
            "keep `cargo xtask` lines free of shell syntax, so this test sees what runs: {line}"
        );
        let argv = std::iter::once("cargo-xtask").chain(args.split_whitespace());
        if let Err(err) = Cli::try_parse_from(argv) {
            panic!("`{line}` in .gitlab-ci.yml does not parse:\n{err}");
        }
        seen += 1;
    }
    assert!(
        seen >= 6,
        "only {seen} cargo xtask lines found in .gitlab-ci.yml"
    );
}

#[test]
fn pipeline_jobs_name_existing_stages_and_needs() {
    let pipeline = pipeline();
    let stages: Vec<&str> = pipeline["stages"]
        .as_sequence()
        .expect("stages")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(stages, ["test", "build", "deploy"]);
    let jobs = jobs(&pipeline);
    for (name, job) in &jobs {
        let stage = job_key(&pipeline, job, "stage")
            .and_then(|s| s.as_str())
            .unwrap_or("test");
        assert!(
            stages.contains(&stage),
            "job {name}: stage {stage} is not in stages"
        );
        for need in job["needs"].as_sequence().into_iter().flatten() {
            let need = need.as_str().or_else(|| need["job"].as_str()).unwrap();
            assert!(
                jobs.iter().any(|(n, _)| n == need),
                "job {name} needs {need}, which is no job"
            );
        }
    }
}

fn pipeline() -> serde_yaml_ng::Value {
    let path = crate::context::workspace_root().join(".gitlab-ci.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// Jobs: top-level keys that are not keywords and not hidden templates.
fn jobs(pipeline: &serde_yaml_ng::Value) -> Vec<(String, &serde_yaml_ng::Value)> {
    const KEYWORDS: &[&str] = &[
        "stages",
        "variables",
        "default",
        "workflow",
        "include",
        "image",
        "services",
        "cache",
        "before_script",
        "after_script",
    ];
    pipeline
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v))
        .filter(|(k, _)| !k.starts_with('.') && !KEYWORDS.contains(&k.as_str()))
        .collect()
}

/// A job's key, following `extends` into templates.
fn job_key<'a>(
    pipeline: &'a serde_yaml_ng::Value,
    job: &'a serde_yaml_ng::Value,
    key: &str,
) -> Option<&'a serde_yaml_ng::Value> {
    if let Some(value) = job.get(key) {
        return Some(value);
    }
    let extends = match &job["extends"] {
        serde_yaml_ng::Value::String(one) => vec![one.as_str()],
        serde_yaml_ng::Value::Sequence(many) => many.iter().filter_map(|t| t.as_str()).collect(),
        _ => vec![],
    };
    extends
        .into_iter()
        .rev()
        .find_map(|t| job_key(pipeline, &pipeline[t], key))
}

/// Every script line of every job and template, folded lines joined and
/// nested lists (YAML anchors of other scripts) flattened, as GitLab does.
fn script_lines(pipeline: &serde_yaml_ng::Value) -> Vec<String> {
    fn flatten(value: &serde_yaml_ng::Value, lines: &mut Vec<String>) {
        match value {
            serde_yaml_ng::Value::Sequence(items) => items.iter().for_each(|v| flatten(v, lines)),
            serde_yaml_ng::Value::String(line) => {
                lines.push(line.split_whitespace().collect::<Vec<_>>().join(" "))
            }
            other => panic!("a script line that is not a string: {other:?}"),
        }
    }
    let mut lines = Vec::new();
    for (_, job) in pipeline.as_mapping().unwrap() {
        for key in ["before_script", "script", "after_script"] {
            if let Some(script) = job.get(key) {
                flatten(script, &mut lines);
            }
        }
    }
    lines
}

/// The deploy jobs get `API_IMAGE_DIGEST` from the package job's dotenv
/// report only if they need that job; and the preview's `on_stop` names the
/// job that stops it.
#[test]
fn deploy_jobs_get_the_digest_and_the_preview_can_be_stopped() {
    let pipeline = pipeline();
    for name in ["deploy", "promote", "abort"] {
        let needs: Vec<&str> = pipeline[name]["needs"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} has no needs"))
            .iter()
            .filter_map(|n| n.as_str().or_else(|| n["job"].as_str()))
            .collect();
        assert!(
            needs.contains(&"package"),
            "{name} does not need package, so it would not get API_IMAGE_DIGEST"
        );
    }
    let report = &pipeline["package"]["artifacts"]["reports"]["dotenv"];
    assert_eq!(report.as_str(), Some("package.env"));
    let stop = pipeline["deploy"]["environment"]["on_stop"]
        .as_str()
        .expect("deploy's environment has an on_stop job");
    let stop_env = &pipeline[stop]["environment"];
    assert_eq!(stop_env["action"].as_str(), Some("stop"));
    assert_eq!(stop_env["name"], pipeline["deploy"]["environment"]["name"]);
}

/// The job image (`rust:VERSION-bookworm`) has rustup's minimal profile: the
/// test job must install rustfmt and clippy before `cargo xtask test` runs them.
#[test]
fn the_test_job_installs_rustfmt_and_clippy_before_the_tests() {
    let pipeline = pipeline();
    let job = &pipeline["test"];
    let mut lines = Vec::new();
    for key in ["before_script", "script"] {
        let mut one = serde_yaml_ng::Mapping::new();
        if let Some(script) = job_key(&pipeline, job, key) {
            one.insert(key.into(), script.clone());
        }
        let mut wrapper = serde_yaml_ng::Mapping::new();
        wrapper.insert("job".into(), serde_yaml_ng::Value::Mapping(one));
        lines.extend(script_lines(&serde_yaml_ng::Value::Mapping(wrapper)));
    }
    let install = lines
        .iter()
        .position(|l| l == crate::tools::COMPONENTS_INSTALL)
        .unwrap_or_else(|| {
            panic!(
                "the test job never runs `{}`: {lines:#?}",
                crate::tools::COMPONENTS_INSTALL
            )
        });
    let test = lines
        .iter()
        .position(|l| l == "cargo xtask test")
        .expect("the test job runs `cargo xtask test`");
    assert!(
        install < test,
        "the components are installed after the tests: {lines:#?}"
    );
}
