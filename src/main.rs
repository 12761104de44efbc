//! The `pagewire` binary: everything happens in `pagewire::app::cli`, except in
//! an action's keeper process, which is this binary started again under
//! another name (see `pagewire::engine::actions::keeper`).
//!
//! The binary allocates with jemalloc rather than glibc's malloc. An idle
//! page is a handful of small blocks that live as long as it does, two of
//! them 128-byte aligned by tokio; glibc pays a header per block, pads
//! each aligned block with a spare chunk, and keeps the handshakes' freed
//! blocks scattered between the live ones. jemalloc packs blocks of one
//! size class into slabs with no header, an aligned block of 128 or 256
//! bytes is an ordinary one of its class, and freed slabs go back to the
//! system. An idle page costs about two thirds of glibc's figure, at the
//! same delivery rate; mimalloc did less well (docs/PERFORMANCE.md,
//! "Memory per page").

/// The process's allocator (see the module doc).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    if let Some(code) = pagewire::engine::actions::keeper::main_if_keeper() {
        return code;
    }
    pagewire::app::cli::main()
}
