//! The `pagewire` binary: everything happens in `pagewire::cli`.

fn main() -> std::process::ExitCode {
    pagewire::cli::main()
}
