//! The version is compiled in with `option_env!("API_VERSION")`: the real cargo
//! must rebuild `api` when API_VERSION changes, and must not when it does not.
//! Judged by cargo's own `-v` words ("Fresh", "Dirty ... API_VERSION changed",
//! "Compiling"), never by timings.

use std::process::Command;

/// Builds the api library in the workspace's target dir, so its dependencies
/// are already built (Fresh). A profile override for `api` alone gives this
/// build its own artifact, so it neither disturbs the library the other tests
/// link nor leaves the next `cargo test` anything to rebuild. Only the
/// library: a binary would be copied over target/debug/api, which other tests
/// are running.
fn build_api_lib(version: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--package",
            "api",
            "--lib",
            "-v",
            "--config",
            "profile.dev.package.api.debug-assertions=false",
        ])
        .env("API_VERSION", version)
        // The words are read as text: no colour codes around them, whatever
        // the caller's CARGO_TERM_COLOR (the pipeline sets `always`).
        .env("CARGO_TERM_COLOR", "never")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "cargo build failed:\n{stderr}");
    stderr
}

fn api_was_compiled(log: &str) -> bool {
    log.lines()
        .any(|l| l.trim_start().starts_with("Compiling api v"))
}

fn api_was_fresh(log: &str) -> bool {
    log.lines()
        .any(|l| l.trim_start().starts_with("Fresh api v"))
}

#[test]
fn a_changed_api_version_rebuilds_the_crate_and_an_unchanged_one_does_not() {
    // Unique per run, so the first change is a change even on a warm target dir.
    let run = std::process::id();
    let first = format!("v0.0.0-rebuild-check-{run}-a");
    let second = format!("v0.0.0-rebuild-check-{run}-b");

    build_api_lib(&first);

    let unchanged = build_api_lib(&first);
    assert!(
        api_was_fresh(&unchanged) && !api_was_compiled(&unchanged),
        "same API_VERSION: api must stay Fresh:\n{unchanged}"
    );

    let changed = build_api_lib(&second);
    assert!(
        changed.contains("the environment variable API_VERSION changed"),
        "cargo names API_VERSION as the reason:\n{changed}"
    );
    assert!(
        api_was_compiled(&changed),
        "new API_VERSION: api must be compiled:\n{changed}"
    );
    let recompiled: Vec<_> = changed
        .lines()
        .filter(|l| l.trim_start().starts_with("Compiling "))
        .collect();
    assert_eq!(
        recompiled.len(),
        1,
        "only api is compiled, its dependencies stay Fresh: {recompiled:?}"
    );

    let again = build_api_lib(&second);
    assert!(
        api_was_fresh(&again) && !api_was_compiled(&again),
        "same API_VERSION again: api must stay Fresh:\n{again}"
    );
}
