//! The `pagewire` binary: everything happens in `pagewire::cli`, except in
//! an action's keeper process, which is this binary started again under
//! another name (see `pagewire::actions::keeper`).

fn main() -> std::process::ExitCode {
    if let Some(code) = pagewire::actions::keeper::main_if_keeper() {
        return code;
    }
    pagewire::cli::main()
}
