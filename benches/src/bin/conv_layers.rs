//! Where flex's convolution time goes, layer by layer: resnet18's convolutions at
//! 224 px, timed three ways on the default (flex) device, so that "is the gap to torch
//! ours or the kernel's?" has a measured answer (docs/performance.md, Which CPU
//! backend):
//!
//! - `flex`: Burn's `conv2d` (tiled im2col + the `gemm` crate);
//! - `host`: a Caffe-style convolution written here, im2col straight from the NCHW
//!   rows and one `gemm` call per image into the NCHW output (no layout conversion,
//!   no scatter), images in parallel;
//! - `tensor ops`: im2col built from Burn tensor ops (stepped slices, stack) and one
//!   batched matmul, the variant that would keep autodiff for free.
//!
//! ```text
//! cargo build --release -p lumen-cli -p lumen-benches --bins
//! target/release/conv_layers [--batch 8] [--repeats 5]
//! ```
//!
//! Each row checks that the three agree (max absolute difference) before timing.

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
                for oy in 0..oh {
                    let dst = &mut column[oy * ow..(oy + 1) * ow];
                    let Some(iy) = (oy * stride + ki).checked_sub(pad).filter(|&iy| iy < h) else {
                        continue; // stays zero: the padding
                    };
                    let src = &plane[iy * w..(iy + 1) * w];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        if let Some(ix) = (ox * stride + kj).checked_sub(pad).filter(|&ix| ix < w) {
                            *d = src[ix];
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
    let mut totals = [0.0; 3];
    println!(
        "resnet18 convolutions, batch {n}, ms per call (median of {}):",
        args.repeats
    );
    println!(
        "{:<28} {:>9} {:>9} {:>11}",
        "layer", "flex", "host", "tensor ops"
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
        let host = || {
            let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("float32");
            let out = host_conv(
                &values(x.clone().flatten(0, 3)),
                [n, channels_in, size, size],
                &values(weight.clone().flatten(0, 3)),
                channels_out,
                kernel,
                stride,
                &values(bias.clone()),
            );
            let side = out_size(size, kernel, stride);
            let data = TensorData::new(out, [n, channels_out, side, side]);
            Tensor::<4>::from_data(data, &device)
        };
        let tensor_ops = || tensor_ops_conv(x.clone(), weight.clone(), bias.clone(), stride);
        let reference = flex();
        for (name, other) in [("host", host()), ("tensor ops", tensor_ops())] {
            let diff: f32 = (reference.clone() - other).abs().max().into_scalar();
            assert!(diff < 1e-2, "{name} disagrees with flex by {diff}");
        }
        let times = [
            median_ms(args.repeats, flex),
            median_ms(args.repeats, host),
            median_ms(args.repeats, tensor_ops),
        ];
        let name = format!("{channels_in}->{channels_out} {size}px k{kernel} s{stride} x{count}");
        println!(
            "{name:<28} {:>9.1} {:>9.1} {:>11.1}",
            times[0], times[1], times[2]
        );
        for (total, time) in totals.iter_mut().zip(times) {
            *total += time * count as f64;
        }
    }
    println!(
        "{:<28} {:>9.1} {:>9.1} {:>11.1}   (network total per batch, counts applied)",
        "total", totals[0], totals[1], totals[2]
    );
}
