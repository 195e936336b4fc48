//! The explanation cache in the calls that explain given images (`explain_prediction`,
//! `explain_with`, `compare_methods`, `write_report`, `explain_detection`'s boxes):
//! keys from the image as the model sees it, explain's cached path and the per-row one
//! of detections. `explain_batch_with` keys by the files' bytes instead (see
//! [`crate::api`]).

use lumen_core::{ExplainableModel, LumenError, Result, Tensor, to_host};
use lumen_methods::{Explanation, Method};
use lumen_report::Map;

use crate::api::{
    Drawn, ExplainOptions, ExplanationResult, PredictionOf, RequestOf, ResultOf, TaskModel,
    explain_and_draw_uncached, method_options, raw_maps,
};
use crate::cache::{Attribution, CacheRecord, CachedExplanation, ExplanationCache};
use crate::inputs::Inputs;

/// Each image's part of a cache key: its shape and normalised values, the input as the
/// model sees it (so that files, arrays and bundled images key alike).
pub(crate) fn input_rows(tensor: &Tensor<4>) -> Result<Vec<Vec<u8>>> {
    let [b, c, h, w] = tensor.dims();
    let values = to_host(tensor.clone())?;
    let per_image = c * h * w;
    Ok((0..b)
        .map(|i| {
            let mut bytes = format!("[{c},{h},{w}]\n").into_bytes();
            bytes.extend(
                values[i * per_image..(i + 1) * per_image]
                    .iter()
                    .flat_map(|v| v.to_le_bytes()),
            );
            bytes
        })
        .collect())
}

/// The requested targets as key parts, one per image: the request's record, or
/// `predicted` when the task's default is explained. Refuses a count that does not
/// match the images, as the uncached path does.
pub(crate) fn requested_keys<R: CacheRecord>(
    targets: &Option<Vec<R>>,
    images: usize,
) -> Result<Vec<String>> {
    check_target_count(targets, images)?;
    Ok(match targets {
        None => vec!["predicted".to_string(); images],
        Some(t) => t.iter().map(|r| r.to_record().to_string()).collect(),
    })
}

/// One target per image when targets are given (before a chunk or a key picks its
/// share).
pub(crate) fn check_target_count<R>(targets: &Option<Vec<R>>, images: usize) -> Result<()> {
    match targets {
        Some(targets) if targets.len() != images => Err(LumenError::InvalidArgument(format!(
            "give one target per image (one class per image for a classifier): {} given for {images} images",
            targets.len()
        ))),
        _ => Ok(()),
    }
}

/// Each image's key under `settings` and its requested target (`rows` from
/// [`input_rows`], `requested` from [`requested_keys`]).
pub(crate) fn image_target_keys(
    cache: &ExplanationCache,
    settings: &str,
    rows: &[Vec<u8>],
    requested: &[String],
) -> Vec<String> {
    rows.iter()
        .zip(requested)
        .map(|(row, target)| cache.key(&format!("{settings}\ntarget {target}"), row))
        .collect()
}

/// The targets of the images at `positions`.
pub(crate) fn targets_at<R: Clone>(
    targets: &Option<Vec<R>>,
    positions: &[usize],
) -> Option<Vec<R>> {
    targets
        .as_ref()
        .map(|t| positions.iter().map(|&i| t[i].clone()).collect())
}

/// One row of an explanation on the host: what an entry keeps of it.
struct Row {
    /// The raw (unnormalised) map.
    heatmap: Map,
    /// The signed attribution (gradient methods).
    attribution: Option<Attribution>,
    /// Integrated Gradients' completeness gap.
    delta: Option<f32>,
}

/// An explanation's rows on the host.
fn split_rows(explanation: &Explanation) -> Result<Vec<Row>> {
    let maps = raw_maps(&explanation.heatmaps)?;
    let attributions = match &explanation.attributions {
        Some(a) => Some((a.dims(), to_host(a.clone())?)),
        None => None,
    };
    Ok(maps
        .into_iter()
        .enumerate()
        .map(|(k, heatmap)| Row {
            heatmap,
            attribution: attributions.as_ref().map(|([_, c, h, w], values)| {
                let size = c * h * w;
                Attribution {
                    dims: [*c, *h, *w],
                    values: values[k * size..(k + 1) * size].to_vec(),
                }
            }),
            delta: explanation.convergence_delta.as_ref().map(|d| d[k]),
        })
        .collect())
}

/// Rows (fresh or from the cache) joined into one explanation on `device`: the
/// attributions and deltas when every row has them. Maps of different sizes (a cache
/// written by another version) are an error naming the folder.
fn join_rows(
    rows: &[(&Map, Option<&Attribution>, Option<f32>)],
    device: &lumen_core::Device,
    cache: &ExplanationCache,
) -> Result<Explanation> {
    use lumen_core::burn::tensor::TensorData;
    let (width, height) = (rows[0].0.width, rows[0].0.height);
    if rows
        .iter()
        .any(|(map, ..)| [map.width, map.height] != [width, height])
    {
        return Err(LumenError::InvalidArgument(format!(
            "the cache {} holds maps of different sizes for one method and input size: \
             remove the folder and run again",
            cache.dir().display()
        )));
    }
    let maps: Vec<f32> = rows
        .iter()
        .flat_map(|(map, ..)| map.values.iter().copied())
        .collect();
    let mut explanation = Explanation::new(lumen_core::Heatmaps::new(Tensor::<3>::from_data(
        TensorData::new(maps, [rows.len(), height as usize, width as usize]),
        device,
    )));
    if let Some(first) = rows[0].1
        && rows
            .iter()
            .all(|(_, a, _)| a.is_some_and(|a| a.dims == first.dims))
    {
        let values: Vec<f32> = rows
            .iter()
            .flat_map(|(_, a, _)| a.map_or(&[][..], |a| &a.values).iter().copied())
            .collect();
        let [c, h, w] = first.dims;
        explanation = explanation.with_attributions(Tensor::<4>::from_data(
            TensorData::new(values, [rows.len(), c, h, w]),
            device,
        ));
    }
    if rows.iter().all(|(.., delta)| delta.is_some()) {
        explanation = explanation
            .with_convergence_delta(rows.iter().filter_map(|(.., delta)| *delta).collect());
    }
    Ok(explanation)
}

/// [`explain_and_draw`] with a cache: the images without an entry are explained in one
/// call, their entries stored (the raw map, the signed attribution and the convergence
/// delta too, so that a rerun gives the same raw result), and then every image, fresh
/// or reused, is drawn from its entry by the same code. A rerun with every entry
/// present runs no model at all.
pub(crate) fn explain_through_cache<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    method: &dyn Method<T::Model>,
    options: &ExplainOptions<RequestOf<T>>,
    cache: &ExplanationCache,
) -> Result<(Explanation, Vec<Drawn<ResultOf<T>>>)>
where
    PredictionOf<T>: CacheRecord,
    RequestOf<T>: CacheRecord,
{
    if inputs.is_empty() {
        return Err(LumenError::InvalidArgument("no images to explain".into()));
    }
    model.model().check_input_shape(&inputs.tensor)?;
    let layer = method.layer(model.model());
    if let Some(layer) = &layer {
        model.model().check_layers(layer)?;
    }
    let name = method.name();
    let requested = requested_keys(&options.targets, inputs.len())?;
    let settings = format!(
        "explain\nmethod {name}\nlayer {layer:?}\noptions {:?}\npreprocessing {:?}\npolarity {}",
        method_options(model, &options.method_options),
        model.data_config(),
        options.polarity
    );
    let keys = image_target_keys(cache, &settings, &input_rows(&inputs.tensor)?, &requested);
    let mut entries: Vec<Option<CachedExplanation<PredictionOf<T>, RequestOf<T>>>> =
        keys.iter().map(|key| cache.get(key)).collect();
    let missing: Vec<usize> = (0..inputs.len())
        .filter(|&i| entries[i].is_none())
        .collect();
    if !missing.is_empty() {
        let subset = inputs.select(&missing)?;
        let quiet = ExplainOptions {
            targets: targets_at(&options.targets, &missing),
            save_dir: None,
            cache: None,
            ..options.clone()
        };
        let (explanation, drawn) = explain_and_draw_uncached(model, &subset, method, &quiet, None)?;
        for ((d, row), &i) in drawn
            .into_iter()
            .zip(split_rows(&explanation)?)
            .zip(&missing)
        {
            let entry = CachedExplanation {
                prediction: d.result.prediction,
                target: d.result.target,
                layer: d.result.layer,
                convergence_delta: row.delta,
                title: d.title,
                heatmap: row.heatmap,
                signed: d.signed,
                attributions: row.attribution,
            };
            cache.put(&keys[i], &entry)?;
            entries[i] = Some(entry);
        }
    }
    let entries: Vec<CachedExplanation<_, _>> = entries
        .into_iter()
        .map(|e| e.expect("every missing entry was computed"))
        .collect();
    // Joined before any figure is drawn: a damaged cache fails before writing.
    let rows: Vec<_> = entries
        .iter()
        .map(|e| (&e.heatmap, e.attributions.as_ref(), e.convergence_delta))
        .collect();
    let explanation = join_rows(&rows, model.device(), cache)?;
    let task = model.task();
    let mut explained = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let result = ExplanationResult {
            image: inputs.names[i].clone(),
            prediction: entry.prediction.clone(),
            target: entry.target.clone(),
            method: name.clone(),
            layer: entry.layer.clone(),
            convergence_delta: entry.convergence_delta,
            paths: vec![],
            heatmap: entry.heatmap.normalized(),
        };
        explained.push(Drawn {
            result,
            title: entry.title.clone(),
            signed: entry.signed.clone(),
        });
    }
    crate::api::draw_explained(&task, inputs, &mut explained, options)?;
    Ok((explanation, explained))
}

/// An explanation of `keys.len()` independent rows (one box of one image each), taken
/// row by row from the cache where it holds one; the missing rows are explained in one
/// call of `explain_missing` (given their indices) and stored. Each entry keeps the
/// row's raw map, its signed attribution and its convergence delta, so the result
/// equals the uncached call's.
pub(crate) fn rows_through_cache(
    cache: &ExplanationCache,
    keys: &[String],
    device: &lumen_core::Device,
    explain_missing: impl FnOnce(&[usize]) -> Result<Explanation>,
) -> Result<Explanation> {
    /// An entry's header; its values are the map's, then the attribution's.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Header {
        map: [u32; 2],
        attribution: Option<[usize; 3]>,
        delta: Option<f32>,
    }
    let mut rows: Vec<Option<Row>> = keys
        .iter()
        .map(|key| {
            let (header, mut values) = cache.get_record(key)?;
            let header: Header = serde_json::from_value(header).ok()?;
            let [width, height] = header.map;
            let pixels = width as usize * height as usize;
            let attribution_values = header.attribution.map_or(0, |[c, h, w]| c * h * w);
            if values.len() != pixels + attribution_values {
                return None;
            }
            let attribution = header.attribution.map(|dims| Attribution {
                dims,
                values: values.split_off(pixels),
            });
            Some(Row {
                heatmap: Map::new(values, width, height),
                attribution,
                delta: header.delta,
            })
        })
        .collect();
    let missing: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].is_none()).collect();
    if !missing.is_empty() {
        let explanation = explain_missing(&missing)?;
        for (row, &r) in split_rows(&explanation)?.into_iter().zip(&missing) {
            let header = serde_json::to_value(Header {
                map: [row.heatmap.width, row.heatmap.height],
                attribution: row.attribution.as_ref().map(|a| a.dims),
                delta: row.delta,
            })
            .map_err(|e| LumenError::InvalidArgument(format!("cache entry: {e}")))?;
            let mut values = row.heatmap.values.clone();
            values.extend(
                row.attribution
                    .iter()
                    .flat_map(|a| a.values.iter().copied()),
            );
            cache.put_record(&keys[r], &header, &values)?;
            rows[r] = Some(row);
        }
    }
    let rows: Vec<_> = rows
        .iter()
        .flatten()
        .map(|row| (&row.heatmap, row.attribution.as_ref(), row.delta))
        .collect();
    join_rows(&rows, device, cache)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::api::{compare_methods, explain_with};
    use lumen_core::Device;
    use lumen_core::Target;
    use lumen_methods::{MethodOptions, by_name};
    use lumen_models::shapes::shape_samples;
    use lumen_models::{LoadedModel, ZooModel};
    use lumen_report::Layout;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// Three shapes images for the bundled CNN.
    fn model_and_inputs() -> (LoadedModel, Inputs) {
        let device = Device::flex();
        let model = LoadedModel::bundled("shapes-cnn", &device).unwrap();
        let samples = shape_samples(9, 0, 3);
        let inputs = Inputs::from_images(
            samples.into_iter().map(|s| s.image).collect(),
            vec!["a".into(), "b".into(), "c".into()],
            &model.data_config,
            &device,
        )
        .unwrap();
        (model, inputs)
    }

    fn temp_cache(name: &str) -> (PathBuf, Arc<ExplanationCache>) {
        let dir = std::env::temp_dir().join(format!("lumen-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let cache = ExplanationCache::open(&dir, "shapes-cnn test".into()).unwrap();
        (dir, Arc::new(cache))
    }

    /// A method that counts the images it explains.
    struct Counting<'a> {
        inner: Box<dyn Method<ZooModel>>,
        images: &'a Cell<usize>,
    }

    impl Method<ZooModel> for Counting<'_> {
        fn name(&self) -> String {
            self.inner.name()
        }
        fn layer(&self, model: &ZooModel) -> Option<String> {
            self.inner.layer(model)
        }
        fn scores_the_input_itself(&self) -> bool {
            self.inner.scores_the_input_itself()
        }
        fn explain(
            &self,
            model: &ZooModel,
            input: Tensor<4>,
            target: &dyn Target<Tensor<2>>,
        ) -> Result<Explanation> {
            self.images.set(self.images.get() + input.dims()[0]);
            self.inner.explain(model, input, target)
        }
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// A cached explain gives back what the uncached one computes (results, raw maps,
    /// attributions, convergence deltas), explains only the images missing from the
    /// cache, and runs no model at all when every image is there.
    #[test]
    fn explain_through_the_cache_equals_the_computation_and_skips_the_model() {
        let (model, inputs) = model_and_inputs();
        let (dir, cache) = temp_cache("explain-cache");
        let explained = Cell::new(0);
        for name in ["ig", "gradcam"] {
            let method = Counting {
                inner: by_name::<ZooModel>(
                    name,
                    &MethodOptions {
                        steps: 8,
                        ..MethodOptions::default()
                    },
                )
                .unwrap(),
                images: &explained,
            };
            let options = ExplainOptions {
                method: name.into(),
                polarity: true,
                ..ExplainOptions::default()
            };
            let (plain, plain_results) = explain_with(&model, &inputs, &method, &options).unwrap();
            let cached_options = ExplainOptions {
                cache: Some(cache.clone()),
                ..options.clone()
            };
            // Images 0 and 2 first: image 1 is the only one left for the full run.
            let first_two = inputs.select(&[0, 2]).unwrap();
            explain_with(&model, &first_two, &method, &cached_options).unwrap();
            explained.set(0);
            let (through, results) =
                explain_with(&model, &inputs, &method, &cached_options).unwrap();
            assert_eq!(explained.get(), 1, "{name}: only image 1 is explained");
            explained.set(0);
            let (again, again_results) =
                explain_with(&model, &inputs, &method, &cached_options).unwrap();
            assert_eq!(
                explained.get(),
                0,
                "{name}: every image came from the cache"
            );
            for (e, r) in [(&through, &results), (&again, &again_results)] {
                assert!(
                    max_diff(
                        &e.heatmaps.to_vec().unwrap(),
                        &plain.heatmaps.to_vec().unwrap()
                    ) < 1e-5,
                    "{name}: raw maps"
                );
                assert_eq!(e.attributions.is_some(), plain.attributions.is_some());
                if let (Some(a), Some(b)) = (&e.attributions, &plain.attributions) {
                    assert!(
                        max_diff(&to_host(a.clone()).unwrap(), &to_host(b.clone()).unwrap()) < 1e-5
                    );
                }
                assert_eq!(
                    e.convergence_delta.as_ref().map(Vec::len),
                    plain.convergence_delta.as_ref().map(Vec::len)
                );
                for (x, y) in r.iter().zip(&plain_results) {
                    assert_eq!(
                        (&x.image, &x.prediction, x.target),
                        (&y.image, &y.prediction, y.target)
                    );
                    assert!(max_diff(&x.heatmap.values, &y.heatmap.values) < 1e-5);
                }
            }
            // The rerun gives back exactly what the first cached run gave.
            assert_eq!(
                again.heatmaps.to_vec().unwrap(),
                through.heatmaps.to_vec().unwrap()
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }

    /// Seeded randomness (SmoothGrad's noise, IG's uniform baseline) is drawn per image
    /// from the image's own values: an image explained alone gets the map it gets in a
    /// batch, so a cache filled by one call serves any other; another seed changes it.
    #[test]
    fn an_image_gets_the_same_random_draws_in_any_batch() {
        let (model, inputs) = model_and_inputs();
        let last = inputs.select(&[2]).unwrap();
        for (name, baseline) in [
            ("smoothgrad", lumen_methods::BaselineKind::Zeros),
            ("ig", lumen_methods::BaselineKind::Uniform),
        ] {
            let map = |inputs: &Inputs, seed: u64| {
                let options = ExplainOptions {
                    method: name.into(),
                    method_options: MethodOptions {
                        steps: 8,
                        noise_samples: 6,
                        baseline,
                        seed: Some(seed),
                        ..MethodOptions::default()
                    },
                    ..ExplainOptions::default()
                };
                let (explanation, _) =
                    crate::api::explain_prediction(&model, inputs, &options).unwrap();
                let values = explanation.heatmaps.to_vec().unwrap();
                let per_image = values.len() / inputs.len();
                values[values.len() - per_image..].to_vec()
            };
            let in_batch = map(&inputs, 3);
            assert!(max_diff(&map(&last, 3), &in_batch) < 1e-5, "{name}");
            assert!(
                max_diff(&map(&last, 4), &in_batch) > 1e-3,
                "{name}: the seed counts"
            );
        }
    }

    /// A cached comparison computes only the missing maps (a new image, a new method)
    /// and gives the maps of the uncached comparison.
    #[test]
    fn compare_through_the_cache_computes_only_what_is_missing() {
        let (model, inputs) = model_and_inputs();
        let (dir, cache) = temp_cache("compare-cache");
        let methods: Vec<String> = ["gradcam", "saliency", "gradcam++"]
            .map(String::from)
            .into();
        let plain = compare_methods(
            &model,
            &inputs,
            &methods,
            &ExplainOptions::default(),
            Layout::Horizontal,
        )
        .unwrap();
        let options = ExplainOptions {
            cache: Some(cache.clone()),
            ..ExplainOptions::default()
        };
        compare_methods(
            &model,
            &inputs.select(&[0, 1]).unwrap(),
            &methods[..2],
            &options,
            Layout::Horizontal,
        )
        .unwrap();
        assert_eq!((cache.hits(), cache.stored()), (0, 4));
        let through =
            compare_methods(&model, &inputs, &methods, &options, Layout::Horizontal).unwrap();
        // 4 of 9 maps reused; image 2's three and images 0 and 1's gradcam++ stored.
        assert_eq!((cache.hits(), cache.stored()), (4, 9));
        compare_methods(&model, &inputs, &methods, &options, Layout::Horizontal).unwrap();
        assert_eq!((cache.hits(), cache.stored()), (13, 9));
        for (x, y) in through.iter().zip(&plain) {
            assert_eq!((&x.prediction, x.target), (&y.prediction, y.target));
            for (a, b) in x.heatmaps.iter().zip(&y.heatmaps) {
                assert!(max_diff(&a.values, &b.values) < 1e-5, "{}", x.image);
            }
        }
        // Another target is another entry.
        let other = ExplainOptions {
            targets: Some(vec![0, 1, 2]),
            ..options.clone()
        };
        compare_methods(&model, &inputs, &methods[..1], &other, Layout::Horizontal).unwrap();
        assert_eq!(cache.stored(), 12);
        std::fs::remove_dir_all(dir).ok();
    }
}
