//! Vision Transformer as timm builds it (`timm.models.vision_transformer`): patch
//! embedding by a strided convolution, class token, learned position embedding,
//! pre-norm blocks with a fused `qkv` projection, final norm and a linear head on the
//! class token. Parameter names are timm's.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Distribution, Tensor};
use lumen_core::{Classifier, Device, ExplainableModel, LayerInfo, LayerKind, Tap};

/// The hyper-parameters of a timm ViT.
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    /// Square input size in pixels.
    pub img_size: usize,
    /// Square patch size in pixels.
    pub patch_size: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// Hidden width of the MLP as a multiple of `embed_dim`.
    pub mlp_ratio: f64,
    /// Number of output classes.
    pub num_classes: usize,
}

impl VitConfig {
    /// A ViT at 224 pixels with 16-pixel patches and MLP ratio 4.
    pub fn new(embed_dim: usize, depth: usize, num_heads: usize) -> Self {
        Self {
            img_size: 224,
            patch_size: 16,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            num_classes: 1000,
        }
    }

    /// Set the number of classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Patch grid `[rows, cols]`.
    pub fn grid(&self) -> [usize; 2] {
        let g = self.img_size / self.patch_size;
        [g, g]
    }

    /// Build the model with freshly initialised parameters.
    pub fn init(&self, device: &Device) -> VisionTransformer {
        let d = self.embed_dim;
        let [gh, gw] = self.grid();
        let hidden = (d as f64 * self.mlp_ratio) as usize;
        VisionTransformer {
            // timm's init: a zero position embedding leaves every patch alike to
            // attention at the start, and a small ViT trained from scratch stalls.
            cls_token: Param::from_tensor(Tensor::random(
                [1, 1, d],
                Distribution::Normal(0.0, 1e-6),
                device,
            )),
            pos_embed: Param::from_tensor(Tensor::random(
                [1, 1 + gh * gw, d],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([3, d], [self.patch_size, self.patch_size])
                    .with_stride([self.patch_size, self.patch_size])
                    .init(device),
            },
            blocks: (0..self.depth)
                .map(|_| VitBlock {
                    norm1: layer_norm(d, device),
                    attn: Attention {
                        qkv: LinearConfig::new(d, 3 * d).init(device),
                        proj: LinearConfig::new(d, d).init(device),
                        num_heads: self.num_heads,
                    },
                    norm2: layer_norm(d, device),
                    mlp: Mlp {
                        fc1: LinearConfig::new(d, hidden).init(device),
                        fc2: LinearConfig::new(hidden, d).init(device),
                    },
                })
                .collect(),
            norm: layer_norm(d, device),
            head: LinearConfig::new(d, self.num_classes).init(device),
            img_size: self.img_size,
            patch_size: self.patch_size,
        }
    }
}

fn layer_norm(d: usize, device: &Device) -> LayerNorm {
    // timm ViTs use eps 1e-6, not PyTorch's 1e-5.
    LayerNormConfig::new(d).with_epsilon(1e-6).init(device)
}

/// `patch_embed`: a convolution with kernel = stride = patch size.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    proj: Conv2d,
}

/// Multi-head self-attention with a fused `qkv` projection.
#[derive(Module, Debug)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn forward(&self, x: Tensor<3>, tap: &dyn Tap, name: &str) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let heads = self.num_heads;
        let head_dim = d / heads;
        // [B,N,3D] -> [3,B,heads,N,head_dim], as timm's reshape + permute(2, 0, 3, 1, 4).
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let q = qkv.clone().narrow(0, 0, 1).reshape([b, heads, n, head_dim]);
        let k = qkv.clone().narrow(0, 1, 1).reshape([b, heads, n, head_dim]);
        let v = qkv.narrow(0, 2, 1).reshape([b, heads, n, head_dim]);
        let scale = (head_dim as f64).powf(-0.5);
        let scores = q.mul_scalar(scale).matmul(k.swap_dims(2, 3));
        let probs = tap.visit(name, softmax(scores, 3));
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, n, d]);
        self.proj.forward(out)
    }
}

/// The two-layer MLP with exact (erf) GELU.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

/// The points inside each block a tap sees, by timm's module names in its order of
/// computation. `attn` is the attention probabilities `[B, heads, N, N]` (what rollout
/// reads; timm forms them inside `attn` without a module of their own), whereas a
/// hook on timm's `attn` module sees its output, which is `attn.proj` here. The
/// block's output (`blocks.N`) follows them.
const BLOCK_POINTS: [&str; 7] = [
    "norm1",
    "attn",
    "attn.proj",
    "norm2",
    "mlp.fc1",
    "mlp.act",
    "mlp.fc2",
];

/// A pre-norm transformer block.
#[derive(Module, Debug)]
pub struct VitBlock {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

/// A timm Vision Transformer with a class token.
#[derive(Module, Debug)]
pub struct VisionTransformer {
    cls_token: Param<Tensor<3>>,
    pos_embed: Param<Tensor<3>>,
    patch_embed: PatchEmbed,
    blocks: Vec<VitBlock>,
    norm: LayerNorm,
    head: Linear,
    img_size: usize,
    patch_size: usize,
}

impl VisionTransformer {
    /// The patch grid of the trained size.
    fn grid(&self) -> [usize; 2] {
        let g = self.img_size / self.patch_size;
        [g, g]
    }

    /// The patch grid of an `[height, width]` input (the patch convolution's floor).
    fn grid_at(&self, [height, width]: [usize; 2]) -> [usize; 2] {
        [height / self.patch_size, width / self.patch_size]
    }

    /// The position embedding for a `grid`: the trained one, or its patch part
    /// resampled as timm's `dynamic_img_size` does (`resample_abs_pos_embed`:
    /// antialiased bicubic, the class token's entry kept).
    fn pos_embed_for(&self, grid: [usize; 2]) -> Tensor<3> {
        let pos = self.pos_embed.val();
        let trained = self.grid();
        if grid == trained {
            return pos;
        }
        let [_, _, d] = pos.dims();
        let device = pos.device();
        let matrix = |to: usize, from: usize| {
            Tensor::<2>::from_data(
                burn::tensor::TensorData::new(antialiased_bicubic_weights(from, to), [to, from]),
                &device,
            )
        };
        let cls = pos.clone().narrow(1, 0, 1);
        // [1, gh0*gw0, D] -> [D, gh0, gw0], then rows and columns resampled separately.
        let patch = pos
            .narrow(1, 1, trained[0] * trained[1])
            .reshape([trained[0], trained[1], d])
            .permute([2, 0, 1]);
        let rows = matrix(grid[0], trained[0]).unsqueeze::<3>().matmul(patch);
        let both = rows.matmul(matrix(grid[1], trained[1]).transpose().unsqueeze::<3>());
        let patch = both.permute([1, 2, 0]).reshape([1, grid[0] * grid[1], d]);
        Tensor::cat(vec![cls, patch], 1)
    }

    fn token_kind(&self, grid: [usize; 2]) -> LayerKind {
        LayerKind::Tokens {
            grid,
            prefix_tokens: 1,
        }
    }
}

/// PyTorch's antialiased bicubic interpolation (`F.interpolate(mode="bicubic",
/// antialias=True)`, `align_corners=False`) as a `[to, from]` matrix of weights: a
/// Keys kernel with a = -0.5 whose support widens by the scale when shrinking.
fn antialiased_bicubic_weights(from: usize, to: usize) -> Vec<f32> {
    fn kernel(x: f64) -> f64 {
        let (a, x) = (-0.5, x.abs());
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    }
    let scale = from as f64 / to as f64;
    let (support, inverse) = match scale >= 1.0 {
        true => (2.0 * scale, 1.0 / scale),
        false => (2.0, 1.0),
    };
    let mut weights = vec![0f32; to * from];
    for i in 0..to {
        let center = scale * (i as f64 + 0.5);
        // C++ casts to int64 truncate toward zero, as here.
        let start = ((center - support + 0.5) as i64).max(0) as usize;
        let end = ((center + support + 0.5) as i64).min(from as i64) as usize;
        let row: Vec<f64> = (start..end)
            .map(|j| kernel((j as f64 - center + 0.5) * inverse))
            .collect();
        let total: f64 = row.iter().sum();
        for (j, w) in (start..end).zip(row) {
            weights[i * from + j] = (if total != 0.0 { w / total } else { w }) as f32;
        }
    }
    weights
}

impl ExplainableModel for VisionTransformer {
    type Output = Tensor<2>;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<2> {
        let patches = self.patch_embed.proj.forward(input);
        let [b, d, gh, gw] = patches.dims();
        // [B,D,gh,gw] -> [B,N,D] with row-major patch order, as timm's flatten(2).transpose(1, 2).
        let tokens = patches.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let tokens = tap.visit("patch_embed", tokens);
        let cls = self.cls_token.val().expand([b, 1, d]);
        let mut x = Tensor::cat(vec![cls, tokens], 1) + self.pos_embed_for([gh, gw]);
        for (i, block) in self.blocks.iter().enumerate() {
            // timm's module names, in its order of computation (see `BLOCK_POINTS`).
            let at = |point: &str| format!("blocks.{i}.{point}");
            let normed = tap.visit(&at("norm1"), block.norm1.forward(x.clone()));
            let attended = block.attn.forward(normed, tap, &at("attn"));
            x = x + tap.visit(&at("attn.proj"), attended);
            let normed = tap.visit(&at("norm2"), block.norm2.forward(x.clone()));
            let hidden = tap.visit(&at("mlp.fc1"), block.mlp.fc1.forward(normed));
            let hidden = tap.visit(&at("mlp.act"), gelu(hidden));
            x = x + tap.visit(&at("mlp.fc2"), block.mlp.fc2.forward(hidden));
            x = tap.visit(&format!("blocks.{i}"), x);
        }
        let x = tap.visit("norm", self.norm.forward(x));
        let cls_out = x.narrow(1, 0, 1).reshape([b, d]);
        tap.visit("head", self.head.forward(cls_out))
    }

    fn layers(&self) -> Vec<LayerInfo> {
        self.layers_at([self.img_size, self.img_size])
    }

    /// The token grids follow the input size (timm's `dynamic_img_size`).
    fn layers_at(&self, size: [usize; 2]) -> Vec<LayerInfo> {
        let grid = self.grid_at(size);
        let mut layers = vec![LayerInfo::new(
            "patch_embed",
            LayerKind::Tokens {
                grid,
                prefix_tokens: 0,
            },
        )];
        for (i, block) in self.blocks.iter().enumerate() {
            for point in BLOCK_POINTS {
                let kind = match point {
                    "attn" => LayerKind::Attention {
                        heads: block.attn.num_heads,
                        grid,
                        prefix_tokens: 1,
                    },
                    _ => self.token_kind(grid),
                };
                layers.push(LayerInfo::new(format!("blocks.{i}.{point}"), kind));
            }
            layers.push(LayerInfo::new(format!("blocks.{i}"), self.token_kind(grid)));
        }
        layers.push(LayerInfo::new("norm", self.token_kind(grid)));
        layers.push(LayerInfo::new("head", LayerKind::Vector));
        layers
    }

    /// pytorch-grad-cam's recommendation for ViTs: the last block's `norm1`.
    fn default_layer(&self) -> String {
        format!("blocks.{}.norm1", self.blocks.len().saturating_sub(1))
    }

    fn input_shape(&self) -> [usize; 3] {
        [3, self.img_size, self.img_size]
    }

    /// Any size of at least one patch: the position embeddings are resampled to the
    /// grid, as timm's `dynamic_img_size=True` does.
    fn min_input_side(&self) -> Option<usize> {
        Some(self.patch_size)
    }
}

impl Classifier for VisionTransformer {
    fn num_classes(&self) -> usize {
        self.head.weight.dims()[1]
    }
}
