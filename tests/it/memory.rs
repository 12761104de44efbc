//! What an idle page costs in memory depends on the allocator the binary
//! links (docs/PERFORMANCE.md, "Memory per page"): jemalloc with the
//! `jemalloc` feature (a default one), glibc's without it. This test keeps
//! each build to its allocator.

use crate::support::{command, Process};

#[test]
fn the_binary_allocates_with_jemalloc_only_when_built_with_it() {
    // jemalloc (built with its symbols prefixed, so under this variable)
    // prints its statistics on stderr at exit when asked; glibc's malloc
    // ignores the variable, and the binary prints only its version.
    let mut cmd = command(["--version"]);
    cmd.env("_RJEM_MALLOC_CONF", "stats_print:true");
    let out = Process::spawn(cmd).wait_exit();
    out.assert_exit_code(0).assert_stdout_contains("pagewire");
    let jemalloc = out.stderr.contains("Begin jemalloc statistics");
    assert_eq!(
        jemalloc,
        cfg!(feature = "jemalloc"),
        "the allocator is not the build's\n{out}"
    );
}
