//! The `pagewire` binary: everything happens in `pagewire::app::cli`, except in
//! an action's keeper process, which is this binary started again under
//! another name (see `pagewire::engine::actions::keeper`).
//!
//! Built with the `jemalloc` feature, the binary allocates with jemalloc
//! rather than glibc's malloc. An idle page is a handful of small blocks
//! that live as long as it does, two of them 128-byte aligned by tokio;
//! glibc pays a header per block and pads each aligned block, jemalloc packs
//! blocks of one size class into slabs with no header. An idle page then
//! costs about two thirds of glibc's figure, but under overload (more
//! broadcasts than the machine can send) the daemon keeps up with about a
//! tenth of the broadcasts it does with glibc, so the feature is off by
//! default (docs/PERFORMANCE.md, "Memory per page").

/// The process's allocator (see the module doc).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    if let Some(code) = pagewire::engine::actions::keeper::main_if_keeper() {
        return code;
    }
    pagewire::app::cli::main()
}
