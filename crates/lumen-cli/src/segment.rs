//! `lumen explain` on a segmentation model: a class over a region, the class map, an
//! uncertainty map.

use std::path::{Path, PathBuf};

use clap::Args;
use lumen::core::Region;
use lumen::{
    LumenError, Result, SegmentRegion, SegmentationOptions, SegmentationRequest, Uncertainty,
    UncertaintyScale, explain_segmentation,
};

use crate::args::{JsonOutput, check_methods, check_writable, choice};
use crate::explain::{ExplainArgs, RawWriter, lean};

/// Options of segmentation models (ignored by nothing: an error on a classifier).
#[derive(Args, Debug, Clone, Default)]
pub struct SegmentArgs {
    /// Segmentation: the pixels whose class logits are explained: `predicted` (where
    /// the model predicts the class; default), `whole`, a pixel `X,Y` of the model input
    /// (after resizing, see `lumen layers`), or
    /// a mask image (non-zero pixels; resized to the input).
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long, value_parser = choice::<Uncertainty>,
          help = "Segmentation: also compute an uncertainty map [one of: entropy, margin]")]
    pub uncertainty: Option<Uncertainty>,
    #[arg(long, default_value = "normalized", value_parser = choice::<UncertaintyScale>,
          help = "Segmentation: uncertainty scale [one of: normalized (entropy / ln C), raw (nats), minmax (per image, as AutoTimm)]")]
    pub uncertainty_scale: UncertaintyScale,
    /// Segmentation: write the uncertainty maps as float32 .npy [B,H,W] at input size.
    #[arg(long)]
    pub save_uncertainty: Option<PathBuf>,
}

impl SegmentArgs {
    /// On a classifier, segmentation options are a mistake worth saying.
    pub fn require_unused(&self) -> Result<()> {
        let given = [
            ("--region", self.region.is_some()),
            ("--uncertainty", self.uncertainty.is_some()),
            ("--save-uncertainty", self.save_uncertainty.is_some()),
        ];
        match given.iter().find(|(_, set)| *set) {
            Some((flag, _)) => Err(LumenError::InvalidArgument(format!(
                "{flag} applies to segmentation models (deeplabv3plus_*, fcn_*), not classifiers"
            ))),
            None => Ok(()),
        }
    }

    /// The region to explain, for inputs of `size` `[height, width]`.
    fn region(&self, size: [usize; 2]) -> Result<SegmentRegion> {
        let Some(spec) = self.region.as_deref() else {
            return Ok(SegmentRegion::Predicted);
        };
        match spec {
            "predicted" => return Ok(SegmentRegion::Predicted),
            "whole" => return Ok(SegmentRegion::Whole),
            _ => {}
        }
        if let Some((x, y)) = spec.split_once(',') {
            let parse = |v: &str| v.trim().parse::<usize>().ok();
            return match (parse(x), parse(y)) {
                (Some(x), Some(y)) => Ok(SegmentRegion::Pixel { x, y }),
                _ => Err(LumenError::InvalidArgument(format!(
                    "--region {spec}: a pixel is two non-negative integers `X,Y`"
                ))),
            };
        }
        let region = mask_region(Path::new(spec), size)?;
        Ok(SegmentRegion::Region {
            bbox: region.bbox,
            region: Box::new(region),
        })
    }
}

/// A mask image as a region at the input size: non-zero pixels, nearest-neighbour
/// resized.
fn mask_region(path: &Path, [height, width]: [usize; 2]) -> Result<Region> {
    if !path.is_file() {
        return Err(LumenError::InvalidArgument(format!(
            "--region {}: not `predicted`, `whole`, `X,Y` or an existing mask image",
            path.display()
        )));
    }
    let image = image::open(path)
        .map_err(|e| LumenError::InvalidArgument(format!("--region {}: {e}", path.display())))?
        .to_luma8();
    let image = image::imageops::resize(
        &image,
        width as u32,
        height as u32,
        image::imageops::FilterType::Nearest,
    );
    let mask: Vec<bool> = image.pixels().map(|p| p.0[0] > 0).collect();
    if !mask.iter().any(|&m| m) {
        return Err(LumenError::InvalidArgument(format!(
            "--region {}: the mask is empty (no non-zero pixel)",
            path.display()
        )));
    }
    Region::from_mask(height, width, mask)
}

pub fn run(args: ExplainArgs) -> Result<()> {
    let mut explain = args.options();
    explain.polarity = false;
    args.figure.warn_unread(
        &["--colormap", "--alpha", "--verdicts"],
        "segmentation maps have no polarity view; nothing reads",
    );
    let verdicts = args.figure.verdicts(&args.model.model)?;
    check_methods(
        std::slice::from_ref(&args.method),
        &args.method_args,
        &explain,
        false,
    )?;
    for (flag, path) in [
        ("--save-raw", &args.save_raw),
        ("--save-uncertainty", &args.segmentation.save_uncertainty),
    ] {
        if let Some(path) = path {
            check_writable(flag, path)?;
        }
    }
    if args.segmentation.save_uncertainty.is_some() && args.segmentation.uncertainty.is_none() {
        return Err(LumenError::InvalidArgument(
            "--save-uncertainty needs --uncertainty entropy|margin".into(),
        ));
    }
    explain.cache = args.cache.open(&args.model)?;
    let model = args.model.load_segmentor()?;
    explain.cautions = args.figure.cautions_at(
        &verdicts,
        args.method_args.layer.as_deref(),
        &model.model,
        &args.method,
    );
    args.method_args
        .warn_drowning_noise(std::slice::from_ref(&args.method), &model.data_config);
    let plan = args.input.plan(&model)?;
    let size = plan.input_size();
    let region = args.segmentation.region(size)?;
    let classes = &args.method_args.target_class;
    let targets = match (classes.len(), &region) {
        (0, SegmentRegion::Predicted) => None,
        (0, _) => {
            return Err(LumenError::InvalidArgument(
                "--region other than `predicted` needs --target-class".into(),
            ));
        }
        _ => Some(
            crate::args::per_input(classes.clone(), plan.len(), "--target-class")?
                .into_iter()
                .map(|c| SegmentationRequest::new(c, region.clone()))
                .collect::<Vec<_>>(),
        ),
    };
    let mut options = SegmentationOptions {
        explain,
        uncertainty: args.segmentation.uncertainty,
        scale: args.segmentation.uncertainty_scale,
    };
    let mut raw = RawWriter::create(args.save_raw.as_deref(), size, args.grid)?;
    let mut uncertainty = args
        .segmentation
        .save_uncertainty
        .as_deref()
        .map(lumen::NpyRowWriter::create)
        .transpose()?;
    let task = lumen::TaskModel::task(&model);
    let mut results = vec![];
    plan.for_each_chunk(
        lumen::TaskModel::device(&model),
        std::slice::from_ref(&args.method),
        (&args.method, args.print.quiet),
        |chunk| {
            options.explain.targets = crate::args::targets_at(&targets, &chunk.positions);
            let out = explain_segmentation(&model, &chunk.inputs, &options)?;
            raw.append(&out.explanation)?;
            if let (Some(writer), Some(maps)) = (&mut uncertainty, &out.uncertainty) {
                writer.append(&maps.to_vec()?, &maps.dims())?;
            }
            results.extend(out.results.into_iter().map(|r| lean(&task, r)));
            Ok(())
        },
    )?;
    crate::args::report_cache(
        options.explain.cache.as_deref(),
        results.len(),
        args.print.quiet,
    );
    let mut files: Vec<PathBuf> = results.iter().flat_map(|r| r.paths.clone()).collect();
    files.extend(raw.finish()?);
    if let Some(writer) = uncertainty {
        files.push(writer.finish(&size)?);
    }
    if args.print.json {
        JsonOutput {
            command: "explain",
            model: &model.name,
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: &results,
            files,
        }
        .print();
    } else {
        use lumen::Task;
        for r in &results {
            println!(
                "{}: {}, explained {} with {}",
                r.image,
                task.describe_prediction(&r.prediction),
                task.describe_request(&r.target),
                r.method
            );
            for p in &r.paths {
                println!("  wrote {}", p.display());
            }
        }
        for path in [&args.save_raw, &args.segmentation.save_uncertainty]
            .into_iter()
            .flatten()
        {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
