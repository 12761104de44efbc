//! Actions must not be a way around the daemon's rights or its process
//! control: where a run's output may go, which processes a run leaves
//! behind, which arguments and environment its program gets, and how a
//! program that writes faster than its page reads is held back.
//!
//! Every wait is for a frame, a line, an exit or a state in /proc, bounded
//! by a deadline.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::page::{listing, Page};
use crate::support::{eventually, Daemon, TIMEOUT};

/// A daemon started with `config` as its configuration file and `env` set.
fn daemon(config: &str, env: &[(&str, &str)]) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pagewire.toml");
    std::fs::write(&path, config).expect("write config");
    let mut builder = Daemon::builder().arg("--config").arg(&path);
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    (builder.start(), dir)
}

/// `GET /shell?cmd=LINE`, with the bearer token when given.
async fn shell(d: &Daemon, line: &str, token: Option<&str>) -> (StatusCode, String) {
    let cmd = percent_encoding::utf8_percent_encode(line, percent_encoding::NON_ALPHANUMERIC);
    // As a page's own fetch sends it: a bare GET could only read anyway
    // (guard::a_get_that_cannot_show_its_origin_may_only_read), and the
    // rights checked here are those of a same-origin caller.
    let mut req = reqwest::Client::new()
        .get(d.url(&format!("/shell?cmd={cmd}")))
        .header("sec-fetch-site", "same-origin");
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("GET /shell");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

/// Frames up to and including the `done` of a run (the `reply` to the
/// `run` among them).
async fn until_done(page: &mut Page) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = page.recv().await;
        let done = f["type"] == "done";
        frames.push(f);
        if done {
            return frames;
        }
    }
}

/// The `text` of every `line` frame.
fn texts(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "line")
        .filter_map(|f| f["text"].as_str().map(str::to_string))
        .collect()
}

/// A `sleep` argument no other process on the machine has: it marks the
/// processes a test's action starts, so that /proc can be searched for
/// them.
fn marker(tag: u32) -> String {
    format!("1000.{}{tag:03}", std::process::id())
}

/// Pids of live (not zombie) processes whose command line has `needle` as
/// one of its arguments.
fn pids_with(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == needle.as_bytes()))
        })
        .collect()
}

/// Pids of live processes running `program` with `arg` among its
/// arguments (not the action's keeper, whose arguments are the same).
fn pids_of(program: &str, arg: &str) -> Vec<u32> {
    pids_with(arg)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == program)
        })
        .collect()
}

/// Kills, when dropped, whatever still carries one of the markers, so that
/// a failing test leaves no `sleep 1000` behind.
struct Leftovers(Vec<String>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for m in &self.0 {
            for pid in pids_with(m) {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

#[track_caller]
fn assert_none_left(markers: &[String], when: &str) {
    for m in markers {
        let left = pids_with(m);
        assert!(left.is_empty(), "{when}: sleep {m} still runs as {left:?}");
    }
}

// ---------------------------------------------------------------------
// 1. Where a run's output may go
// ---------------------------------------------------------------------

const TOKEN: &str = "tok-8c1d5e-never-shown";
const SECRET: &str = "sk-live-4b7f20-never-shown";

#[tokio::test]
async fn shell_without_the_token_cannot_send_a_run_to_a_page() {
    let (d, _dir) = daemon(
        "[actions.env]\nprogram = \"env\"\n",
        &[("PAGEWIRE_TOKEN", TOKEN), ("SECRET_KEY", SECRET)],
    );
    let mut page = Page::open(&d).await;

    // The replay: a token is configured and not sent.
    for to in [page.index.to_string(), "*".into()] {
        let (status, body) = shell(&d, &format!("run --to {to} env"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "--to {to}: {body}");
        assert!(body.contains("operator"), "{body}");
    }
    // Without --to, the output goes to the Monitor only.
    let (status, body) = shell(&d, "run env", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Monitor only"), "{body}");
    d.wait_for_stdout(|l| l.contains("action env[") && l.contains("] done: exited with 0"));

    // The page received nothing: the operator's write is its first frame.
    let (status, body) = shell(
        &d,
        &format!("ws write {} after-the-replay", page.index),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = page.recv().await;
    assert_eq!(
        (first["type"].as_str(), first["text"].as_str()),
        (Some("write"), Some("after-the-replay")),
        "the page got something else first: {first}"
    );

    // With the token, --to is the operator's to use.
    let (status, body) = shell(&d, &format!("run --to {} env", page.index), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines = texts(&until_done(&mut page).await);
    assert!(
        lines.iter().any(|l| l == "PAGEWIRE_ACTION=env"),
        "{lines:?}"
    );

    let out = d.stop();
    for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!text.contains(SECRET), "daemon {what} shows the secret");
        assert!(!text.contains(TOKEN), "daemon {what} shows the token");
    }
    for l in &lines {
        assert!(!l.contains(SECRET) && !l.contains(TOKEN), "{l}");
    }
}

#[tokio::test]
async fn a_page_cannot_send_its_run_to_another_page() {
    let (d, _dir) = daemon("[actions.env]\nprogram = \"env\"\n", &[]);
    let mut a = Page::open(&d).await;
    let mut b = Page::with_names(&d, &["other"]).await;
    for to in [b.index.to_string(), "other".into(), "*".into()] {
        a.send(&format!("run --to {to} env")).await;
        let f = a.recv().await;
        assert_eq!(f["type"], "error", "--to {to}: {f}");
        assert_eq!(
            f["message"],
            "run: a page's action output goes to the page itself; --to TARGET needs \
             operator rights"
        );
    }
    // Its own index is itself.
    a.send(&format!("run --to {} env", a.index)).await;
    let lines = texts(&until_done(&mut a).await);
    assert!(
        lines
            .iter()
            .any(|l| *l == format!("PAGEWIRE_CONNECTION={}", a.index)),
        "{lines:?}"
    );
    d.cli(&["ws", "write", &b.index.to_string(), "marker"])
        .assert_exit_code(0);
    let first = b.recv().await;
    assert_eq!(first["text"], "marker", "page b got {first}");
}

// ---------------------------------------------------------------------
// 2. No process outlives its run
// ---------------------------------------------------------------------

/// Actions that leave a `sleep MARKER` behind in each of the usual ways,
/// and exit at once. Their output is closed, so each run ends when its
/// program exits.
fn detaching_actions(base: u32) -> (String, Vec<(&'static str, String)>) {
    let tricks: [(&str, &str); 5] = [
        ("setsid", "setsid sleep {M} >/dev/null 2>&1 &"),
        (
            "double-fork",
            "sh -c 'sleep {M} >/dev/null 2>&1 &'; echo parent gone",
        ),
        ("nohup", "nohup sleep {M} >/dev/null 2>&1 &"),
        ("setsid-f", "setsid -f sleep {M} >/dev/null 2>&1"),
        ("subshell", "( sleep {M} >/dev/null 2>&1 & )"),
    ];
    let mut config = String::new();
    let mut runs = Vec::new();
    for (i, (name, script)) in tricks.iter().enumerate() {
        let m = marker(base + i as u32);
        let script = script.replace("{M}", &m);
        config.push_str(&format!(
            "[actions.{name}]\nprogram = \"sh\"\nargs = [\"-c\", {script:?}]\n\n"
        ));
        runs.push((*name, m));
    }
    (config, runs)
}

#[tokio::test]
async fn no_detached_process_outlives_its_run() {
    let (mut config, mut runs) = detaching_actions(10);
    // The daemonizing subshell as written, its output left open: the run
    // lasts until its timeout, and then nothing is left either.
    let open = marker(20);
    config.push_str(&format!(
        "[actions.subshell-open]\nprogram = \"sh\"\nargs = [\"-c\", \"( sleep {open} & ); echo up\"]\n\
         timeout_secs = 1\n"
    ));
    runs.push(("subshell-open", open));
    let _cleanup = Leftovers(runs.iter().map(|(_, m)| m.clone()).collect());
    let (d, _dir) = daemon(&config, &[]);
    let mut page = Page::open(&d).await;
    for (name, m) in &runs {
        page.send(&format!("run {name}")).await;
        let frames = until_done(&mut page).await;
        let done = frames.last().expect("done");
        if *name == "subshell-open" {
            assert_eq!(done["message"], "killed after 1s timeout", "{done}");
        } else {
            assert_eq!(done["message"], "exited with 0", "{name}: {done}");
        }
        assert_none_left(std::slice::from_ref(m), &format!("after {name}'s done"));
    }
}

#[tokio::test]
async fn the_slot_stays_taken_while_a_process_of_the_run_lives() {
    let m = marker(30);
    let _cleanup = Leftovers(vec![m.clone()]);
    let config = format!(
        "[limits]\nmax_running_actions = 1\n\n\
         [actions.hold]\nprogram = \"sh\"\nargs = [\"-c\", \"setsid sleep {m} & echo up\"]\n\
         timeout_secs = 2\n"
    );
    let (d, _dir) = daemon(&config, &[]);
    let mut page = Page::open(&d).await;
    page.send("run hold").await;
    let mut frames = Vec::new();
    while !texts(&frames).iter().any(|t| t == "up") {
        frames.push(page.recv().await);
    }
    // The shell exits; its detached sleep holds the run (and its output)
    // open.
    eventually("the sleep to start", TIMEOUT, || !pids_with(&m).is_empty()).await;
    page.send("run hold").await;
    let refused = page.recv_type("error").await;
    assert_eq!(
        refused["message"],
        "run: 1 actions are running already, the most allowed \
         (limits.max_running_actions); try again when one ends"
    );
    let done = page.recv_type("done").await;
    assert_eq!(done["message"], "killed after 2s timeout");
    assert_none_left(std::slice::from_ref(&m), "after the run's done");
    page.send("run hold").await;
    let reply = page.recv_type("reply").await;
    assert!(
        reply["output"]
            .as_str()
            .is_some_and(|o| o.starts_with("started action 'hold'")),
        "{reply}"
    );
}

#[tokio::test]
async fn a_keeper_killed_from_outside_leaves_nothing_behind() {
    let markers = [marker(60), marker(61)];
    let _cleanup = Leftovers(markers.to_vec());
    let script = format!(
        "setsid sleep {} & echo $PPID; exec sleep {}",
        markers[0], markers[1]
    );
    let (d, _dir) = daemon(
        &format!("[actions.victim]\nprogram = \"sh\"\nargs = [\"-c\", {script:?}]\n"),
        &[],
    );
    let mut page = Page::open(&d).await;
    page.send("run victim").await;
    let keeper = loop {
        let f = page.recv().await;
        if f["type"] == "line" {
            break f["text"]
                .as_str()
                .and_then(|t| t.parse::<i32>().ok())
                .expect("a pid");
        }
    };
    eventually("both sleeps to start", TIMEOUT, || {
        markers.iter().all(|m| !pids_with(m).is_empty())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the keeper");
    let done = page.recv_type("done").await;
    assert_eq!(
        done["message"],
        "lost track of the program: its keeper ended"
    );
    // What the keeper left came to the daemon, which killed it.
    assert_none_left(&markers, "after the run's done");
    assert!(
        d.cli(&["ws"])
            .stdout
            .lines()
            .all(|l| !l.starts_with("action ")),
        "the run is still listed"
    );
}

/// An action that leaves processes behind in several ways and goes on
/// running itself.
fn lingering_action(base: u32) -> (String, Vec<String>) {
    let markers: Vec<String> = (0..4).map(|i| marker(base + i)).collect();
    let script = format!(
        "setsid sleep {} & (sleep {} &); setsid -f sleep {}; echo up; exec sleep {}",
        markers[0], markers[1], markers[2], markers[3]
    );
    (
        format!("[actions.linger]\nprogram = \"sh\"\nargs = [\"-c\", {script:?}]\n"),
        markers,
    )
}

/// Starts the lingering action from a page, which is returned: it stays
/// open, so that only the daemon's end ends the run.
async fn start_lingering(d: &Daemon, markers: &[String]) -> Page {
    let mut page = Page::open(d).await;
    page.send("run linger").await;
    let mut frames = Vec::new();
    while !texts(&frames).iter().any(|t| t == "up") {
        frames.push(page.recv().await);
    }
    eventually("every sleep to start", TIMEOUT, || {
        markers.iter().all(|m| !pids_with(m).is_empty())
    })
    .await;
    page
}

#[tokio::test]
async fn sigterm_leaves_no_action_process_behind() {
    let (config, markers) = lingering_action(40);
    let _cleanup = Leftovers(markers.clone());
    let (d, _dir) = daemon(&config, &[]);
    let mut page = start_lingering(&d, &markers).await;
    let out = d.stop();
    assert_eq!(out.code, Some(0), "{out}");
    assert_none_left(&markers, "after the daemon exited");
    let done = page.recv_type("done").await;
    assert_eq!(done["message"], "killed: the daemon is shutting down");
}

#[tokio::test]
async fn a_killed_daemon_leaves_no_action_process_behind() {
    let (config, markers) = lingering_action(50);
    let _cleanup = Leftovers(markers.clone());
    let (d, _dir) = daemon(&config, &[]);
    let _page = start_lingering(&d, &markers).await;
    d.kill();
    // Nothing of the daemon is left to report: its runs' keepers see it go
    // and end them by themselves.
    eventually("the run's processes to go", TIMEOUT, || {
        markers.iter().all(|m| pids_with(m).is_empty())
    })
    .await;
}

// ---------------------------------------------------------------------
// 3. Arguments that look like options
// ---------------------------------------------------------------------

#[tokio::test]
async fn arguments_starting_with_a_dash_need_page_dash_args() {
    let (d, _dir) = daemon(
        "[actions.say]\nprogram = \"echo\"\npage_args = true\n\n\
         [actions.flags]\nprogram = \"echo\"\npage_args = true\npage_dash_args = true\n",
        &[],
    );
    let mut page = Page::open(&d).await;
    for (args, shown) in [
        ("-n hi", "-n"),
        ("hi --help", "--help"),
        ("-", "-"),
        ("\"-e x\"", "-e x"),
    ] {
        page.send(&format!("run say {args}")).await;
        let f = page.recv().await;
        assert_eq!(f["type"], "error", "{args}: {f}");
        assert_eq!(
            f["message"],
            format!(
                "run: action 'say' takes no argument that starts with '-' (got '{shown}'; \
                 its configuration would need page_dash_args = true); nothing was run"
            ),
            "{args}"
        );
    }
    // The operator's arguments are held to the same rule.
    d.cli(&["run", "say", "-n", "hi"])
        .assert_exit_code(1)
        .assert_stderr_contains("takes no argument that starts with '-'");
    // Allowed, and not dashes inside or after a word.
    page.send("run say a-b c-").await;
    assert_eq!(texts(&until_done(&mut page).await), ["a-b c-"]);
    page.send("run flags -n dashes").await;
    let frames = until_done(&mut page).await;
    assert_eq!(texts(&frames), ["dashes"]);
    assert_eq!(frames.last().expect("done")["status"], 0);
}

// ---------------------------------------------------------------------
// 4. The program's environment
// ---------------------------------------------------------------------

/// `NAME=value` lines as a set of names.
fn names(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect()
}

#[tokio::test]
async fn actions_get_a_small_environment_and_what_inherit_env_names() {
    let (d, _dir) = daemon(
        "[actions.env]\nprogram = \"env\"\n\n\
         [actions.keyed]\nprogram = \"env\"\ninherit_env = [\"SECRET_KEY\"]\n\
         env = { DEPLOY_ENV = \"staging\" }\n",
        &[
            ("PAGEWIRE_TOKEN", TOKEN),
            ("SECRET_KEY", SECRET),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "C"),
            ("TZ", "UTC"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    );
    let mut page = Page::open(&d).await;
    page.send("run env").await;
    let lines = texts(&until_done(&mut page).await);
    let allowed: BTreeSet<String> = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LC_TIME",
        "TZ",
        "TMPDIR",
        "PAGEWIRE_ACTION",
        "PAGEWIRE_RUN",
        "PAGEWIRE_CONNECTION",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let got = names(&lines);
    assert!(
        got.is_subset(&allowed),
        "unexpected variables: {:?}",
        got.difference(&allowed).collect::<Vec<_>>()
    );
    for want in [
        "LANG=C.UTF-8",
        "LC_TIME=C",
        "TZ=UTC",
        "PAGEWIRE_ACTION=env",
        "PAGEWIRE_RUN=1",
    ] {
        assert!(lines.iter().any(|l| l == want), "no {want} in {lines:?}");
    }
    assert!(got.contains("PATH"), "{lines:?}");
    assert_eq!(
        lines.iter().find(|l| l.starts_with("PAGEWIRE_CONNECTION=")),
        Some(&format!("PAGEWIRE_CONNECTION={}", page.index))
    );

    page.send("run keyed").await;
    let lines = texts(&until_done(&mut page).await);
    assert!(
        lines.iter().any(|l| *l == format!("SECRET_KEY={SECRET}")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "DEPLOY_ENV=staging"), "{lines:?}");
    assert!(
        !names(&lines).contains("AWS_SECRET_ACCESS_KEY"),
        "{lines:?}"
    );
    assert!(!names(&lines).contains("PAGEWIRE_TOKEN"), "{lines:?}");
}

// ---------------------------------------------------------------------
// 5. Backpressure
// ---------------------------------------------------------------------

/// Lines the flooding action prints: about 10 MB, far more than the
/// page's outgoing queue and the socket buffers hold.
const FLOOD_LINES: usize = 100_000;

/// The state of process `pid` and what it waits in, from /proc.
fn blocked_writing(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("pipe_write"))
}

#[tokio::test]
async fn a_fast_action_waits_for_its_slow_page() {
    let m = format!("m{}", std::process::id());
    let config = format!(
        "[actions.flood]\nprogram = \"seq\"\nargs = [\"-f\", \"{m} %090g\", \"1\", \"{FLOOD_LINES}\"]\n\
         timeout_secs = 600\n"
    );
    let format_arg = format!("{m} %090g");
    let (d, _dir) = daemon(&config, &[]);
    let mut page = Page::open(&d).await;
    page.send("run flood").await;

    // The page reads nothing now. The program must end up blocked on its
    // full pipe while the daemon, holding its lines back, prints nothing
    // more: held back, not gathered.
    let mut seq = None;
    let mut last_count = usize::MAX;
    let mut steady = 0;
    eventually("the action to be held back", TIMEOUT, || {
        let pid = match seq {
            Some(pid) => pid,
            None => match pids_of("seq", &format_arg).first() {
                Some(pid) => *seq.insert(*pid),
                None => return false,
            },
        };
        assert!(
            std::fs::metadata(format!("/proc/{pid}")).is_ok(),
            "the program ended while its page was not reading"
        );
        let count = d.process().stdout_lines().len();
        if blocked_writing(pid) && count == last_count {
            steady += 1;
        } else {
            steady = 0;
        }
        last_count = count;
        steady >= 5
    })
    .await;
    let l = listing(&d);
    assert!(
        l.iter().any(|c| c.starts_with(&format!("{} ", page.index))),
        "the page left the listing: {l:?}"
    );
    let ws = d.cli(&["ws"]);
    assert!(
        ws.stdout.contains("action flood run=1"),
        "the run is not listed: {ws}"
    );
    assert!(
        !d.process()
            .stdout_lines()
            .iter()
            .any(|l| l.contains("slow consumer")),
        "a slow consumer was closed"
    );

    // Now the page reads: every line, in order, then done.
    let mut next = 1;
    loop {
        let f = page.recv().await;
        match f["type"].as_str() {
            Some("line") => {
                let want = format!("{m} {next:090}");
                assert_eq!(f["text"].as_str(), Some(want.as_str()), "line {next}");
                next += 1;
            }
            Some("done") => {
                assert_eq!(next, FLOOD_LINES + 1, "done before every line: {f}");
                assert_eq!(f["status"], 0, "{f}");
                break;
            }
            Some("reply") => {}
            _ => panic!("unexpected frame {f}"),
        }
    }
}

#[tokio::test]
async fn output_to_many_pages_is_not_held_for_ever_by_one() {
    let m = format!("n{}", std::process::id());
    let config = format!(
        "[actions.flood]\nprogram = \"seq\"\nargs = [\"-f\", \"{m} %090g\", \"1\", \"{FLOOD_LINES}\"]\n\
         timeout_secs = 600\n"
    );
    let (d, _dir) = daemon(&config, &[]);
    let mut reader = Page::with_names(&d, &["board"]).await;
    let silent = Page::with_names(&d, &["board"]).await;
    d.cli(&["run", "--to", "board", "flood"])
        .assert_exit_code(0);
    // The page that reads gets everything and the end, although the other
    // never reads; that one is closed as a slow consumer on the way.
    let mut next = 1;
    loop {
        let f = reader.recv().await;
        match f["type"].as_str() {
            Some("line") => {
                let want = format!("{m} {next:090}");
                assert_eq!(f["text"].as_str(), Some(want.as_str()), "line {next}");
                next += 1;
            }
            Some("done") => {
                assert_eq!(f["status"], 0, "{f}");
                break;
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
    assert_eq!(next, FLOOD_LINES + 1);
    d.wait_for_stdout(|l| l.contains(&format!("ws {} closed: slow consumer", silent.index)));
    drop(silent);
}
