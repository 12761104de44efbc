//! The Debian package (`scripts/build-deb.sh`): built from the binary
//! under test, installed with `dpkg -i`, its files, user and service
//! checked, the service user's control socket used by a member of its
//! group (in a private mount namespace, so `/run/pagewire` of this machine
//! is left alone), then removed and purged. Runs as root (CI does); it
//! refuses to touch a machine where pagewire is already installed, and
//! cleans up after itself even when it fails.

use std::path::Path;
use std::process::Command;

use crate::support::{Output, Process};

/// How long a step may take: dpkg runs triggers (man-db) and the machine
/// may be busy.
const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs a program to its end.
fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("PAGEWIRE_CONTROL")
        .env_remove("PAGEWIRE_CONFIG");
    Process::spawn(cmd).wait_exit_within(STEP_TIMEOUT)
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", "pagewire"])
        .stdout
        .contains("installed")
}

fn user_exists() -> bool {
    run("getent", &["passwd", "pagewire"]).code == Some(0)
}

/// Purges the package and, if this test created it, the service user.
struct Cleanup {
    remove_user: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if installed() || Path::new("/etc/pagewire").exists() {
            let _ = run("dpkg", &["-P", "pagewire"]);
        }
        if self.remove_user && user_exists() {
            let _ = run("deluser", &["--system", "--quiet", "pagewire"]);
            let _ = run("delgroup", &["--system", "--quiet", "pagewire"]);
        }
    }
}

/// Runs `pagewire ARGS` as `user` (with primary group `group`, no other
/// groups) in the mount namespace of process `pid`.
fn cli_as(pid: u32, user: &str, group: &str, args: &[&str]) -> Output {
    let target = pid.to_string();
    let reuid = format!("--reuid={user}");
    let regid = format!("--regid={group}");
    let mut argv = vec![
        "--mount",
        "--target",
        &target,
        "setpriv",
        &reuid,
        &regid,
        "--clear-groups",
        "/usr/bin/pagewire",
    ];
    argv.extend_from_slice(args);
    run("nsenter", &argv)
}

#[test]
fn the_debian_package_installs_runs_and_is_removed() {
    assert_eq!(
        run("id", &["-u"]).stdout.trim(),
        "0",
        "the package test installs a package: run it as root"
    );
    assert!(
        !installed() && !Path::new("/usr/bin/pagewire").exists(),
        "pagewire is already installed here; this test will not replace it"
    );
    let cleanup = Cleanup {
        remove_user: !user_exists(),
    };

    let out = tempfile::tempdir().expect("tempdir");
    let mut build = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-deb.sh"));
    build
        .arg(out.path())
        .env("PAGEWIRE_DEB_BIN", crate::support::bin());
    // Minutes on a busy machine: stripping and compressing the binary.
    let built = Process::spawn(build).wait_exit_within(2 * STEP_TIMEOUT);
    built.assert_exit_code(0);
    let deb = built.stdout.trim().to_owned();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).is_file(),
        "{built:?}"
    );
    let contents = run("dpkg-deb", &["--contents", &deb]).stdout;
    for file in [
        "./usr/bin/pagewire",
        "./lib/systemd/system/pagewire.service",
        "./etc/pagewire/pagewire.toml",
        "./usr/share/man/man1/pagewire-serve.1.gz",
        "./usr/share/bash-completion/completions/pagewire",
        "./usr/share/zsh/vendor-completions/_pagewire",
        "./usr/share/fish/vendor_completions.d/pagewire.fish",
        "./usr/share/doc/pagewire/examples/nginx/pagewire-location.conf",
    ] {
        assert!(contents.contains(file), "{file} not in\n{contents}");
    }
    assert_eq!(
        run("dpkg-deb", &["--info", &deb, "conffiles"]).stdout,
        "/etc/pagewire/pagewire.toml\n"
    );

    run("dpkg", &["-i", &deb]).assert_exit_code(0);
    assert!(installed());
    run("/usr/bin/pagewire", &["--version"])
        .assert_exit_code(0)
        .assert_stdout_contains(concat!("pagewire ", env!("CARGO_PKG_VERSION")));
    run(
        "/usr/bin/pagewire",
        &["check-config", "/etc/pagewire/pagewire.toml"],
    )
    .assert_exit_code(0)
    .assert_stdout_contains("/etc/pagewire/pagewire.toml: ok");
    assert!(user_exists(), "postinst creates the user pagewire");
    assert_eq!(
        run("stat", &["-c", "%U:%G %a", "/etc/pagewire/pagewire.toml"])
            .stdout
            .trim(),
        "root:pagewire 640"
    );
    let verify = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/pagewire.service"],
    );
    assert!(
        verify.code == Some(0) && !verify.stderr.contains("pagewire.service"),
        "{verify:?}"
    );
    run(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/pagewire",
        ],
    )
    .assert_exit_code(0);
    run("man", &["-w", "pagewire-serve"])
        .assert_exit_code(0)
        .assert_stdout_contains("/usr/share/man/man1/pagewire-serve.1.gz");

    // The service as the unit runs it, as its user, its runtime directory
    // as systemd makes it: in a mount namespace of its own.
    let mut service = Command::new("unshare");
    service.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs -o mode=0750,uid=$(id -u pagewire),gid=$(id -g pagewire) pagewire /run/pagewire \
         && exec setpriv --reuid=pagewire --regid=pagewire --clear-groups /usr/bin/pagewire serve \
         --config /etc/pagewire/pagewire.toml --control /run/pagewire/pagewire.sock --listen 127.0.0.1:0",
    ]);
    let service = Process::spawn(service);
    service.wait_for_stdout(|l| l.contains("(control socket /run/pagewire/pagewire.sock)"));
    let pid = service.id();
    let mode = run(
        "nsenter",
        &[
            "--mount",
            "--target",
            &pid.to_string(),
            "stat",
            "-c",
            "%U:%G %a",
            "/run/pagewire/pagewire.sock",
        ],
    );
    assert_eq!(mode.stdout.trim(), "pagewire:pagewire 660", "{mode:?}");
    // A member of the group finds the service's socket without --control.
    cli_as(pid, "nobody", "pagewire", &["ws"])
        .assert_exit_code(0)
        .assert_stdout_contains("no WebSocket connections");
    // Anyone else, root included, is refused by the CLI's rule.
    let stranger = cli_as(
        pid,
        "nobody",
        "nogroup",
        &["--control", "/run/pagewire/pagewire.sock", "ws"],
    );
    assert_ne!(stranger.code, Some(0), "{stranger:?}");
    let root = cli_as(
        pid,
        "root",
        "root",
        &["--control", "/run/pagewire/pagewire.sock", "ws"],
    );
    assert_ne!(root.code, Some(0), "{root:?}");
    root.assert_stderr_contains("belongs to uid");
    service.terminate();

    run("dpkg", &["-r", "pagewire"]).assert_exit_code(0);
    assert!(!Path::new("/usr/bin/pagewire").exists());
    assert!(
        Path::new("/etc/pagewire/pagewire.toml").exists(),
        "a removed package keeps its configuration"
    );
    run("dpkg", &["-P", "pagewire"]).assert_exit_code(0);
    assert!(!Path::new("/etc/pagewire").exists() && !installed());
    drop(cleanup);
}
