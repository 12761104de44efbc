//! The `pagewire` binary: everything happens in `pagewire::app::cli`, except in
//! an action's keeper process, which is this binary started again under
//! another name (see `pagewire::engine::actions::keeper`).
//!
//! The binary allocates with mimalloc rather than glibc's malloc: an idle
//! page is a dozen small blocks, two of them 128-byte aligned by tokio, and
//! glibc pays a header per block and a padded chunk per aligned block, and
//! keeps the handshakes' freed blocks scattered between live ones.
//! mimalloc's size classes carry no per-block header, give aligned blocks
//! from the same classes, and free whole pages back. The figures are in
//! docs/PERFORMANCE.md, "Memory per page".

/// The process's allocator (see the module doc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    if let Some(code) = pagewire::engine::actions::keeper::main_if_keeper() {
        return code;
    }
    pagewire::app::cli::main()
}
