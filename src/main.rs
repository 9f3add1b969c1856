fn main() -> std::process::ExitCode {
    authgate::cli::main()
}
