//! Attention methods for Vision Transformers: Attention Rollout and Attention Flow
//! (Abnar & Zuidema 2020) and gradient-weighted rollout. They read the attention
//! probabilities `[B,heads,N,N]` of every block through taps, and return raw maps on
//! the patch grid (the class token's row, patch columns).

use burn::tensor::{Tensor, TensorData};
use lumen_core::profile::stages::{BACKWARD, FORWARD};
use lumen_core::{
    ExplainableModel, GradientTap, Heatmaps, LayerKind, LumenError, Recorder, Result, TapTensor,
    Target,
};

use crate::method::{Explanation, Method};

/// How the heads of a layer are fused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HeadFusion {
    /// Mean over heads (the paper).
    #[default]
    Mean,
    /// Max over heads.
    Max,
    /// Min over heads.
    Min,
}

lumen_core::named_choices!(HeadFusion, "head fusion", { Mean => "mean", Max => "max", Min => "min" });

impl HeadFusion {
    fn fuse(self, attention: Tensor<4>) -> Tensor<3> {
        let [b, _, n, _] = attention.dims();
        let fused = match self {
            Self::Mean => attention.mean_dim(1),
            Self::Max => attention.max_dim(1),
            Self::Min => attention.min_dim(1),
        };
        fused.reshape([b, n, n])
    }
}

/// How rows are normalised after adding the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RolloutCompat {
    /// Divide each row by its sum (the paper: rows stay distributions).
    #[default]
    Paper,
    /// `a / a.sum(dim=-1)` as jacobgil/vit-explain writes it, which broadcasts the
    /// row sums along columns (divides column `j` by the sum of row `j`).
    VitExplain,
}

/// The attention layers of a model, in forward order, with the token layout for
/// `input` (a ViT's grid follows the input size).
fn attention_layers<M: ExplainableModel>(
    model: &M,
    input: &Tensor<4>,
) -> Result<(Vec<String>, [usize; 2], usize)> {
    let [_, _, h, w] = input.dims();
    attention_layers_at(model, [h, w])
}

/// [`attention_layers`] for an input of `[h, w]`.
fn attention_layers_at<M: ExplainableModel>(
    model: &M,
    [h, w]: [usize; 2],
) -> Result<(Vec<String>, [usize; 2], usize)> {
    let mut names = vec![];
    let mut layout = None;
    for layer in model.layers_at([h, w]) {
        if let LayerKind::Attention {
            grid,
            prefix_tokens,
            ..
        } = layer.kind
        {
            names.push(layer.name);
            layout = Some((grid, prefix_tokens));
        }
    }
    match layout {
        Some((grid, prefix)) => Ok((names, grid, prefix)),
        None => Err(LumenError::InvalidArgument(
            "attention methods need a model with attention layers (a ViT); this model has none"
                .into(),
        )),
    }
}

/// One forward recording the attention probabilities `[B,heads,N,N]` of `layers`.
fn recorded_attentions<M: ExplainableModel>(
    model: &M,
    input: Tensor<4>,
    layers: &[String],
) -> Vec<Tensor<4>> {
    let recorder = Recorder::new(layers.iter().cloned());
    let _ = {
        let _forward = lumen_core::profile::stage_on(FORWARD, &input.device());
        model.forward_tapped(input.without_autodiff(), &recorder)
    };
    layers
        .iter()
        .map(|l| {
            recorder
                .get(l)
                .and_then(TapTensor::rank4)
                .expect("the model visits every attention layer it lists")
        })
        .collect()
}

/// Zero the `ratio` lowest entries of each image's fused attention, except entry
/// (0, 0) (vit-explain's "don't drop the class token").
fn discard_lowest(fused: Tensor<3>, ratio: f32, keep_first: bool) -> Tensor<3> {
    let [b, n, _] = fused.dims();
    let k = ((n * n) as f32 * ratio) as usize;
    if k == 0 {
        return fused;
    }
    let flat = fused.reshape([b, n * n]);
    // A sort, not `topk`: cubecl's top-k unrolls a kernel over k at compile time, and
    // k is most of the n² entries here (a 0.9 discard on a ViT's 101 tokens compiled
    // for more than 10 minutes on wgpu); CubeCL sorts on the host, in milliseconds.
    let indices = flat.clone().argsort(1).narrow(1, 0, k);
    let mut mask = flat.zeros_like().scatter(
        1,
        indices.clone(),
        indices.ones_like().float(),
        burn::tensor::IndexingUpdateOp::Assign,
    );
    if keep_first {
        let first = Tensor::<2>::from_data(
            TensorData::new(
                (0..b * n * n)
                    .map(|i| if i % (n * n) == 0 { 0.0f32 } else { 1.0 })
                    .collect::<Vec<_>>(),
                [b, n * n],
            ),
            &flat.device(),
        );
        mask = mask * first;
    }
    (flat * (mask.neg() + 1.0)).reshape([b, n, n])
}

/// `result <- normalise((A + I) / 2) @ result` over layers, from identity.
fn roll(fused_layers: Vec<Tensor<3>>, compat: RolloutCompat) -> Tensor<3> {
    let [b, n, _] = fused_layers[0].dims();
    let device = fused_layers[0].device();
    let eye = Tensor::<2>::eye(n, &device)
        .reshape([1, n, n])
        .expand([b, n, n]);
    let mut result = eye.clone();
    for fused in fused_layers {
        let a = (fused + eye.clone()) / 2.0;
        let a = match compat {
            RolloutCompat::Paper => a.clone() / a.sum_dim(2),
            RolloutCompat::VitExplain => a.clone() / a.sum_dim(2).reshape([b, 1, n]),
        };
        result = a.matmul(result);
    }
    result
}

/// The class token's row over the patch tokens, on the grid `[B,gh,gw]`.
fn class_row(result: Tensor<3>, grid: [usize; 2], prefix: usize) -> Tensor<3> {
    let [b, _, _] = result.dims();
    result
        .narrow(1, 0, 1)
        .narrow(2, prefix, grid[0] * grid[1])
        .reshape([b, grid[0], grid[1]])
}

/// Attention Rollout (Abnar & Zuidema 2020): fuse heads, add the identity for the
/// residual connection, renormalise rows and multiply through the layers.
#[derive(Clone, Debug, Default)]
pub struct AttentionRollout {
    /// Head fusion.
    pub head_fusion: HeadFusion,
    /// Fraction of the lowest fused attentions set to zero per layer (0 disables).
    pub discard_ratio: f32,
    /// Row normalisation convention.
    pub compat: RolloutCompat,
}

impl<M: ExplainableModel> Method<M> for AttentionRollout {
    fn name(&self) -> String {
        "rollout".into()
    }

    fn check(&self, model: &M) -> Result<()> {
        let [_, h, w] = model.input_shape();
        attention_layers_at(model, [h, w]).map(|_| ())
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        _target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        model.check_input(&input)?;
        let (layers, grid, prefix) = attention_layers(model, &input)?;
        let fused = recorded_attentions(model, input, &layers)
            .into_iter()
            .map(|attention| {
                discard_lowest(self.head_fusion.fuse(attention), self.discard_ratio, true)
            })
            .collect();
        let result = roll(fused, self.compat);
        Ok(Explanation::new(Heatmaps::new(class_row(
            result, grid, prefix,
        ))))
    }
}

/// Gradient-weighted rollout (jacobgil/vit-explain `grad_rollout`): each layer's
/// attention is weighted by its gradient for the target, heads averaged, negatives
/// clipped, then rolled out as above.
#[derive(Clone, Debug, Default)]
pub struct GradRollout {
    /// Fraction of the lowest weighted attentions set to zero per layer.
    pub discard_ratio: f32,
    /// Row normalisation convention.
    pub compat: RolloutCompat,
}

impl<M: ExplainableModel> Method<M> for GradRollout {
    fn name(&self) -> String {
        "grad-rollout".into()
    }

    fn check(&self, model: &M) -> Result<()> {
        let [_, h, w] = model.input_shape();
        attention_layers_at(model, [h, w]).map(|_| ())
    }

    fn scores_the_input_itself(&self) -> bool {
        true
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        model.check_input(&input)?;
        let (layers, grid, prefix) = attention_layers(model, &input)?;
        let tap = GradientTap::new(layers.clone());
        let device = input.device();
        let output = {
            let _forward = lumen_core::profile::stage_on(FORWARD, &device);
            model.forward_tapped(input.without_autodiff(), &tap)
        };
        let grads = {
            let _backward = lumen_core::profile::stage_on(BACKWARD, &device);
            lumen_core::backward_if_tracked(&target.score(&output)?.sum())
        };
        let fused = layers
            .iter()
            .map(|l| {
                let attention = tap
                    .activation(l)
                    .and_then(TapTensor::rank4)
                    .expect("attention recorded");
                let gradient = grads
                    .as_ref()
                    .and_then(|grads| tap.gradient(l, grads))
                    .and_then(TapTensor::rank4)
                    .unwrap_or_else(|| attention.zeros_like());
                let weighted = HeadFusion::Mean.fuse(attention * gradient).clamp_min(0.0);
                discard_lowest(weighted, self.discard_ratio, false)
            })
            .collect();
        let result = roll(fused, self.compat);
        Ok(Explanation::new(Heatmaps::new(class_row(
            result, grid, prefix,
        ))))
    }
}

/// Attention Flow (Abnar & Zuidema 2020): the maximum flow from each input token to the
/// class token's output through the layered graph whose capacities are the
/// head-fused, residual-mixed, row-normalised attentions `(A + I) / 2`, normalised
/// over the input tokens as the paper's `compute_flows` does.
#[derive(Clone, Debug, Default)]
pub struct AttentionFlow {
    /// Head fusion.
    pub head_fusion: HeadFusion,
}

impl<M: ExplainableModel> Method<M> for AttentionFlow {
    fn name(&self) -> String {
        "attention-flow".into()
    }

    fn check(&self, model: &M) -> Result<()> {
        let [_, h, w] = model.input_shape();
        attention_layers_at(model, [h, w]).map(|_| ())
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        _target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        model.check_input(&input)?;
        let (layers, grid, prefix) = attention_layers(model, &input)?;
        let [b, _, _, _] = input.dims();
        let mut per_layer = vec![];
        let mut n = 0;
        for attention in recorded_attentions(model, input.clone(), &layers) {
            let fused = self.head_fusion.fuse(attention);
            n = fused.dims()[1];
            let eye = Tensor::<2>::eye(n, &fused.device()).reshape([1, n, n]);
            let mixed = (fused + eye) / 2.0;
            let mixed = mixed.clone() / mixed.sum_dim(2);
            per_layer.push(lumen_core::to_host(mixed)?);
        }
        let patches = grid[0] * grid[1];
        let mut maps = Vec::with_capacity(b * patches);
        for image in 0..b {
            let layers_of_image: Vec<&[f32]> = per_layer
                .iter()
                .map(|v| &v[image * n * n..(image + 1) * n * n])
                .collect();
            let flows = flow::class_token_flows(&layers_of_image, n);
            // The paper normalises each output token's inflows over all input tokens.
            let total: f32 = flows.iter().sum::<f32>().max(f32::MIN_POSITIVE);
            maps.extend(flows[prefix..prefix + patches].iter().map(|f| f / total));
        }
        let maps = Tensor::<3>::from_data(
            TensorData::new(maps, [b, grid[0], grid[1]]),
            &input.device(),
        );
        Ok(Explanation::new(Heatmaps::new(maps)))
    }
}

mod flow {
    //! Maximum flow in the layered attention graph.
    //!
    //! Nodes are the tokens at each of the `L + 1` levels; the edge from token `j` at
    //! level `l` to token `i` at level `l + 1` has capacity `A_l[i, j]`. The flow of
    //! input token `j` is the max flow from node `(0, j)` to the class token at the top.
    //! Solved with Dinic's algorithm (BFS levels, DFS blocking flows), one problem per
    //! input token, the problems spread over threads.

    use std::collections::VecDeque;

    struct Graph {
        /// Per node: outgoing edge indices.
        adjacency: Vec<Vec<usize>>,
        to: Vec<usize>,
        capacity: Vec<f64>,
    }

    impl Graph {
        fn new(nodes: usize) -> Self {
            Self {
                adjacency: vec![vec![]; nodes],
                to: vec![],
                capacity: vec![],
            }
        }

        fn add_edge(&mut self, from: usize, to: usize, capacity: f64) {
            self.adjacency[from].push(self.to.len());
            self.to.push(to);
            self.capacity.push(capacity);
            self.adjacency[to].push(self.to.len());
            self.to.push(from);
            self.capacity.push(0.0);
        }

        fn max_flow(&self, source: usize, sink: usize) -> f64 {
            const EPS: f64 = 1e-12;
            let nodes = self.adjacency.len();
            let mut residual = self.capacity.clone();
            let mut total = 0.0;
            loop {
                let mut level = vec![usize::MAX; nodes];
                level[source] = 0;
                let mut queue = VecDeque::from([source]);
                while let Some(u) = queue.pop_front() {
                    for &e in &self.adjacency[u] {
                        let v = self.to[e];
                        if residual[e] > EPS && level[v] == usize::MAX {
                            level[v] = level[u] + 1;
                            queue.push_back(v);
                        }
                    }
                }
                if level[sink] == usize::MAX {
                    return total;
                }
                let mut next = vec![0usize; nodes];
                loop {
                    let pushed = self.push(
                        source,
                        sink,
                        f64::INFINITY,
                        &level,
                        &mut next,
                        &mut residual,
                    );
                    if pushed <= EPS {
                        break;
                    }
                    total += pushed;
                }
            }
        }

        fn push(
            &self,
            u: usize,
            sink: usize,
            limit: f64,
            level: &[usize],
            next: &mut [usize],
            residual: &mut [f64],
        ) -> f64 {
            if u == sink {
                return limit;
            }
            while next[u] < self.adjacency[u].len() {
                let e = self.adjacency[u][next[u]];
                let v = self.to[e];
                if residual[e] > 1e-12 && level[v] == level[u] + 1 {
                    let pushed = self.push(v, sink, limit.min(residual[e]), level, next, residual);
                    if pushed > 0.0 {
                        residual[e] -= pushed;
                        residual[e ^ 1] += pushed;
                        return pushed;
                    }
                }
                next[u] += 1;
            }
            0.0
        }
    }

    /// Max flow from each input token to the class token (index 0) of the last level.
    /// `layers[l]` is the row-major `n x n` mixed attention of layer `l`.
    pub fn class_token_flows(layers: &[&[f32]], n: usize) -> Vec<f32> {
        let levels = layers.len() + 1;
        let node = |level: usize, token: usize| level * n + token;
        let mut graph = Graph::new(levels * n);
        for (l, a) in layers.iter().enumerate() {
            for i in 0..n {
                for j in 0..n {
                    let c = a[i * n + j] as f64;
                    if c > 0.0 {
                        graph.add_edge(node(l, j), node(l + 1, i), c);
                    }
                }
            }
        }
        let sink = node(levels - 1, 0);
        let graph = &graph;
        let threads = std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .min(n.max(1));
        let mut flows = vec![0.0f32; n];
        std::thread::scope(|scope| {
            let chunks: Vec<_> = flows
                .chunks_mut(n.div_ceil(threads))
                .enumerate()
                .map(|(c, chunk)| {
                    let start = c * n.div_ceil(threads);
                    scope.spawn(move || {
                        for (k, out) in chunk.iter_mut().enumerate() {
                            *out = graph.max_flow(node(0, start + k), sink) as f32;
                        }
                    })
                })
                .collect();
            for handle in chunks {
                handle.join().expect("flow worker");
            }
        });
        flows
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn max_flow_of_a_small_network() {
            // Two layers of 2 tokens: flows into class token 0 at the top.
            // Layer 0: a[i][j] edge j -> i. Layer 1 likewise.
            let l0 = [0.5f32, 0.5, 0.2, 0.8];
            let l1 = [0.9f32, 0.1, 0.3, 0.7];
            let flows = class_token_flows(&[&l0, &l1], 2);
            // From token 0: 0->0 (0.5) then 0->0 (0.9): 0.5; 0->1 (0.2) then 1->0 (0.1): 0.1.
            assert!((flows[0] - 0.6).abs() < 1e-6, "{flows:?}");
            // From token 1: 1->0 (0.5) -> 0 (0.9) and 1->1 (0.8) -> 0 (0.1); top edges are
            // shared with nothing else in a single-source problem: 0.5 + 0.1.
            assert!((flows[1] - 0.6).abs() < 1e-6, "{flows:?}");
        }
    }
}
