//! Actions against the real daemon: output streams while the program runs,
//! limits kill or refuse, and pages can run configured actions only.
//!
//! Every wait is on a condition (a frame, a line of the daemon's output, a
//! process leaving /proc) with a deadline, never a fixed sleep.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::page::Page;
use crate::support::{eventually, Daemon, TIMEOUT};

/// How long any one expected event may take.
const DEADLINE: Duration = TIMEOUT;

/// Starts the daemon with `config` as its configuration file (`@DIR@` in
/// it stands for its temporary directory); it is stopped with SIGTERM at
/// the end, so that it ends its runs itself.
fn start(config: &str) -> Daemon {
    Daemon::builder().config(config).terminate_on_drop().start()
}

fn is_type(frame: &Value, kind: &str) -> bool {
    frame["type"] == kind
}

fn is_line(frame: &Value, text: &str) -> bool {
    is_type(frame, "line") && frame["text"] == text
}

/// Whether process `pid` has left (or is only a zombie waiting for a
/// parent that may never reap it).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The process group of process `pid`.
fn group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "(comm)": state, ppid, pgrp.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Pids of live processes in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After "(comm)": state, ppid, pgrp.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
}

/// Opens the fifo for writing (which waits for its reader) and writes a
/// line, off the async threads.
async fn release(fifo: PathBuf) {
    let writer = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(fifo)
            .expect("open fifo");
        f.write_all(b"go\n").expect("write fifo");
    });
    tokio::time::timeout(DEADLINE, writer)
        .await
        .expect("the action opens the fifo")
        .expect("writer thread");
}

const STEP_ACTION: &str = r#"
[actions.step]
program = "sh"
args = ["-c", "echo one; read x < \"$FIFO\"; echo two >&2; echo three"]
env = { FIFO = "@DIR@/fifo" }
"#;

#[tokio::test]
async fn lines_reach_the_page_while_the_action_still_runs() {
    let mut d = start(STEP_ACTION);
    mkfifo(&d.path("fifo"));
    let mut page = Page::open(&d).await;
    page.send("run step").await;
    // Line one arrives while the program is blocked on the fifo, which
    // only this test can release: so it was streamed, not gathered.
    let seen = page.until(|f| is_line(f, "one")).await;
    assert!(
        seen.iter().all(|f| !is_type(f, "done")),
        "ended early: {seen:?}"
    );
    let one = seen.last().expect("line one");
    assert_eq!(one["action"], "step");
    assert_eq!(one["stream"], "stdout");
    assert!(one.get("name").is_none(), "{one}");
    d.next_stdout("action step[1] stdout: one").await;

    release(d.path("fifo")).await;
    let rest = page.until(|f| is_type(f, "done")).await;
    let all: Vec<&Value> = seen.iter().chain(&rest).collect();
    let reply = all
        .iter()
        .find(|f| is_type(f, "reply"))
        .expect("a reply to run");
    assert!(
        reply["output"]
            .as_str()
            .is_some_and(|o| o.starts_with("started action 'step' (run 1, pid ")),
        "{reply}"
    );
    let two = rest.iter().find(|f| is_line(f, "two")).expect("line two");
    assert_eq!(two["stream"], "stderr");
    assert!(rest.iter().any(|f| is_line(f, "three")), "{rest:?}");
    let done = rest.last().expect("done");
    assert_eq!(done["status"], 0, "{done}");
    assert_eq!(done["message"], "exited with 0");
    assert_eq!(done["action"], "step");
    d.next_stdout("action step[1] done: exited with 0").await;
}

#[tokio::test]
async fn a_timeout_kills_the_action_and_tells_the_page() {
    let d = start(
        r#"
[actions.slow]
program = "sleep"
args = ["30"]
timeout_secs = 1
"#,
    );
    let mut page = Page::open(&d).await;
    let start = Instant::now();
    page.send("run slow").await;
    let frames = page.until(|f| is_type(f, "done")).await;
    let done = frames.last().expect("done");
    assert!(done["status"].is_null(), "{done}");
    assert_eq!(done["message"], "killed after 1s timeout");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn pages_run_configured_actions_only_and_never_a_shell() {
    let d = start(
        r#"
[actions.ok]
program = "true"

[actions.say]
program = "echo"
page_args = true
"#,
    );
    let mut page = Page::open(&d).await;
    let cases = [
        (
            "run sh -c 'touch @DIR@/pwned'",
            "run: no action named 'sh' is configured; configured: ok, say",
        ),
        (
            "run ok; touch @DIR@/pwned",
            "run: no action named 'ok;' is configured; configured: ok, say",
        ),
        (
            "run ok \"; touch @DIR@/pwned\"",
            "run: action 'ok' takes no arguments (its configuration would need \
             page_args = true); nothing was run",
        ),
        (
            "run --to * ok",
            "run: a page's action output goes to the page itself; --to TARGET needs \
             operator rights",
        ),
        (
            "ws write * hi",
            "'ws write' needs operator rights; pages may only use 'ws register' and 'run'",
        ),
        // A dry run lists every connection it would reach, as `ws who` does:
        // a page's right to `run` does not reach that listing.
        (
            "run --dry-run --to * ok",
            "'run --dry-run' lists what 'ws who' lists: it needs operator rights; pages \
             may only use 'ws register' and 'run'",
        ),
        (
            "run --dry-run --to * nothing",
            "'run --dry-run' lists what 'ws who' lists: it needs operator rights; pages \
             may only use 'ws register' and 'run'",
        ),
    ];
    let dir = d.dir().display().to_string();
    for (line, want) in cases {
        page.send(&line.replace("@DIR@", &dir)).await;
        let frame = page.recv().await;
        assert_eq!(frame["type"], "error", "{line}: {frame}");
        assert_eq!(frame["message"], want, "{line}");
    }
    // Arguments a page may pass reach the program as they are: no shell
    // expands, splits or runs them.
    let tricky = format!("$(touch {dir}/pwned); `id` > x && rm -rf /");
    page.send(&format!("run say \"{tricky}\" '*'")).await;
    let frames = page.until(|f| is_type(f, "done")).await;
    let want = format!("{tricky} '*'");
    assert!(frames.iter().any(|f| is_line(f, &want)), "{frames:?}");
    assert!(!d.path("pwned").exists());
}

#[tokio::test]
async fn the_action_dies_with_its_page() {
    let mut d = start(
        r#"
[actions.hold]
program = "sh"
args = ["-c", "echo $$; sleep 30; echo never"]
"#,
    );
    let mut page = Page::open(&d).await;
    page.send("run hold").await;
    let frames = page.until(|f| is_type(f, "line")).await;
    let pid: u32 = frames
        .last()
        .and_then(|f| f["text"].as_str())
        .and_then(|t| t.parse().ok())
        .expect("the shell's pid");
    // The shell and the sleep it started share the group the daemon made
    // (led by the run's keeper).
    let pgid = group_of(pid).expect("the shell's group");
    assert_ne!(pgid, pid, "the keeper leads the group");
    eventually("the sleep to start", DEADLINE, || {
        group_members(pgid).len() >= 3
    })
    .await;
    assert!(!is_gone(pid));

    page.leave().await;
    d.next_stdout("action hold[1] done: killed: its page went away")
        .await;
    // Gone by the time the page is told: no waiting needed.
    assert!(is_gone(pid));
    assert_eq!(group_members(pgid), Vec::<u32>::new());
}

#[tokio::test]
async fn the_cap_refuses_extra_runs_and_ws_lists_running_ones() {
    let mut d = start(
        r#"
[limits]
max_running_actions = 2

[actions.hold]
program = "sh"
args = ["-c", "echo up; sleep 30"]
"#,
    );
    let mut page = Page::open(&d).await;
    for _ in 0..2 {
        page.send("run hold").await;
        page.until(|f| is_line(f, "up")).await;
    }
    page.send("run hold").await;
    let refused = page.until(|f| is_type(f, "error")).await;
    assert_eq!(
        refused.last().expect("error")["message"],
        "run: 2 actions are running already, the most allowed \
         (limits.max_running_actions); try again when one ends"
    );

    let (ok, listing) = d.command("ws").await;
    assert!(ok, "{listing}");
    let lines: Vec<&str> = listing.lines().collect();
    let conns: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(conns.len(), 1, "{listing}");
    assert!(
        conns[0].starts_with(&format!("{} ", page.index)),
        "{listing}"
    );
    let runs: Vec<&&str> = lines.iter().filter(|l| l.starts_with("action ")).collect();
    assert_eq!(runs.len(), 2, "{listing}");
    for run in runs {
        assert!(run.starts_with("action hold run="), "{run}");
        assert!(
            run.contains(&format!(" from=page:{} to={} ", page.index, page.index)),
            "{run}"
        );
    }
    let metrics = d.metrics().await;
    assert!(
        metrics.lines().any(|l| l == "pagewire_actions_running 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "pagewire_actions_refused_total 1"),
        "{metrics}"
    );

    // A page asking again and again floods nobody: the Monitor says it
    // once, then how many more times.
    for _ in 0..30 {
        page.send("run hold").await;
        page.until(|f| is_type(f, "error")).await;
    }
    d.wait_for_stdout(|l| l.contains("action hold refused: busy … repeated"));
    let told = d
        .process()
        .stdout_lines()
        .iter()
        .filter(|l| l.contains("action hold refused for page"))
        .count();
    assert!(told <= 2, "{told} lines for 31 refusals");

    // Closing the page frees both places.
    page.leave().await;
    d.next_stdout("done: killed: its page went away").await;
    d.next_stdout("done: killed: its page went away").await;
    let mut page = Page::open(&d).await;
    page.send("run hold").await;
    page.until(|f| is_line(f, "up")).await;
}

#[tokio::test]
async fn the_operator_sends_output_to_pages_by_name_or_to_the_monitor() {
    let mut d = start(
        r#"
[actions.hello]
program = "echo"
args = ["hello"]
"#,
    );
    let mut watcher = Page::open(&d).await;
    watcher.send("ws register status").await;
    watcher.until(|f| is_type(f, "reply")).await;

    let (ok, out) = d.command("run --to status hello").await;
    assert!(ok, "{out}");
    assert!(
        out.ends_with("output to connections named 'status'"),
        "{out}"
    );
    let frames = watcher.until(|f| is_type(f, "done")).await;
    let line = frames
        .iter()
        .find(|f| is_line(f, "hello"))
        .expect("the line");
    assert_eq!(line["name"], "status");
    assert_eq!(frames.last().expect("done")["name"], "status");

    let (ok, out) = d.command("run hello").await;
    assert!(ok, "{out}");
    assert!(out.contains("to the Monitor only"), "{out}");
    d.next_stdout("action hello[2] stdout: hello").await;

    let (ok, out) = d.command("run --to 999 hello").await;
    assert!(!ok);
    assert_eq!(
        out,
        "run: no connection with index 999; 'ws' lists the current ones"
    );
}

#[tokio::test]
async fn without_the_token_shell_runs_reach_the_monitor_and_no_page() {
    let mut d = start(
        r#"
token = "s3cret"

[actions.hello]
program = "echo"
args = ["hello"]
"#,
    );
    let mut page = Page::open(&d).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let shell = |cmd: String| {
        let cmd = percent_encoding::utf8_percent_encode(&cmd, percent_encoding::NON_ALPHANUMERIC);
        // What a page's fetch sends: without it, a GET may only read.
        client
            .get(format!("http://{}/shell?cmd={cmd}", d.addr))
            .header("sec-fetch-site", "same-origin")
            .send()
    };

    // A page's rights over HTTP reach no connection, not even by index.
    for to in [page.index.to_string(), "*".into()] {
        let answer = shell(format!("run --to {to} hello"))
            .await
            .expect("GET /shell");
        assert_eq!(answer.status(), 401);
    }
    let answer = shell("run hello".into()).await.expect("GET /shell");
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.expect("text");
    assert!(text.contains("to the Monitor only"), "{text}");
    d.next_stdout("action hello[1] stdout: hello").await;

    // The page runs it over its own WebSocket to see the output.
    page.send("run hello").await;
    let frames = page.until(|f| is_type(f, "done")).await;
    assert!(frames.iter().any(|f| is_line(f, "hello")), "{frames:?}");
}

#[tokio::test]
async fn output_and_status_reach_the_monitor() {
    let mut d = start(
        r#"
[actions.s]
program = "sh"
args = ["-c", "echo out; echo err >&2; printf 'no newline'; exit 3"]
"#,
    );
    let (ok, reply) = d.command("run s").await;
    assert!(ok, "{reply}");
    assert!(reply.contains("Monitor only"), "{reply}");
    let seen = d.stdout_until("action s[1] done: exited with 3").await;
    let position = |want: &str| {
        seen.iter()
            .position(|l| l.ends_with(want))
            .unwrap_or_else(|| panic!("no {want:?} in {seen:#?}"))
    };
    // stdout and stderr are two pipes: only each one's order is fixed.
    assert!(position("action s[1] stdout: out") < position("action s[1] stdout: no newline"));
    position("action s[1] stderr: err");
    let metrics = d.metrics().await;
    for want in [
        "pagewire_actions_started_total 1",
        "pagewire_actions_finished_total 1",
        "pagewire_actions_running 0",
    ] {
        assert!(metrics.lines().any(|l| l == want), "{want}: {metrics}");
    }
}

#[tokio::test]
async fn a_program_that_cannot_start_is_an_error_and_frees_its_place() {
    let d = start(
        r#"
[limits]
max_running_actions = 1

[actions.nope]
program = "/nonexistent/program"

[actions.elsewhere]
program = "true"
cwd = "/nonexistent/dir"

[actions.ok]
program = "true"
"#,
    );
    let (ok, out) = d.command("run elsewhere").await;
    assert!(!ok);
    assert_eq!(
        out,
        "run: cannot start action 'elsewhere' (program true): cannot use working \
         directory /nonexistent/dir: No such file or directory (os error 2)"
    );
    let (ok, out) = d.command("run nope").await;
    assert!(!ok);
    assert_eq!(
        out,
        "run: cannot start action 'nope' (program /nonexistent/program): \
         No such file or directory (os error 2)"
    );
    let (ok, out) = d.command("run ok").await;
    assert!(ok, "{out}");
}
