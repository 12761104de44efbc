//! What an idle page costs in memory depends on the allocator the binary
//! links (docs/PERFORMANCE.md, "Memory per page"): these tests keep it.

use crate::support::{command, Process};

#[test]
fn the_binary_allocates_with_mimalloc() {
    // mimalloc reports itself on stderr when asked to be verbose; glibc's
    // malloc ignores the variable, and the binary prints only its version.
    let mut cmd = command(["--version"]);
    cmd.env("MIMALLOC_VERBOSE", "1");
    Process::spawn(cmd)
        .wait_exit()
        .assert_exit_code(0)
        .assert_stdout_contains("pagewire")
        .assert_stderr_contains("mimalloc: process init");
}
