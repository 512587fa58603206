//! The `notify-host` entry point, built inside the tests package so process-level tests can
//! start it (as `CARGO_BIN_EXE_notify-host-test`) and signal it.

fn main() -> std::process::ExitCode {
    notify_host::cli::main()
}
