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

/// The last line of an apply's output: its counts (each change is named on a line before).
fn summary(output: &str) -> String {
    format!("{}\n", output.lines().last().unwrap_or(""))
}

/// Applies `file` twice: the second apply must change nothing and write no row. Returns the
/// first apply's summary line.
fn apply_twice(stack: &PamStack, file: &Path) -> String {
    let first = summary(&stack.ctl(&["apply", "-f", file.to_str().unwrap()]));
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
    origin.ctl(&["apply", "-f", plain.to_str().unwrap(), "--delete-all"]);
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

/// Every row of the schedules' history, to show that a command wrote nothing.
fn history(stack: &PamStack) -> Vec<Vec<String>> {
    stack.query(
        "SELECT rowid, Id, Event, GroupName, Time, Lockout FROM LogoutSchedules ORDER BY rowid",
    )
}

#[test]
fn dry_run_names_each_change_in_the_words_of_the_real_run_and_writes_nothing() {
    let stack = PamStack::standard("");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, FILE_WITHOUT_IDS).unwrap();
    let created = stack.ctl(&["apply", "-f", plain.to_str().unwrap()]);
    let ids = current_ids(&stack);
    // The first apply named each schedule it created, with its Id, group and time.
    let lines: Vec<&str> = created.lines().collect();
    assert_eq!(lines.len(), 4, "{created}");
    for id in &ids {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("created {id} group "))),
            "{id}: {created}"
        );
    }
    assert!(
        created.contains("created ")
            && created
                .contains("group \"students\" (Weekly Mon,Tue,Wed,Thu,Fri 18:00 Europe/Berlin)"),
        "{created}"
    );

    // Move the students' time, drop one of the two staff entries, add an ops schedule.
    let students = stack
        .query("SELECT Id FROM LogoutSchedulesCurrent WHERE GroupName = 'students'")[0][0]
        .clone();
    let edited = dir.path().join("edited.toml");
    std::fs::write(
        &edited,
        format!(
            "[[schedule]]\nid = \"{students}\"\ngroup = \"students\"\nweekly = \"Mon-Fri\"\nat = \"17:00\"\ntz = \"Europe/Berlin\"\n\n\
             [[schedule]]\ngroup = \"staff\"\ndaily = true\nat = \"22:00\"\ntz = \"UTC\"\naction = \"warn\"\n\n\
             [[schedule]]\ngroup = \"ops\"\ndaily = true\nat = \"07:00\"\ntz = \"UTC\"\n"
        ),
    )
    .unwrap();
    let before = history(&stack);
    let dry = stack.ctl(&["apply", "-f", edited.to_str().unwrap(), "--dry-run"]);
    assert_eq!(history(&stack), before, "the dry run wrote: {dry}");
    let dry_lines: Vec<&str> = dry.lines().collect();
    assert_eq!(dry_lines.len(), 4, "{dry}");
    assert!(
        dry_lines[0].starts_with("created ")
            && dry_lines[0].ends_with(" group \"ops\" (Daily 07:00 UTC)"),
        "{dry}"
    );
    assert_eq!(dry_lines[1], format!("updated {students} group \"students\" (Weekly Mon,Tue,Wed,Thu,Fri 17:00 Europe/Berlin)"));
    assert!(
        dry_lines[2].starts_with("deleted ")
            && dry_lines[2].ends_with(" group \"staff\" (Daily 22:00 UTC)"),
        "{dry}"
    );
    let deleted_id = dry_lines[2].split(' ').nth(1).unwrap();
    assert!(ids.iter().any(|id| id == deleted_id), "{dry}");
    assert_eq!(
        dry_lines[3],
        "dry run: 1 created, 1 updated, 1 deleted, 1 unchanged"
    );

    // The real run prints the same lines, then its counts, and did what they said.
    let real = stack.ctl(&["apply", "-f", edited.to_str().unwrap()]);
    let real_lines: Vec<&str> = real.lines().collect();
    assert_eq!(real_lines[..3], dry_lines[..3], "{real}");
    assert_eq!(
        real_lines[3],
        "1 created, 1 updated, 1 deleted, 1 unchanged"
    );
    assert_eq!(
        stack.query(&format!(
            "SELECT Event FROM LogoutSchedulesCurrent WHERE Id = '{deleted_id}'"
        )),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        stack.query(&format!("SELECT Event FROM LogoutSchedules WHERE Id = '{deleted_id}' ORDER BY rowid DESC LIMIT 1")),
        vec![vec!["deleted"]]
    );
    // --json names each change too.
    let json: serde_json::Value = serde_json::from_str(&stack.ctl(&[
        "--json",
        "apply",
        "-f",
        edited.to_str().unwrap(),
        "--dry-run",
    ]))
    .unwrap();
    assert_eq!(json["unchanged"], 3, "{json}");
    assert_eq!(json["changes"].as_array().unwrap().len(), 0, "{json}");
}

#[test]
fn an_empty_file_or_one_that_deletes_every_schedule_is_refused_without_delete_all() {
    let stack = PamStack::standard("");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, FILE_WITHOUT_IDS).unwrap();
    stack.ctl(&["apply", "-f", plain.to_str().unwrap()]);
    // An immediate logout is no schedule of the file: it neither counts nor is deleted.
    stack.ctl(&["logout", "nobody", "--warn", "--in", "0s"]);
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "# truncated by a failed copy\n").unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        "[[schedule]]\ngroup = \"ops\"\ndaily = true\nat = \"07:00\"\ntz = \"UTC\"\n",
    )
    .unwrap();
    let before = history(&stack);
    for (file, says) in [
        (
            &empty,
            "has no schedule: applying it would delete 3 current schedules",
        ),
        (&other, "would delete every current schedule (3)"),
    ] {
        let out = stack.ctl_output(&["apply", "-f", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("--delete-all"), "{stderr}");
        assert!(out.stdout.is_empty());
        assert_eq!(history(&stack), before);
        // A dry run shows what the file would do, and says the real run is refused.
        let out = stack.ctl_output(&["apply", "-f", file.to_str().unwrap(), "--dry-run"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("deleted ")).count(),
            3,
            "{stdout}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("the real run is refused"));
        assert_eq!(history(&stack), before);
    }
    // With the flag, the empty file deletes every schedule, naming each.
    let out = stack.ctl(&["apply", "-f", empty.to_str().unwrap(), "--delete-all"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("deleted ")).count(),
        3,
        "{out}"
    );
    assert!(
        out.ends_with("0 created, 0 updated, 3 deleted, 0 unchanged\n"),
        "{out}"
    );
    assert_eq!(
        stack.query("SELECT count(*), sum(Immediate) FROM LogoutSchedulesCurrent"),
        vec![vec!["1", "1"]]
    );
    // An empty file over an empty set deletes nothing, and is still refused: it is a mistake.
    let out = stack.ctl_output(&["apply", "-f", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
