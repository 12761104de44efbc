//! Pages that remember, against the real daemon: retained values reach
//! pages that register later, before anything newer; they and the index
//! counter survive a SIGKILL and a restart on the same state directory; a
//! page that comes back with its resume token gets its old index; a
//! corrupt state file is set aside and the daemon serves; a page that
//! joins a running action gets the output so far; `ws` shows what a page
//! reports of its visibility.
//!
//! Every wait is on a condition with a deadline, never a fixed sleep.

use std::path::Path;

use serde_json::Value;

use crate::page::{listing, Page};
use crate::support::{eventually, until, Daemon, TIMEOUT};

/// A daemon on the state directory `state` (kept by the test, so that a
/// second daemon can start on it).
fn start_on(state: &Path) -> Daemon {
    Daemon::builder().arg("--state-dir").arg(state).start()
}

/// Registers `name` and returns every frame up to and including the
/// register's reply: what the page was replayed comes before it.
pub(crate) async fn register(page: &mut Page, name: &str) -> Vec<Value> {
    page.send(&format!("ws register {name}")).await;
    page.until(|f| f["type"] == "reply").await
}

/// The `write` and `exec` frames among `frames`, as `write:TEXT` and
/// `exec:FUNC:ARG`.
pub(crate) fn shown(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f["type"].as_str()? {
            "write" => Some(format!("write:{}", f["text"].as_str()?)),
            "exec" => Some(format!(
                "exec:{}:{}",
                f["func"].as_str()?,
                f["arg"].as_str()?
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_page_that_registers_later_gets_the_retained_text_before_newer_writes() {
    let d = Daemon::start::<&str>(&[]);
    // Nobody has the name yet: printed on the console, and kept.
    let out = d.cli(&["ws", "write", "--retain", "status", "VPN up"]);
    out.assert_exit_code(0)
        .assert_stdout_contains("printed on the console")
        .assert_stdout_contains("retained for pages that register 'status'");

    let mut page = Page::open(&d).await;
    let frames = register(&mut page, "status").await;
    assert_eq!(shown(&frames), ["write:VPN up"], "{frames:?}");
    let replayed = frames.iter().find(|f| f["type"] == "write").expect("write");
    assert_eq!(replayed["name"], "status", "the same frame a write sends");

    // A write without --retain reaches the page and is not kept.
    d.cli(&["ws", "write", "status", "passing"])
        .assert_stdout_contains("sent to 1 connection");
    assert_eq!(page.recv().await["text"], "passing");

    // A reload (a new connection registering again) gets the retained text.
    let mut reload = Page::open(&d).await;
    let frames = register(&mut reload, "status").await;
    assert_eq!(shown(&frames), ["write:VPN up"], "{frames:?}");
    // Registering the same name again replays nothing.
    let frames = register(&mut reload, "status").await;
    assert_eq!(shown(&frames), Vec::<String>::new(), "{frames:?}");

    // A retained write replaces the text for pages to come.
    d.cli(&["ws", "write", "--retain", "status", "VPN down"])
        .assert_stdout_contains("sent to 2 connections");
    assert_eq!(page.recv().await["text"], "VPN down");
    let mut third = Page::open(&d).await;
    let frames = register(&mut third, "status").await;
    assert_eq!(shown(&frames), ["write:VPN down"], "{frames:?}");
}

#[tokio::test]
async fn retained_writes_racing_registrations_never_leave_a_page_behind() {
    // Pages register while retained writes go on: whatever a page is
    // replayed, everything after it is newer, and it ends on the last one.
    let d = Daemon::start::<&str>(&[]);
    let control = d.control.clone();
    let writer = tokio::task::spawn_blocking(move || {
        for n in 1..=30 {
            let mut cmd =
                crate::support::command([std::ffi::OsStr::new("--control"), control.as_os_str()]);
            cmd.args(["ws", "write", "--retain", "race", &n.to_string()]);
            let status = cmd.output().expect("the CLI").status;
            assert!(status.success());
        }
    });
    let mut pages = Vec::new();
    for _ in 0..10 {
        let mut p = Page::open(&d).await;
        p.send("ws register race").await;
        pages.push(p);
    }
    writer.await.expect("the writes");
    for p in &mut pages {
        let frames = p.until(|f| f["type"] == "write" && f["text"] == "30").await;
        let numbers: Vec<u64> = frames
            .iter()
            .filter(|f| f["type"] == "write")
            .map(|f| f["text"].as_str().and_then(|t| t.parse().ok()).expect("n"))
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] <= w[1]),
            "older after newer: {numbers:?}"
        );
    }
}

#[tokio::test]
async fn retained_calls_listing_forgetting_and_expiry() {
    let d = Daemon::start::<&str>(&[]);
    for args in [
        &["ws", "exec", "--retain", "gauge", "setLevel", "1"][..],
        &["ws", "exec", "--retain", "gauge", "setColor", "red"],
        &["ws", "exec", "--retain", "gauge", "setLevel", "42"],
        &[
            "ws",
            "write",
            "--retain",
            "--ttl",
            "2h",
            "gauge",
            "\u{1b}[2J warm",
        ],
    ] {
        d.cli(args).assert_exit_code(0);
    }
    let out = d.cli(&["ws", "retained"]);
    out.assert_exit_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("gauge exec setLevel ")
            && l.contains("expires=never")
            && l.ends_with("\"42\"")),
        "{lines:?}"
    );
    let write = lines
        .iter()
        .find(|l| l.starts_with("gauge write "))
        .expect("the text");
    assert!(
        write.contains("expires=in 1h59m") || write.contains("expires=in 2h"),
        "{write}"
    );
    assert!(write.contains("\\u{1b}[2J warm"), "escaped: {write}");

    let mut page = Page::open(&d).await;
    let frames = register(&mut page, "gauge").await;
    assert_eq!(
        shown(&frames),
        [
            "exec:setColor:red",
            "exec:setLevel:42",
            "write:\u{1b}[2J warm"
        ],
        "one call per function and the text, in the order they were set"
    );

    d.cli(&["ws", "forget", "gauge"])
        .assert_exit_code(0)
        .assert_stdout_contains("forgot 3 retained values of 'gauge'");
    d.cli(&["ws", "forget", "gauge"])
        .assert_stdout_contains("nothing retained for 'gauge'");
    d.cli(&["ws", "retained"])
        .assert_stdout_contains("nothing retained");
    let mut after = Page::open(&d).await;
    let frames = register(&mut after, "gauge").await;
    assert_eq!(shown(&frames), Vec::<String>::new());

    // A short ttl lapses: gone from the listing and from registrations.
    d.cli(&[
        "ws",
        "write",
        "--retain",
        "--ttl",
        "1s",
        "brief",
        "soon gone",
    ])
    .assert_exit_code(0)
    .assert_stdout_contains("retained for pages that register 'brief' for 1s");
    eventually("the value expires", TIMEOUT, || {
        d.cli(&["ws", "retained"])
            .stdout
            .contains("nothing retained")
    })
    .await;
    let mut late = Page::open(&d).await;
    let frames = register(&mut late, "brief").await;
    assert_eq!(shown(&frames), Vec::<String>::new());

    // Wrong uses are one-line errors.
    for (args, want) in [
        (
            &["ws", "write", "--ttl", "5s", "x", "t"][..],
            "--ttl needs --retain",
        ),
        (
            &["ws", "write", "--retain", "7", "t"],
            "--retain needs a NAME",
        ),
        (
            &["ws", "write", "--retain", "--ttl", "5 s", "x", "t"],
            "invalid duration '5 s'",
        ),
        (
            &["ws", "exec", "--retain", "*", "f"],
            "--retain needs a NAME",
        ),
    ] {
        let out = d.cli(args);
        assert_ne!(out.code, Some(0), "{args:?}");
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    }
}

#[tokio::test]
async fn retained_values_and_indexes_survive_sigkill() {
    let state = tempfile::tempdir().expect("tempdir");
    let d = start_on(state.path());
    d.cli(&["ws", "write", "--retain", "status", "kept"])
        .assert_exit_code(0);
    d.cli(&["ws", "exec", "--retain", "status", "setLevel", "7"])
        .assert_exit_code(0);
    let mut used = Vec::new();
    for _ in 0..3 {
        let p = Page::open(&d).await;
        used.push(p.index);
    }
    // Killed right after the commands answered: they were durable.
    d.kill();

    let d = start_on(state.path());
    let out = d.cli(&["ws", "retained"]);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    let mut page = Page::open(&d).await;
    assert!(
        used.iter().all(|&u| page.index > u),
        "index {} used before: {used:?}",
        page.index
    );
    let frames = register(&mut page, "status").await;
    assert_eq!(shown(&frames), ["write:kept", "exec:setLevel:7"]);
}

#[tokio::test]
async fn a_dropped_page_comes_back_to_its_index_and_names() {
    let state = tempfile::tempdir().expect("tempdir");
    let d = start_on(state.path());
    let mut page = Page::open(&d).await;
    register(&mut page, "screen").await;
    let (index, token) = (page.index, page.resume_token());
    assert!(token.starts_with(&format!("{index}.")), "{token}");

    // Two tabs with the same token: the live page keeps its index, the
    // other gets a fresh one.
    let copy = Page::open_resuming(&d, &token).await;
    assert_ne!(copy.index, index);
    assert!(copy.hello.get("resumed").is_none(), "{}", copy.hello);
    drop(copy);

    // The network drops (no close frame): the page comes back within the
    // grace period with its index and names.
    drop(page);
    eventually("the page is gone", TIMEOUT, || {
        !listing(&d)
            .iter()
            .any(|l| l.starts_with(&format!("{index} ")))
    })
    .await;
    let mut back = Page::open_resuming(&d, &token).await;
    assert_eq!(back.index, index);
    assert_eq!(back.hello["resumed"], true);
    d.cli(&["ws", "write", "screen", "by name"])
        .assert_stdout_contains("sent to 1 connection");
    assert_eq!(back.recv().await["text"], "by name");

    // A forged token is no token: a fresh index.
    let forged = format!("{index}.AAAAAAAAAAAAAAAAAAAAAA");
    let other = Page::open_resuming(&d, &forged).await;
    assert_ne!(other.index, index);

    // The daemon is killed and started again: the page comes back to its
    // index, and a script that knew the index reaches it.
    drop(back);
    d.kill();
    let d = start_on(state.path());
    let mut back = Page::open_resuming(&d, &token).await;
    assert_eq!(back.index, index);
    d.cli(&["ws", "write", &index.to_string(), "after the restart"])
        .assert_exit_code(0)
        .assert_stdout_contains("sent to 1 connection");
    assert_eq!(back.recv().await["text"], "after the restart");
    // The index is taken: the same token again gets a fresh one.
    let again = Page::open_resuming(&d, &token).await;
    assert_ne!(again.index, index);
}

#[tokio::test]
async fn a_corrupt_state_file_is_set_aside_and_the_daemon_serves() {
    let state = tempfile::tempdir().expect("tempdir");
    let d = start_on(state.path());
    d.cli(&["ws", "write", "--retain", "status", "x"])
        .assert_exit_code(0);
    let first = Page::open(&d).await.index;
    d.kill();
    std::fs::write(
        state.path().join("state.redb"),
        b"torn \0 garbage".repeat(100),
    )
    .expect("spoil the database");

    let d = start_on(state.path());
    let report = d.wait_for_stdout(|l| l.contains("state:") && l.contains("is unreadable"));
    assert!(report.contains("moved aside to "), "{report}");
    let aside = report
        .split("moved aside to ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .expect("the path");
    assert!(Path::new(aside).exists(), "{aside}");
    until("the report on stderr", TIMEOUT, || {
        let err = d.process().snapshot().stderr;
        std::future::ready(err.contains("is unreadable").then_some(()))
    })
    .await;
    // It serves, and indexes still do not repeat (the index file's copy).
    let mut page = Page::open(&d).await;
    assert!(page.index > first, "{} after {first}", page.index);
    // What the bad file held is lost, and the fresh store keeps again.
    let frames = register(&mut page, "status").await;
    assert!(frames.iter().all(|f| f["type"] != "write"), "{frames:?}");
    d.cli(&["ws", "write", "--retain", "status", "fresh"])
        .assert_exit_code(0);
    let mut later = Page::open(&d).await;
    assert_eq!(
        shown(&register(&mut later, "status").await),
        ["write:fresh"]
    );
}

#[tokio::test]
async fn a_page_joining_a_running_action_gets_the_output_so_far() {
    let d = Daemon::builder()
        .config(
            r#"
[actions.count]
program = "sh"
args = ["-c", "for i in 1 2 3; do echo line$i; done; while [ ! -e @DIR@/go ]; do sleep 0.05; done; echo last"]
"#,
        )
        .terminate_on_drop()
        .start();
    let (ok, out) = d.command("run --to board count").await;
    assert!(ok, "{out}");
    d.wait_for_stdout(|l| l.contains("stdout: line3"));

    let mut late = Page::open(&d).await;
    let frames = register(&mut late, "board").await;
    let lines: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "line")
        .filter_map(|f| f["text"].as_str())
        .collect();
    assert_eq!(lines, ["line1", "line2", "line3"], "{frames:?}");

    std::fs::write(d.path("go"), b"").expect("let it finish");
    let rest = late.until(|f| f["type"] == "done").await;
    let texts: Vec<&str> = rest.iter().filter_map(|f| f["text"].as_str()).collect();
    assert_eq!(texts, ["last"], "{rest:?}");

    // Once it has ended, a new page gets nothing of it.
    let mut after = Page::open(&d).await;
    let frames = register(&mut after, "board").await;
    assert!(frames.iter().all(|f| f["type"] == "reply"), "{frames:?}");
}

#[tokio::test]
async fn ws_shows_what_a_page_reports_of_its_visibility() {
    let d = Daemon::start::<&str>(&[]);
    let mut page = Page::open(&d).await;
    let line = &listing(&d)[0];
    assert!(line.contains(" visibility=- "), "{line}");
    assert!(line.contains(" idle="), "{line}");

    page.send("ws visibility hidden").await;
    assert_eq!(page.recv().await["type"], "reply");
    let line = &listing(&d)[0];
    assert!(line.contains(" visibility=hidden "), "{line}");
    page.send("ws visibility frozen").await;
    page.recv().await;
    assert!(listing(&d)[0].contains(" visibility=frozen "));
    page.send("ws visibility gone").await;
    assert_eq!(page.recv().await["type"], "error");

    // Only a page reports its own.
    let (ok, out) = d.command("ws visibility visible").await;
    assert!(!ok, "{out}");
    assert!(out.contains("only a page reports its visibility"), "{out}");
}

#[tokio::test]
async fn a_grace_period_of_zero_lets_no_page_come_back() {
    let d = Daemon::builder()
        .config("[state]\nresume_grace_secs = 0\n")
        .start();
    let page = Page::open(&d).await;
    let (index, token) = (page.index, page.resume_token());
    drop(page);
    eventually("the page is gone", TIMEOUT, || listing(&d).is_empty()).await;
    let again = Page::open_resuming(&d, &token).await;
    assert_ne!(again.index, index);

    let bad = Daemon::builder()
        .config("[state]\nresume_grace_secs = 999999999\n")
        .spawn()
        .wait_exit();
    assert_ne!(bad.code, Some(0));
    assert!(
        bad.stderr
            .contains("resume_grace_secs must be at most 604800"),
        "{bad:?}"
    );
}

#[tokio::test]
async fn a_page_that_comes_back_gets_the_output_of_the_run_it_started() {
    let d = Daemon::builder()
        .config(
            r#"
[pages]
allow = ["ws register", "run"]

[actions.count]
program = "sh"
args = ["-c", "echo one; echo two; while [ ! -e @DIR@/go ]; do sleep 0.05; done; echo three"]
"#,
        )
        .terminate_on_drop()
        .start();
    let mut page = Page::open(&d).await;
    let (index, token) = (page.index, page.resume_token());
    page.send("run count").await;
    page.until(|f| f["type"] == "line" && f["text"] == "two")
        .await;
    // The network drops while the run goes on: it is kept for the page.
    drop(page);
    eventually("the page is gone", TIMEOUT, || listing(&d).is_empty()).await;

    let mut back = Page::open_resuming(&d, &token).await;
    assert_eq!(back.index, index);
    std::fs::write(d.path("go"), b"").expect("let it finish");
    let frames = back.until(|f| f["type"] == "done").await;
    let lines: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "line")
        .filter_map(|f| f["text"].as_str())
        .collect();
    assert_eq!(lines, ["one", "two", "three"], "{frames:?}");
    assert_eq!(frames.last().expect("done")["status"], 0);
}

#[test]
fn without_a_state_dir_the_service_uses_systemds_state_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("from-systemd");
    std::fs::create_dir(&state).expect("mkdir");
    let mut cmd = crate::support::command(["serve", "--listen", "127.0.0.1:0", "--control"]);
    cmd.arg(dir.path().join("ctl.sock"))
        .env_remove("PAGEWIRE_STATE_DIR")
        .env("STATE_DIRECTORY", &state);
    let daemon = crate::support::Process::spawn(cmd);
    let line = daemon.wait_for_stdout(|l| l.contains("state: "));
    assert!(
        line.contains(&format!("state: {} (0 retained)", state.display())),
        "{line}"
    );
    assert!(state.join("state.redb").exists());
}
