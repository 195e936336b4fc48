//! Where flex's convolution time goes, layer by layer: resnet18's convolutions at
//! 224 px, timed four ways on the default (flex) device, so that "is the gap to torch
//! ours or the kernel's?" and "would our own convolution pay?" have measured answers
//! (docs/performance.md, Which CPU backend):
//!
//! - `flex`: Burn's `conv2d` (tiled im2col + the `gemm` crate);
//! - `host`: a Caffe-style convolution written here, im2col straight from the NCHW
//!   rows and one `gemm` call per image into the NCHW output (no layout conversion,
//!   no scatter), images in parallel;
//! - `tensor ops`: im2col built from Burn tensor ops (stepped slices, stack) and one
//!   batched matmul, the variant that would keep autodiff for free;
//! - `winograd`: Winograd F(2x2, 3x3) on the same `gemm` (3x3 stride-1 layers only;
//!   its total uses flex's time for the other layers).
//!
//! ```text
//! cargo build --release -p lumen-cli -p lumen-benches --bins
//! target/release/conv_layers [--batch 8] [--repeats 5]
//! ```
//!
//! Each row checks that the variants agree with flex (max absolute difference) before
//! timing.

use std::time::Instant;

use clap::Parser;
use lumen::core::burn::tensor::module::conv2d;
use lumen::core::burn::tensor::ops::{ConvOptions, PadMode};
use lumen::core::burn::tensor::{Distribution, TensorData, s};
use lumen::core::{Device, Tensor};
use rayon::prelude::*;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

/// One convolution of resnet18: channels in and out, input size, kernel, stride, and
/// how many times the network runs it.
struct Layer {
    channels_in: usize,
    channels_out: usize,
    size: usize,
    kernel: usize,
    stride: usize,
    count: usize,
}

#[rustfmt::skip]
const RESNET18: [Layer; 8] = [
    Layer { channels_in: 3, channels_out: 64, size: 224, kernel: 7, stride: 2, count: 1 },
    Layer { channels_in: 64, channels_out: 64, size: 56, kernel: 3, stride: 1, count: 4 },
    Layer { channels_in: 64, channels_out: 128, size: 56, kernel: 3, stride: 2, count: 1 },
    Layer { channels_in: 128, channels_out: 128, size: 28, kernel: 3, stride: 1, count: 3 },
    Layer { channels_in: 128, channels_out: 256, size: 28, kernel: 3, stride: 2, count: 1 },
    Layer { channels_in: 256, channels_out: 256, size: 14, kernel: 3, stride: 1, count: 3 },
    Layer { channels_in: 256, channels_out: 512, size: 14, kernel: 3, stride: 2, count: 1 },
    Layer { channels_in: 512, channels_out: 512, size: 7, kernel: 3, stride: 1, count: 3 },
];

/// Output side of a square input under a `kernel x kernel` window with padding
/// `kernel / 2` (resnet's convolutions).
fn out_size(size: usize, kernel: usize, stride: usize) -> usize {
    (size + 2 * (kernel / 2) - kernel) / stride + 1
}

fn tensor_ops_conv(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, stride: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [o, _, k, _] = weight.dims();
    let pad = k / 2;
    let (oh, ow) = (out_size(h, k, stride), out_size(w, k, stride));
    let x = x.pad((pad, pad, pad, pad), PadMode::Constant(0.0));
    let mut shifted = Vec::with_capacity(k * k);
    for i in 0..k {
        for j in 0..k {
            let rows = i..i + (oh - 1) * stride + 1;
            let cols = j..j + (ow - 1) * stride + 1;
            shifted.push(x.clone().slice(s![.., .., rows;stride, cols;stride]));
        }
    }
    let columns: Tensor<3> = Tensor::stack::<5>(shifted, 2).reshape([n, c * k * k, oh * ow]);
    let weight: Tensor<3> = weight.reshape([1, o, c * k * k]);
    (weight.matmul(columns) + bias.reshape([1, o, 1])).reshape([n, o, oh, ow])
}

#[allow(clippy::too_many_arguments)]
fn host_conv(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    weight: &[f32],
    o: usize,
    k: usize,
    stride: usize,
    bias: &[f32],
) -> Vec<f32> {
    let pad = k / 2;
    let (oh, ow) = (out_size(h, k, stride), out_size(w, k, stride));
    let (depth, pixels) = (c * k * k, oh * ow);
    let mut out = vec![0f32; n * o * pixels];
    out.par_chunks_mut(o * pixels)
        .enumerate()
        .for_each(|(b, out)| {
            let image = &x[b * c * h * w..(b + 1) * c * h * w];
            let mut columns = vec![0f32; depth * pixels];
            for (row, column) in columns.chunks_mut(pixels).enumerate() {
                let (channel, ki, kj) = (row / (k * k), (row / k) % k, row % k);
                let plane = &image[channel * h * w..(channel + 1) * h * w];
                // Output columns whose input column falls inside the image: the rest
                // stay zero (the padding).
                let first = (pad.saturating_sub(kj)).div_ceil(stride);
                let last = ((w + pad).saturating_sub(kj)).div_ceil(stride).min(ow);
                for oy in 0..oh {
                    let Some(iy) = (oy * stride + ki).checked_sub(pad).filter(|&iy| iy < h) else {
                        continue;
                    };
                    let src = &plane[iy * w..(iy + 1) * w];
                    let dst = &mut column[oy * ow..(oy + 1) * ow];
                    if first >= last {
                        continue;
                    }
                    let start = first * stride + kj - pad;
                    if stride == 1 {
                        dst[first..last].copy_from_slice(&src[start..start + (last - first)]);
                    } else {
                        for (d, s) in dst[first..last]
                            .iter_mut()
                            .zip(src[start..].iter().step_by(stride))
                        {
                            *d = *s;
                        }
                    }
                }
            }
            for (channel, row) in out.chunks_mut(pixels).enumerate() {
                row.fill(bias[channel]);
            }
            // SAFETY: the three buffers have the sizes and row strides passed here.
            unsafe {
                gemm::gemm(
                    o,
                    pixels,
                    depth,
                    out.as_mut_ptr(),
                    1,
                    pixels as isize,
                    true,
                    weight.as_ptr(),
                    1,
                    depth as isize,
                    columns.as_ptr(),
                    1,
                    pixels as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    out
}

/// Winograd F(2x2, 3x3) for 3x3, stride 1, padding 1: each 4x4 input tile becomes 16
/// products of transformed values instead of 36 multiply-adds per 2x2 output
/// (Lavin & Gray, 2015): sixteen matrix products of [o, c] x [c, tiles].
fn winograd_conv(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    weight: &[f32],
    o: usize,
    bias: &[f32],
) -> Vec<f32> {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    // U[e][o][c] = G g G^T: each 3x3 filter becomes a 4x4 tile, laid out as 16 [o, c]
    // matrices so that each of the 16 products reads one.
    let mut u = vec![0f32; 16 * o * c];
    let transformed: Vec<[f32; 16]> = (0..o * c)
        .into_par_iter()
        .map(|filter| {
            let g = &weight[filter * 9..][..9];
            let mut t = [[0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, d) = (g[j], g[3 + j], g[6 + j]);
                t[0][j] = a;
                t[1][j] = 0.5 * (a + b + d);
                t[2][j] = 0.5 * (a - b + d);
                t[3][j] = d;
            }
            let mut tile = [0f32; 16];
            for (i, r) in t.iter().enumerate() {
                let row = [
                    r[0],
                    0.5 * (r[0] + r[1] + r[2]),
                    0.5 * (r[0] - r[1] + r[2]),
                    r[2],
                ];
                tile[i * 4..i * 4 + 4].copy_from_slice(&row);
            }
            tile
        })
        .collect();
    for (e, plane) in u.chunks_mut(o * c).enumerate() {
        for (value, tile) in plane.iter_mut().zip(&transformed) {
            *value = tile[e];
        }
    }
    let mut out = vec![0f32; n * o * h * w];
    // Work unit: consecutive tile rows (across images), about 384 tiles per unit.
    let total_rows = n * th;
    let unit_count = (total_rows * tw)
        .div_ceil(384)
        .max(rayon::current_num_threads())
        .min(total_rows);
    let rows_per_unit = total_rows.div_ceil(unit_count);
    let units: Vec<usize> = (0..total_rows).step_by(rows_per_unit).collect();
    // Units write disjoint output rows (each tile row of an image belongs to one unit),
    // which are not contiguous across channels, hence a shared pointer.
    struct SendPtr(*mut f32);
    // SAFETY: see above: no two units write the same element, and `out` outlives them.
    unsafe impl Sync for SendPtr {}
    unsafe impl Send for SendPtr {}
    let out_ptr = SendPtr(out.as_mut_ptr());
    let padded = 2 * tw + 2;
    units.par_iter().for_each(|&row0| {
        let out_ptr = &out_ptr;
        let rows = rows_per_unit.min(total_rows - row0);
        let count = rows * tw;
        let mut v = vec![0f32; 16 * c * count];
        let mut lines = vec![0f32; 4 * padded];
        let mut bd = vec![0f32; 4 * padded];
        for ic in 0..c {
            for r in 0..rows {
                let (b, ty) = ((row0 + r) / th, (row0 + r) % th);
                let plane = &x[(b * c + ic) * h * w..][..h * w];
                for (i, line) in lines.chunks_mut(padded).enumerate() {
                    line.fill(0.0);
                    if let Some(iy) = (2 * ty + i).checked_sub(1).filter(|&iy| iy < h) {
                        line[1..1 + w].copy_from_slice(&plane[iy * w..(iy + 1) * w]);
                    }
                }
                let (l0, rest) = lines.split_at(padded);
                let (l1, rest) = rest.split_at(padded);
                let (l2, l3) = rest.split_at(padded);
                let (b0, rest) = bd.split_at_mut(padded);
                let (b1, rest) = rest.split_at_mut(padded);
                let (b2, b3) = rest.split_at_mut(padded);
                for k in 0..padded {
                    b0[k] = l0[k] - l2[k];
                    b1[k] = l1[k] + l2[k];
                    b2[k] = l2[k] - l1[k];
                    b3[k] = l1[k] - l3[k];
                }
                for (i, row) in bd.chunks(padded).enumerate() {
                    let base = |j: usize| ((i * 4 + j) * c + ic) * count + r * tw;
                    let (e0, e1, e2, e3) = (base(0), base(1), base(2), base(3));
                    for t in 0..tw {
                        let a = &row[2 * t..2 * t + 4];
                        v[e0 + t] = a[0] - a[2];
                        v[e1 + t] = a[1] + a[2];
                        v[e2 + t] = a[2] - a[1];
                        v[e3 + t] = a[1] - a[3];
                    }
                }
            }
        }
        let mut m = vec![0f32; 16 * o * count];
        for e in 0..16 {
            // SAFETY: the three buffers have the sizes and row strides passed here.
            unsafe {
                gemm::gemm(
                    o,
                    count,
                    c,
                    m.as_mut_ptr().add(e * o * count),
                    1,
                    count as isize,
                    false,
                    u.as_ptr().add(e * o * c),
                    1,
                    c as isize,
                    v.as_ptr().add(e * c * count),
                    1,
                    count as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        let mut y = vec![0f32; 4 * tw];
        for oc in 0..o {
            for r in 0..rows {
                let (b, ty) = ((row0 + r) / th, (row0 + r) % th);
                let me = |e: usize| &m[(e * o + oc) * count + r * tw..][..tw];
                let (y0, rest) = y.split_at_mut(tw);
                let (y1, rest) = rest.split_at_mut(tw);
                let (y2, y3) = rest.split_at_mut(tw);
                let ms: [&[f32]; 16] = std::array::from_fn(me);
                for t in 0..tw {
                    let a = |j: usize| ms[j][t] + ms[4 + j][t] + ms[8 + j][t];
                    let d = |j: usize| ms[4 + j][t] - ms[8 + j][t] - ms[12 + j][t];
                    let (a0, a1, a2, a3) = (a(0), a(1), a(2), a(3));
                    let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
                    y0[t] = a0 + a1 + a2 + bias[oc];
                    y1[t] = a1 - a2 - a3 + bias[oc];
                    y2[t] = d0 + d1 + d2 + bias[oc];
                    y3[t] = d1 - d2 - d3 + bias[oc];
                }
                for (i, (even, odd)) in [(&*y0, &*y1), (&*y2, &*y3)].into_iter().enumerate() {
                    let oy = 2 * ty + i;
                    if oy >= h {
                        continue;
                    }
                    // SAFETY: each output row of this channel is written by one unit only.
                    let line = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.0.add(((b * o + oc) * h + oy) * w),
                            w,
                        )
                    };
                    for (t, pair) in line.chunks_mut(2).enumerate() {
                        pair[0] = even[t];
                        if let Some(second) = pair.get_mut(1) {
                            *second = odd[t];
                        }
                    }
                }
            }
        }
    });
    out
}

/// A convolution written on host vectors, run on the tensors' values; the copies both
/// ways are part of its time, as they would be inside Lumen.
fn through_host(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: &Tensor<1>,
    out_dims: [usize; 4],
    convolve: impl Fn(&[f32], &[f32], &[f32]) -> Vec<f32>,
) -> Tensor<4> {
    let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("float32");
    let out = convolve(
        &values(x.clone().flatten(0, 3)),
        &values(weight.clone().flatten(0, 3)),
        &values(bias.clone()),
    );
    Tensor::from_data(TensorData::new(out, out_dims), &x.device())
}

fn median_ms(repeats: usize, mut run: impl FnMut() -> Tensor<4>) -> f64 {
    let _ = run().into_data(); // warm-up
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            let _ = run().into_data();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args = Args::parse();
    let device = Device::flex();
    let n = args.batch;
    let mut totals = [0.0; 4];
    println!(
        "resnet18 convolutions, batch {n}, ms per call (median of {}):",
        args.repeats
    );
    println!(
        "{:<28} {:>9} {:>9} {:>11} {:>9}",
        "layer", "flex", "host", "tensor ops", "winograd"
    );
    for layer in &RESNET18 {
        let Layer {
            channels_in,
            channels_out,
            size,
            kernel,
            stride,
            count,
        } = *layer;
        let x = Tensor::<4>::random([n, channels_in, size, size], Distribution::Default, &device);
        let weight = Tensor::<4>::random(
            [channels_out, channels_in, kernel, kernel],
            Distribution::Default,
            &device,
        );
        let bias = Tensor::<1>::random([channels_out], Distribution::Default, &device);
        let options = ConvOptions::new([stride, stride], [kernel / 2; 2], [1, 1], 1);
        let flex = || {
            conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                options.clone(),
            )
        };
        let side = out_size(size, kernel, stride);
        let host = || {
            through_host(
                &x,
                &weight,
                &bias,
                [n, channels_out, side, side],
                |x, w, b| {
                    host_conv(
                        x,
                        [n, channels_in, size, size],
                        w,
                        channels_out,
                        kernel,
                        stride,
                        b,
                    )
                },
            )
        };
        let tensor_ops = || tensor_ops_conv(x.clone(), weight.clone(), bias.clone(), stride);
        let winograd = || {
            through_host(
                &x,
                &weight,
                &bias,
                [n, channels_out, size, size],
                |x, w, b| winograd_conv(x, [n, channels_in, size, size], w, channels_out, b),
            )
        };
        let reference = flex();
        let mut checks = vec![("host", host()), ("tensor ops", tensor_ops())];
        let winograd_applies = kernel == 3 && stride == 1;
        if winograd_applies {
            checks.push(("winograd", winograd()));
        }
        for (name, other) in checks {
            let diff: f32 = (reference.clone() - other).abs().max().into_scalar();
            assert!(diff < 1e-2, "{name} disagrees with flex by {diff}");
        }
        let times = [
            median_ms(args.repeats, flex),
            median_ms(args.repeats, host),
            median_ms(args.repeats, tensor_ops),
            if winograd_applies {
                median_ms(args.repeats, winograd)
            } else {
                f64::NAN
            },
        ];
        let name = format!("{channels_in}->{channels_out} {size}px k{kernel} s{stride} x{count}");
        let winograd_cell = if winograd_applies {
            format!("{:.1}", times[3])
        } else {
            "-".to_string()
        };
        println!(
            "{name:<28} {:>9.1} {:>9.1} {:>11.1} {winograd_cell:>9}",
            times[0], times[1], times[2]
        );
        // The winograd total is a network that uses it where it applies and flex elsewhere.
        let winograd_or_flex = if winograd_applies { times[3] } else { times[0] };
        for (total, time) in totals
            .iter_mut()
            .zip([times[0], times[1], times[2], winograd_or_flex])
        {
            *total += time * count as f64;
        }
    }
    println!(
        "{:<28} {:>9.1} {:>9.1} {:>11.1} {:>9.1}   (network total per batch, counts applied)",
        "total", totals[0], totals[1], totals[2], totals[3]
    );
}
