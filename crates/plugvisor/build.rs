// Compiles go-plugin's protocol services and plugvisor.v1 with protox, so no
// system protoc is needed. The protos live at the repository root, where the
// Python and Go code generators read them too.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let protos = [
        "grpc_controller.proto",
        "grpc_stdio.proto",
        "grpc_broker.proto",
        "plugvisor/v1/lifecycle.proto",
        "plugvisor/v1/host.proto",
        "plugvisor/v1/http.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={root}/{proto}");
    }
    let descriptors = protox::compile(protos, [root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
