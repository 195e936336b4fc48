//! Helpers shared by the CLI tests: fixtures, running the binary in a scratch folder.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn weights(name: &str) -> String {
    root()
        .join(format!(
            "crates/lumen-models/tests/fixtures/{name}.safetensors"
        ))
        .display()
        .to_string()
}

pub fn input() -> String {
    root()
        .join("crates/lumen-cli/tests/data/two_images.npy")
        .display()
        .to_string()
}

/// Run the binary from a scratch folder, so that default output folders
/// (`lumen-out/`) never land in the source tree.
pub fn lumen(args: &[&str]) -> Output {
    let scratch = tempfile::Builder::new()
        .prefix("lumen-cli-cwd-")
        .tempdir()
        .expect("scratch folder");
    Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(args)
        .current_dir(scratch.path())
        .output()
        .expect("lumen runs")
}

/// `lumen explain` on a fixture model (10 classes) with the two-image input.
pub fn explain(model: &str, extra: &[&str]) -> Output {
    on_fixture_input(model, "explain", extra)
}

/// `lumen COMMAND` on a fixture `model` (10 classes) with the two-image input.
pub fn on_fixture_input(model: &str, command: &str, extra: &[&str]) -> Output {
    let w = weights(model);
    let i = input();
    let mut args = vec![
        command,
        "--model",
        model,
        "--num-classes",
        "10",
        "--weights",
        &w,
        "--input-npy",
        &i,
    ];
    args.extend_from_slice(extra);
    lumen(&args)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scratch folder `name` with `count` generated shape images `{prefix}{i}.png`.
pub fn shape_folder(name: &str, seed: u64, count: u64, prefix: &str) -> Scratch {
    image_folder(name, count, |i| {
        let image = lumen_models::shapes::shape_sample(seed, i).image;
        (format!("{prefix}{i}.png"), image)
    })
}

/// A scratch folder `name` with `count` generated multi-object scenes `scene{i}.png`.
pub fn scene_folder(name: &str, seed: u64, count: u64) -> Scratch {
    image_folder(name, count, |i| {
        let image = lumen_models::shapes::shape_scene(seed, i).image;
        (format!("scene{i}.png"), image)
    })
}

fn image_folder(
    name: &str,
    count: u64,
    image: impl Fn(u64) -> (String, image::RgbImage),
) -> Scratch {
    let folder = tmp(name);
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..count {
        let (file, picture) = image(i);
        picture.save(folder.join(file)).unwrap();
    }
    folder
}

/// A path in the system's temporary folder, unique to this test process, for a file
/// or folder that a test writes. Whatever is there is removed when it is dropped, so a
/// test run leaves nothing behind; hold it until the test no longer reads the path.
pub fn tmp(name: &str) -> Scratch {
    Scratch(std::env::temp_dir().join(format!("lumen-cli-{}-{name}", std::process::id())))
}

pub struct Scratch(PathBuf);

impl Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<OsStr> for Scratch {
    fn as_ref(&self) -> &OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.is_dir() {
            std::fs::remove_dir_all(&self.0).ok();
        } else {
            std::fs::remove_file(&self.0).ok();
        }
    }
}
