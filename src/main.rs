//! The `pagewire` binary: everything happens in `pagewire::app::cli`, except in
//! an action's keeper process, which is this binary started again under
//! another name (see `pagewire::engine::actions::keeper`).
//!
//! With the `jemalloc` feature (on by default) the binary allocates with
//! jemalloc rather than glibc's malloc. An idle page is a handful of small
//! blocks that live as long as it does, two of them 128-byte aligned by
//! tokio; glibc pays a header per block and pads each aligned block,
//! jemalloc packs blocks of one size class into slabs with no header. An
//! idle page costs about two thirds of glibc's figure, and under overload
//! the daemon keeps up as well or better (docs/PERFORMANCE.md, "Memory per
//! page"). `--no-default-features` builds with glibc's malloc.

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
