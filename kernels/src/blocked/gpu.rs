//! The blocked engine's row sums on the GPU (`accumulate.wgsl`): a destination block's
//! sums live in one device buffer; each chunk it reads is streamed from host memory
//! (chunks are cached on the host by the engine's pager, within the budget) and added
//! by dispatches whose edge arrays each fit a binding (wgpu caps a storage binding at
//! 2^31 − 4 bytes on every adapter); the sums are read back once per block.
//! The CPU twin is `accumulate` in mod.rs; both add each row's edges in chunk order onto
//! what the earlier chunks left, so they give the same bits (tested on lavapipe).

use wgpu::util::DeviceExt;

use super::{BlockState, Chunk};
use crate::device::{Gpu, RunScopes, bind, compile, dispatch_dims, read_back};
use crate::{Error, Result};

const SHADER: &str = include_str!("accumulate.wgsl");

/// The compiled kernel.
pub(crate) struct GpuAccumulate {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    /// Edges per dispatch at most (tests force it small so the splitting runs).
    pub(crate) max_edges: usize,
}

/// One destination block's sums on the device.
pub(crate) struct DeviceSums {
    acc: wgpu::Buffer,
    rows: usize,
    scopes: Option<RunScopes>,
}

impl GpuAccumulate {
    pub(crate) fn new(gpu: &Gpu) -> Result<Self> {
        // params, row_ptr, src, weight, gate, f_src, acc.
        let read_only = [true, true, true, true, true, false];
        let mut c = compile(gpu, "accumulate.wgsl", SHADER, &read_only, &["add"])?;
        let pipeline = c.pipelines.pop().ok_or_else(|| Error::Gpu {
            what: "pipeline",
            reason: "no entry point".into(),
        })?;
        Ok(Self {
            layout: c.layout,
            pipeline,
            max_edges: usize::try_from(gpu.max_binding_bytes() / 4).unwrap_or(usize::MAX),
        })
    }

    /// Zeroed sums for a block of `rows` nodes.
    pub(crate) fn start(&self, gpu: &Gpu, rows: usize) -> Result<DeviceSums> {
        if (rows as u64) * 4 > gpu.max_binding_bytes() {
            return Err(Error::TooLarge(format!(
                "blocks of {rows} nodes need {} bytes in one binding; the adapter allows {}: use smaller graph blocks",
                rows * 4,
                gpu.max_binding_bytes()
            )));
        }
        let scopes = RunScopes::push(gpu);
        let acc = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("acc"),
                contents: bytemuck::cast_slice(&vec![0f32; rows.max(1)]),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            });
        Ok(DeviceSums {
            acc,
            rows,
            scopes: Some(scopes),
        })
    }

    /// Adds one chunk (`src`: the source block's state; None for seed chunks).
    pub(crate) fn add(
        &self,
        gpu: &Gpu,
        sums: &DeviceSums,
        c: &Chunk,
        src: Option<&BlockState>,
        min_value: f32,
    ) -> Result<()> {
        if c.is_empty() {
            return Ok(());
        }
        let d = &gpu.device;
        let storage = |label, contents: &[u8]| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let f_src = match src {
            Some(s) if !s.fraction.is_empty() => {
                storage("f_src", bytemuck::cast_slice(&s.fraction))
            }
            _ => storage("f_src", bytemuck::cast_slice(&[0f32])),
        };
        // Runs of at most max_edges consecutive edges, one dispatch each. A run may end or
        // start inside a row: the dispatches go in order, each adding its part of a row
        // onto what the one before left, so a split row sums in the same order.
        let mut e0 = 0usize;
        while e0 < c.len() {
            let e1 = (e0 + self.max_edges).min(c.len());
            let row0 = c.dst[e0];
            let last = c.dst[e1 - 1];
            let rows = (last - row0 + 1) as usize;
            // row_ptr over rows row0..=last, rebased to e0.
            let mut ptr = vec![0u32; rows + 1];
            for e in e0..e1 {
                ptr[(c.dst[e] - row0) as usize + 1] += 1;
            }
            for i in 0..rows {
                ptr[i + 1] += ptr[i];
            }
            let params = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&[
                    row0,
                    rows as u32,
                    min_value.to_bits(),
                    u32::from(src.is_none()),
                ]),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let buffers = [
                &params,
                &storage("row_ptr", bytemuck::cast_slice(&ptr)),
                &storage("src", bytemuck::cast_slice(&c.src[e0..e1])),
                &storage("weight", bytemuck::cast_slice(&c.weight[e0..e1])),
                &storage("gate", bytemuck::cast_slice(&c.gate[e0..e1])),
                &f_src,
                &sums.acc,
            ];
            let group = bind(gpu, &self.layout, &buffers);
            let mut enc = d.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&self.pipeline);
                pass.set_bind_group(0, &group, &[]);
                let (x, y) = dispatch_dims(rows as u32, gpu);
                pass.dispatch_workgroups(x, y, 1);
            }
            gpu.queue.submit([enc.finish()]);
            e0 = e1;
        }
        Ok(())
    }

    /// The block's sums, read back.
    pub(crate) fn finish(&self, gpu: &Gpu, mut sums: DeviceSums) -> Result<Vec<f32>> {
        let bits = read_back(gpu, &sums.acc, sums.rows.max(1))?;
        if let Some(s) = sums.scopes.take() {
            s.check()?;
        }
        let mut out: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
        out.truncate(sums.rows);
        if let Some(v) = out.iter().position(|f| !f.is_finite() || *f < 0.0) {
            return Err(Error::Gpu {
                what: "blocked accumulate",
                reason: format!("row {v} read back {}", out[v]),
            });
        }
        Ok(out)
    }
}
