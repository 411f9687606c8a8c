// Compiles go-plugin's protocol services with protox, so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/grpc_controller.proto", "proto/grpc_stdio.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
