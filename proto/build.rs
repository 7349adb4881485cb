//! Generates Rust code for both protos at build time (nothing generated is checked in).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "globallock/v1/lock.proto",
        "globallock/agent/v1/agent.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::StrictCodec")
        .compile_protos(&protos, &["."])?;
    Ok(())
}
