// The chat server's own protocol, compiled with protox like plugvisor's.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/chat/v1/chat.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
