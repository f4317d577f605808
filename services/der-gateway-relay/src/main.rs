fn main() -> std::process::ExitCode {
    pmcore_runtime::main::<pmcore_der_gateway_relay::App>()
}
