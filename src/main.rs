//! The `pagewire` binary: everything happens in `pagewire::app::cli`, except in
//! an action's keeper process, which is this binary started again under
//! another name (see `pagewire::engine::actions::keeper`).

fn main() -> std::process::ExitCode {
    if let Some(code) = pagewire::engine::actions::keeper::main_if_keeper() {
        return code;
    }
    pagewire::app::cli::main()
}
