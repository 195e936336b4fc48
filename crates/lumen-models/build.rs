//! Embed the bundled shapes models when their weights exist (they are committed; the
//! training example writes them). Without them `--model shapes-cnn` says how to make them.

fn main() {
    for (name, cfg) in [
        ("shapes-cnn", "lumen_bundled_cnn"),
        ("shapes-vit", "lumen_bundled_vit"),
        ("shapes-seg", "lumen_bundled_seg"),
        ("shapes-det", "lumen_bundled_det"),
    ] {
        let path = format!("weights/{name}.safetensors");
        println!("cargo::rerun-if-changed={path}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if std::path::Path::new(&path).is_file() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
