//! End to end: the load client against the write-loop server, small.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_writeloop() -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pw-writeloop"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--control",
            "/nonexistent/ctl.sock",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start pw-writeloop");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let addr = line
        .split("listening on http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address in the ready line")
        .to_string();
    assert!(
        line.starts_with("pagewire listening on http://127.0.0.1:"),
        "{line}"
    );
    (Server(child), addr)
}

fn load(addr: &str, pid: u32, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pw-load"))
        .args([
            "--server",
            addr,
            "--pid",
            &pid.to_string(),
            "--settle",
            "0.1",
        ])
        .args(args)
        .output()
        .expect("run pw-load");
    assert!(
        out.status.success(),
        "pw-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a record");
    serde_json::from_str(line).expect("a JSON record")
}

#[test]
fn burst_delivers_everything() {
    let (server, addr) = start_writeloop();
    let r = load(
        &addr,
        server.0.id(),
        &["--clients", "200", "--broadcasts", "5", "--require-all"],
    );
    assert_eq!(r["registered"], 200);
    assert_eq!(r["delivered"], 1000);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["corrupt"], 0);
    assert!(r["rss_after_kib"].as_u64().is_some());
}

#[test]
fn sustained_and_commands_run() {
    let (server, addr) = start_writeloop();
    let r = load(
        &addr,
        server.0.id(),
        &[
            "--scenario",
            "sustained",
            "--clients",
            "50",
            "--rate",
            "50",
            "--duration",
            "0.4",
            "--require-all",
        ],
    );
    assert_eq!(r["broadcasts"], 20);
    assert_eq!(r["lost"], 0);
    let r = load(
        &addr,
        server.0.id(),
        &[
            "--scenario",
            "commands",
            "--clients",
            "1",
            "--requests",
            "200",
            "--http-connections",
            "2",
        ],
    );
    assert_eq!(r["http_errors"], 0);
    assert!(r["commands_per_s"].as_f64().is_some_and(|v| v > 0.0));
}
