//! `history` end to end: five revisions rolled out by digest through the
//! plugin double (set image, promote, as a person or the pipeline would),
//! then read back by the built xtask from the ReplicaSets the kubectl double
//! serves.

use crate::rollout_support::{GET_ROLLOUT, NAMESPACE, World, image};
use crate::support;
use serde_json::Value;

/// `TAG@sha256:` and 64 times `fill`: an image reference by digest.
fn by_digest(tag: &str, fill: char) -> String {
    format!("{tag}@sha256:{}", fill.to_string().repeat(64))
}

/// v1 (revision 1) then v2, v3, v4 promoted, v5 paused on the preview; all by digest.
fn five_revisions() -> Option<(World, Vec<String>)> {
    five_revisions_with(|_| {})
}

/// [`five_revisions`], with the world set up by `setup` first.
fn five_revisions_with(setup: impl FnOnce(&World)) -> Option<(World, Vec<String>)> {
    let tags: Vec<String> = ["v1", "v2", "v3", "v4", "v5"]
        .iter()
        .zip(['1', '2', '3', '4', '5'])
        .map(|(tag, fill)| by_digest(tag, fill))
        .collect();
    let world = World::needing_kubectl(Some(&tags[0]))?;
    setup(&world);
    for (i, tag) in tags.iter().enumerate().skip(1) {
        world.behaviour(tag, Some(0.0), None);
        world.plugin_by_hand(&["set", "image", "api", &format!("api={}", image(tag))]);
        world.wait_for_phase("Paused");
        if i < 4 {
            world.plugin_by_hand(&["promote", "api"]);
            world.wait_for_phase("Healthy");
        }
    }
    Some((world, tags))
}

#[test]
fn five_revisions_newest_first_each_image_with_its_digest_and_role() {
    let Some((world, tags)) = five_revisions() else {
        return;
    };
    let run = world.run(&["history", "-n", NAMESPACE]);
    run.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0], "rollout api in namespace shop: 5 revisions kept, newest first",
        "{run}"
    );
    assert!(
        lines[1].contains("REVISION") && lines[1].contains("ROLE"),
        "{run}"
    );
    let rows = &lines[2..];
    assert_eq!(rows.len(), 5, "{run}");
    let roles = ["preview", "active, stable", "-", "-", "-"];
    for (i, row) in rows.iter().enumerate() {
        let revision = 5 - i;
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[0], revision.to_string(), "{run}");
        assert!(words[1].ends_with('Z'), "a creation time: {row}");
        assert_eq!(words[words.len() - 1], image(&tags[revision - 1]), "{run}");
        assert_eq!(
            words[2..words.len() - 1].join(" "),
            roles[i],
            "revision {revision}: {row}"
        );
    }

    let json = world.run(&["history", "-n", NAMESPACE, "--json"]);
    json.ok();
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    let revisions = json["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 5);
    let stable: Vec<&Value> = revisions.iter().filter(|r| r["stable"] == true).collect();
    assert_eq!(stable.len(), 1);
    assert_eq!(stable[0]["revision"], 4);
    assert_eq!(stable[0]["active"], true);
    assert_eq!(
        stable[0]["digest"],
        format!("sha256:{}", "4".repeat(64)).as_str()
    );
    assert_eq!(revisions[0]["preview"], true);
    assert_eq!(revisions[0]["image"], image(&tags[4]).as_str());
}

/// The revisions `history --json` lists: (revision, image).
fn listed(world: &World) -> Vec<(u64, String)> {
    let run = world.run(&["history", "-n", NAMESPACE, "--json"]);
    run.ok();
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    json["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["image"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_controller_keeps_revision_history_limit_old_replica_sets_besides_the_new_and_the_stable() {
    // Limit 1: of the old ReplicaSets 1, 2 and 3 (without pods), only the newest stays.
    let Some((world, tags)) = five_revisions_with(|w| {
        w.revision_history_limit(Some(1));
        w.scale_down_delay(0.0);
    }) else {
        return;
    };
    let kept = listed(&world);
    let want: Vec<(u64, String)> = [5, 4, 3]
        .iter()
        .map(|&n| (n, image(&tags[n as usize - 1])))
        .collect();
    assert_eq!(kept, want);
    assert_eq!(world.rollout_object()["spec"]["revisionHistoryLimit"], 1);

    // Unset: Argo's default of 10 keeps all five.
    let Some((world, _)) = five_revisions_with(|w| {
        w.revision_history_limit(None);
        w.scale_down_delay(0.0);
    }) else {
        return;
    };
    assert_eq!(listed(&world).len(), 5);
    assert!(
        world.rollout_object()["spec"]
            .get("revisionHistoryLimit")
            .is_none()
    );
}

#[test]
fn an_old_replica_set_with_pods_is_not_pruned() {
    // Limit 0, but each ReplicaSet that left the active Service keeps its pods for 60 s.
    let Some((world, _)) = five_revisions_with(|w| {
        w.revision_history_limit(Some(0));
        w.scale_down_delay(60.0);
    }) else {
        return;
    };
    let kept: Vec<u64> = listed(&world).iter().map(|(n, _)| *n).collect();
    assert_eq!(kept, [5, 4, 3, 2, 1]);
}

#[test]
fn history_reads_the_replica_sets_with_kubectl_even_under_dry_run() {
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let run = world.run(&["--dry-run", "history", "-n", NAMESPACE]);
    run.ok();
    assert!(run.stdout.contains("1 revision kept"), "{run}");
    assert!(
        world.calls().is_empty(),
        "no plugin call: {:?}",
        world.calls()
    );
    let calls = world.kubectl_calls();
    assert_eq!(
        calls[0],
        [&GET_ROLLOUT[..], &["--request-timeout=10s"]].concat()
    );
    assert_eq!(
        calls[1],
        [
            "get",
            "replicasets.apps",
            "-l",
            "app.kubernetes.io/name=api",
            "-o",
            "json",
            "-n",
            NAMESPACE,
            "--request-timeout=10s"
        ]
    );
    let plan: Vec<String> = calls
        .iter()
        .map(|c| format!("kubectl {}", c.join(" ")))
        .collect();
    support::runs::assert_runs_describe("history", &plan.join("\n"));
}
