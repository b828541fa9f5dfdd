//! `apply` converges: applying the same file twice writes nothing the second time, whatever
//! the store held before (schedules deleted or changed by hand), and a file gives the same
//! Ids on every store it is applied to.

use std::path::Path;

use forcelogout_tests::PamStack;

const FILE_WITHOUT_IDS: &str = r#"
[[schedule]]
group = "students"
weekly = "Mon-Fri"
at = "18:00"
tz = "Europe/Berlin"
message = "The lab closes"
lockout = "15m"

[[schedule]]
group = "staff"
daily = true
at = "22:00"
tz = "UTC"
action = "warn"

# The same entry twice is two schedules.
[[schedule]]
group = "staff"
daily = true
at = "22:00"
tz = "UTC"
action = "warn"
"#;

fn rows(stack: &PamStack) -> usize {
    stack.query("SELECT count(*) FROM LogoutSchedules")[0][0]
        .parse()
        .unwrap()
}

fn current_ids(stack: &PamStack) -> Vec<String> {
    stack
        .query("SELECT Id FROM LogoutSchedulesCurrent ORDER BY Id")
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

/// Applies `file` twice: the second apply must change nothing and write no row.
fn apply_twice(stack: &PamStack, file: &Path) -> String {
    let first = stack.ctl(&["apply", "-f", file.to_str().unwrap()]);
    let before = rows(stack);
    let second = stack.ctl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        second.starts_with("0 created, 0 updated, 0 deleted, "),
        "{second}"
    );
    assert_eq!(rows(stack), before, "the second apply wrote rows");
    first
}

#[test]
fn applying_after_every_schedule_was_deleted_converges_at_once() {
    let stack = PamStack::standard("");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, FILE_WITHOUT_IDS).unwrap();
    assert_eq!(
        apply_twice(&stack, &plain),
        "3 created, 0 updated, 0 deleted, 0 unchanged\n"
    );
    let ids = current_ids(&stack);
    assert_eq!(ids.len(), 3);
    let exported = dir.path().join("exported.toml");
    std::fs::write(&exported, stack.ctl(&["export"])).unwrap();
    // An unrelated immediate logout is left alone by every apply.
    stack.ctl(&["logout", "nobody", "--warn", "--in", "0s"]);

    for file in [&plain, &exported] {
        // Delete every schedule by hand, then apply the file twice, three rounds.
        for _ in 0..3 {
            for id in current_ids(&stack) {
                let immediate = stack.query(&format!(
                    "SELECT Immediate FROM LogoutSchedulesCurrent WHERE Id = '{id}'"
                ));
                if immediate[0][0] == "0" {
                    stack.ctl(&["schedule", "delete", &id]);
                }
            }
            assert_eq!(
                apply_twice(&stack, file),
                "3 created, 0 updated, 0 deleted, 0 unchanged\n"
            );
            // The same Ids come back: the history of each schedule is one line of versions.
            let now: Vec<String> = stack
                .query("SELECT Id FROM LogoutSchedulesCurrent WHERE Immediate = 0 ORDER BY Id")
                .into_iter()
                .map(|r| r[0].clone())
                .collect();
            assert_eq!(now, ids);
        }
    }
    assert_eq!(
        stack.query("SELECT count(DISTINCT Id) FROM LogoutSchedules WHERE Immediate = 0"),
        vec![vec!["3"]]
    );
    assert_eq!(
        stack.query("SELECT count(*) FROM LogoutSchedulesCurrent WHERE Immediate = 1"),
        vec![vec!["1"]]
    );
}

#[test]
fn applying_after_an_update_by_hand_restores_the_file_and_then_writes_nothing() {
    let stack = PamStack::standard("");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("plain.toml", FILE_WITHOUT_IDS.to_string()),
        ("exported.toml", String::new()),
    ] {
        let file = dir.path().join(name);
        let text = if text.is_empty() {
            stack.ctl(&["export"])
        } else {
            text
        };
        std::fs::write(&file, text).unwrap();
        apply_twice(&stack, &file);
        let students = stack
            .query("SELECT Id FROM LogoutSchedulesCurrent WHERE GroupName = 'students'")[0][0]
            .clone();
        stack.ctl(&[
            "schedule",
            "update",
            &students,
            "--at",
            "17:00",
            "--lockout",
            "0",
        ]);
        assert_eq!(
            apply_twice(&stack, &file),
            "0 created, 1 updated, 0 deleted, 2 unchanged\n"
        );
        assert_eq!(
            stack.query(&format!(
                "SELECT Time, Lockout, Event FROM LogoutSchedulesCurrent WHERE Id = '{students}'"
            )),
            vec![vec!["18:00", "15", "updated"]]
        );
    }
}

#[test]
fn the_same_file_gives_the_same_ids_on_every_store() {
    let dir = tempfile::tempdir().unwrap();
    // A file exported from one store, with its Ids ...
    let origin = PamStack::standard("");
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, FILE_WITHOUT_IDS).unwrap();
    origin.ctl(&[
        "schedule", "add", "--group", "ops", "--daily", "--at", "07:00", "--tz", "UTC",
    ]);
    origin.ctl(&["apply", "-f", plain.to_str().unwrap()]);
    let exported = dir.path().join("exported.json");
    std::fs::write(&exported, origin.ctl(&["--json", "export"])).unwrap();

    // ... applied to two empty stores gives them the same Ids (the origin's); and a file
    // without Ids gives two empty stores the same Ids as each other.
    for file in [&exported, &plain] {
        let (a, b) = (PamStack::standard(""), PamStack::standard(""));
        apply_twice(&a, file);
        apply_twice(&b, file);
        assert_eq!(current_ids(&a), current_ids(&b));
        if file == &exported {
            assert_eq!(current_ids(&a), current_ids(&origin));
        }
    }
}

#[test]
fn ids_in_files_are_whole_unique_and_not_immediate_logouts() {
    let stack = PamStack::standard("");
    let dir = tempfile::tempdir().unwrap();
    stack.ctl(&["logout", "nobody", "--warn", "--in", "0s"]);
    let immediate = stack.query("SELECT Id FROM LogoutSchedulesCurrent")[0][0].clone();
    let entry = |id: &str| {
        format!("[[schedule]]\nid = \"{id}\"\ngroup = \"a\"\ndaily = true\nat = \"10:00\"\n")
    };
    let whole = "6f6c7f3e-2a51-4c2b-9d0e-41a7c3d85b90";
    for (text, named) in [
        (entry("6f6c7f3e"), "schedule[1].id: "),
        (
            entry("not-an-id-at-all-not-an-id-at-all-xx"),
            "schedule[1].id: ",
        ),
        (
            format!("{}{}", entry(whole), entry(whole)),
            "schedule[2].id: ",
        ),
        (entry(&immediate), "id: "),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let before = rows(&stack);
        let out = stack.ctl_output(&["apply", "-f", bad.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{named}: {stderr}");
        assert_eq!(rows(&stack), before);
    }
}
