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
            let flows = flow::class_token_flows(&layers_of_image, n)?;
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
    //! One problem per input token, the problems spread over threads.
    //!
    //! Two exact reductions take two layers' edges off each problem (half of a 4-layer
    //! graph, a sixth of a 12-layer one): no flow reaches the
    //! other input tokens (nothing enters level 0) or the other top tokens (nothing
    //! leaves the top), so each problem's source is one node with the edges of its own
    //! column of `A_0`, and the last layer keeps only its edges into the class token.
    //! Solved with Dinic's algorithm on a compressed adjacency: levels are distances
    //! *to the sink* (a BFS over reversed residual edges), so every step of the search
    //! moves towards the sink, and one search sends flow down as many paths as its
    //! limit allows.

    use std::collections::VecDeque;

    use lumen_core::{LumenError, Result};

    /// Residual capacities below this are treated as saturated.
    const EPS: f64 = 1e-12;

    /// The graph shared by every problem of an image: node 0 is the source, whose
    /// edges' capacities each problem sets.
    struct Graph {
        /// Per node, its edges are `start[u]..start[u + 1]`.
        start: Vec<usize>,
        to: Vec<u32>,
        /// The edge in the other direction.
        reverse: Vec<u32>,
        capacity: Vec<f64>,
        /// The source's edge to each level-1 token.
        source_edges: Vec<usize>,
        sink: usize,
        /// Distances to the sink before any flow, without the source: every problem's
        /// first phase, computed once.
        first_distances: Vec<usize>,
    }

    /// Buffers of one worker, reused across its problems.
    struct Work {
        /// The residual capacities, `capacity` between problems (restored through
        /// `touched` rather than copied whole).
        residual: Vec<f64>,
        touched: Vec<usize>,
        distance: Vec<usize>,
        next: Vec<usize>,
        queue: VecDeque<usize>,
    }

    impl Graph {
        /// `layers[l]` is the row-major `n x n` attention of layer `l` (at least one).
        fn new(layers: &[&[f32]], n: usize) -> Result<Self> {
            let depth = layers.len();
            // Node of token `t` at level `l` (1..=depth); 0 is the source.
            let node = |l: usize, t: usize| 1 + (l - 1) * n + t;
            let nodes = 1 + depth * n;
            let sink = node(depth, 0);
            let mut edges: Vec<(usize, usize, f64)> = Vec::new();
            for i in 0..n {
                edges.push((0, node(1, i), 0.0));
            }
            for (l, a) in layers.iter().enumerate().skip(1) {
                // Layer `l` joins level `l` to `l + 1`; the last only into the sink.
                let rows = if l + 1 == depth { 0..1 } else { 0..n };
                for i in rows {
                    for j in 0..n {
                        let c = a[i * n + j] as f64;
                        if c > 0.0 {
                            edges.push((node(l, j), node(l + 1, i), c));
                        }
                    }
                }
            }
            let mut degree = vec![0usize; nodes + 1];
            for &(u, v, _) in &edges {
                degree[u + 1] += 1;
                degree[v + 1] += 1;
            }
            for u in 0..nodes {
                degree[u + 1] += degree[u];
            }
            let start = degree;
            let mut fill = start.clone();
            let slots = 2 * edges.len();
            if u32::try_from(slots).is_err() {
                return Err(LumenError::InvalidArgument(format!(
                    "attention flow on {n} tokens and {depth} layers is a graph of {slots} edges, \
                     more than it can index (2^32): use rollout on inputs this large"
                )));
            }
            let (mut to, mut reverse, mut capacity) =
                (vec![0; slots], vec![0; slots], vec![0.0; slots]);
            let mut source_edges = Vec::with_capacity(n);
            for &(u, v, c) in &edges {
                let (forward, backward) = (fill[u], fill[v]);
                fill[u] += 1;
                fill[v] += 1;
                // u32 halves the memory the searches stream through; the graph of a
                // ViT-B/16 at 448 px (785 tokens, 12 layers) has 15 M edge slots.
                (to[forward], reverse[forward], capacity[forward]) = (v as u32, backward as u32, c);
                (to[backward], reverse[backward]) = (u as u32, forward as u32);
                if u == 0 {
                    source_edges.push(forward);
                }
            }
            let mut graph = Self {
                start,
                to,
                reverse,
                capacity,
                source_edges,
                sink,
                first_distances: vec![],
            };
            // A fresh work's residual is the capacities: the graph before any flow.
            let mut work = graph.work();
            graph.distances_to_sink(&mut work, false);
            graph.first_distances = work.distance;
            Ok(graph)
        }

        fn work(&self) -> Work {
            let nodes = self.start.len() - 1;
            Work {
                residual: self.capacity.clone(),
                touched: vec![],
                distance: vec![usize::MAX; nodes],
                next: vec![0; nodes],
                queue: VecDeque::with_capacity(nodes),
            }
        }

        /// Max flow from the source whose edges to level 1 have `source_capacity`.
        fn max_flow(&self, source_capacity: impl Iterator<Item = f64>, work: &mut Work) -> f64 {
            for &e in &work.touched {
                work.residual[e] = self.capacity[e];
            }
            work.touched.clear();
            let mut out_of_source = 0.0;
            for (&e, c) in self.source_edges.iter().zip(source_capacity) {
                work.residual[e] = c;
                work.touched.push(e);
                out_of_source += c;
            }
            // The first phase's distances are the graph's, the source's from its edges.
            work.distance.copy_from_slice(&self.first_distances);
            work.distance[0] = self
                .source_edges
                .iter()
                .filter(|&&e| work.residual[e] > EPS)
                .map(|&e| self.first_distances[self.to[e] as usize].saturating_add(1))
                .min()
                .unwrap_or(usize::MAX);
            let mut total = 0.0;
            let mut reaches = work.distance[0] != usize::MAX;
            while reaches {
                work.next
                    .copy_from_slice(&self.start[..self.start.len() - 1]);
                loop {
                    let pushed = self.push(0, f64::INFINITY, work);
                    if pushed <= EPS {
                        break;
                    }
                    total += pushed;
                }
                // A saturated source has nothing more to send.
                reaches = total < out_of_source - EPS && self.distances_to_sink(work, true);
            }
            total
        }

        /// Residual distances to the sink (only up to the source's with
        /// `stop_at_source`); whether the source reaches the sink.
        fn distances_to_sink(&self, work: &mut Work, stop_at_source: bool) -> bool {
            work.distance.fill(usize::MAX);
            work.distance[self.sink] = 0;
            work.queue.clear();
            work.queue.push_back(self.sink);
            while let Some(v) = work.queue.pop_front() {
                for e in self.start[v]..self.start[v + 1] {
                    // `e` leaves v; its reverse enters v from `u`.
                    let u = self.to[e] as usize;
                    if work.distance[u] == usize::MAX
                        && work.residual[self.reverse[e] as usize] > EPS
                    {
                        work.distance[u] = work.distance[v] + 1;
                        if u == 0 && stop_at_source {
                            return true;
                        }
                        work.queue.push_back(u);
                    }
                }
            }
            work.distance[0] != usize::MAX
        }

        /// Sends at most `limit` from `u` towards the sink along edges one step closer.
        fn push(&self, u: usize, limit: f64, work: &mut Work) -> f64 {
            if u == self.sink {
                return limit;
            }
            let mut sent = 0.0;
            while work.next[u] < self.start[u + 1] {
                let e = work.next[u];
                let v = self.to[e] as usize;
                let room = work.residual[e];
                if room > EPS && work.distance[v].wrapping_add(1) == work.distance[u] {
                    let pushed = self.push(v, (limit - sent).min(room), work);
                    if pushed > 0.0 {
                        work.residual[e] -= pushed;
                        let back = self.reverse[e] as usize;
                        work.residual[back] += pushed;
                        work.touched.extend([e, back]);
                        sent += pushed;
                        if limit - sent <= EPS {
                            return sent;
                        }
                    }
                }
                work.next[u] += 1;
            }
            sent
        }
    }

    /// Max flow from each input token to the class token (index 0) of the last level.
    /// `layers[l]` is the row-major `n x n` mixed attention of layer `l`.
    pub fn class_token_flows(layers: &[&[f32]], n: usize) -> Result<Vec<f32>> {
        if layers.is_empty() || n == 0 {
            return Ok(vec![0.0; n]);
        }
        let graph = &Graph::new(layers, n)?;
        let first = layers[0];
        let threads = std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .min(n);
        let mut flows = vec![0.0f32; n];
        let per_thread = n.div_ceil(threads);
        std::thread::scope(|scope| {
            for (c, chunk) in flows.chunks_mut(per_thread).enumerate() {
                scope.spawn(move || {
                    let mut work = graph.work();
                    for (k, out) in chunk.iter_mut().enumerate() {
                        let j = c * per_thread + k;
                        // The source is input token j: its column of the first layer.
                        let column = (0..n).map(|i| first[i * n + j] as f64);
                        *out = graph.max_flow(column, &mut work) as f32;
                    }
                });
            }
        });
        Ok(flows)
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
            let flows = class_token_flows(&[&l0, &l1], 2).unwrap();
            // From token 0: 0->0 (0.5) then 0->0 (0.9): 0.5; 0->1 (0.2) then 1->0 (0.1): 0.1.
            assert!((flows[0] - 0.6).abs() < 1e-6, "{flows:?}");
            // From token 1: 1->0 (0.5) -> 0 (0.9) and 1->1 (0.8) -> 0 (0.1); top edges are
            // shared with nothing else in a single-source problem: 0.5 + 0.1.
            assert!((flows[1] - 0.6).abs() < 1e-6, "{flows:?}");
        }

        /// Edmonds-Karp on the whole layered graph (every level-0 token and every top
        /// token kept): what the pruned Dinic must equal.
        fn full_graph_flow(layers: &[Vec<f32>], n: usize, source: usize) -> f64 {
            let levels = layers.len() + 1;
            let nodes = levels * n;
            let mut capacity = vec![vec![0.0f64; nodes]; nodes];
            for (l, a) in layers.iter().enumerate() {
                for i in 0..n {
                    for j in 0..n {
                        capacity[l * n + j][(l + 1) * n + i] = a[i * n + j] as f64;
                    }
                }
            }
            let sink = (levels - 1) * n;
            let mut total = 0.0;
            loop {
                let mut parent = vec![usize::MAX; nodes];
                parent[source] = source;
                let mut queue = VecDeque::from([source]);
                while let Some(u) = queue.pop_front() {
                    for v in 0..nodes {
                        if parent[v] == usize::MAX && capacity[u][v] > EPS {
                            parent[v] = u;
                            queue.push_back(v);
                        }
                    }
                }
                if parent[sink] == usize::MAX {
                    return total;
                }
                let mut bottleneck = f64::INFINITY;
                let mut v = sink;
                while v != source {
                    bottleneck = bottleneck.min(capacity[parent[v]][v]);
                    v = parent[v];
                }
                let mut v = sink;
                while v != source {
                    capacity[parent[v]][v] -= bottleneck;
                    capacity[v][parent[v]] += bottleneck;
                    v = parent[v];
                }
                total += bottleneck;
            }
        }

        #[test]
        fn pruned_flows_equal_the_whole_graphs() {
            // Random row-normalised layers, a third of their entries zero, 1 to 4
            // layers: the pruning and the sink-side distances change no flow.
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut uniform = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f32 / (1u64 << 53) as f32
            };
            for (depth, n) in [(1, 3), (2, 4), (3, 5), (4, 6), (4, 9)] {
                let layers: Vec<Vec<f32>> = (0..depth)
                    .map(|_| {
                        let mut a: Vec<f32> = (0..n * n)
                            .map(|_| {
                                let x = uniform();
                                if x < 0.33 { 0.0 } else { x }
                            })
                            .collect();
                        for row in a.chunks_mut(n) {
                            let sum: f32 = row.iter().sum::<f32>().max(1e-6);
                            row.iter_mut().for_each(|x| *x /= sum);
                        }
                        a
                    })
                    .collect();
                let views: Vec<&[f32]> = layers.iter().map(Vec::as_slice).collect();
                let flows = class_token_flows(&views, n).unwrap();
                for (j, &flow) in flows.iter().enumerate() {
                    let expected = full_graph_flow(&layers, n, j);
                    assert!(
                        (flow as f64 - expected).abs() < 1e-6,
                        "depth {depth}, n {n}, token {j}: {flow} against {expected}"
                    );
                }
                assert!(flows.iter().any(|&f| f > 0.0), "{flows:?}");
            }
        }
    }
}
