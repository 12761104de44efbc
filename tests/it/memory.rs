//! What an idle page costs in memory depends on the allocator the binary
//! links (docs/PERFORMANCE.md, "Memory per page"): this test keeps it.

use crate::support::{command, Process};

#[test]
fn the_binary_allocates_with_jemalloc() {
    // jemalloc (built with its symbols prefixed, so under this variable)
    // prints its statistics on stderr at exit when asked; glibc's malloc
    // ignores the variable, and the binary prints only its version.
    let mut cmd = command(["--version"]);
    cmd.env("_RJEM_MALLOC_CONF", "stats_print:true");
    Process::spawn(cmd)
        .wait_exit()
        .assert_exit_code(0)
        .assert_stdout_contains("pagewire")
        .assert_stderr_contains("Begin jemalloc statistics");
}
