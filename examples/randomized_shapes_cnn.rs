//! Write the cascading randomisation steps of the bundled shapes-cnn (Burn's
//! safetensors, seed 0, the groups `lumen::metrics::parameter_groups` lists, top
//! first): the input of `tools/reference/metric_fixtures.py`'s Quantus
//! `ModelParameterRandomisation` fixture, which is given exactly these weights.
//!
//!     cargo run -p lumen-examples --example randomized_shapes_cnn -- OUT_DIR

use lumen::metrics::{parameter_groups, randomize_groups};
use lumen::{LoadedModel, ZooModel};
use lumen_models::weights::save_burn;

fn main() {
    let Some(out) = std::env::args().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: randomized_shapes_cnn OUT_DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&out).expect("create the output folder");
    let loaded = LoadedModel::bundled("shapes-cnn", &lumen::core::Device::flex()).expect("bundled");
    let ZooModel::ResNet(model) = loaded.model else {
        unreachable!("shapes-cnn is a ResNet")
    };
    let groups: Vec<String> = parameter_groups(&*model).into_iter().rev().collect();
    for step in 0..groups.len() {
        let randomized = randomize_groups(&*model, &groups[..=step], 0).expect("read the weights");
        let path = out.join(format!("{step}_{}.safetensors", groups[step]));
        save_burn(&randomized, &path).expect("write the weights");
    }
    println!(
        "wrote {} steps ({}) to {}",
        groups.len(),
        groups.join(", "),
        out.display()
    );
}
