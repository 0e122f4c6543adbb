//! Choosing where kernels run. The wgpu instance honours `WGPU_BACKEND` (and the other
//! `WGPU_*` variables): CI pins `WGPU_BACKEND=vulkan` so lavapipe runs the shaders.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::{Error, Result};

/// Threads per workgroup in every shader.
pub const WORKGROUP_SIZE: u32 = 256;

fn gpu_err(what: &'static str) -> impl Fn(String) -> Error {
    move |reason| Error::Gpu { what, reason }
}

/// What the user asked for with `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A hardware GPU when there is one, the CPU otherwise.
    Auto,
    /// Any wgpu adapter, software ones (lavapipe) included; an error when none exists.
    Gpu,
    /// The rayon CPU path.
    Cpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "gpu" => Ok(Self::Gpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!("unknown device `{other}` (auto, gpu, cpu)")),
        }
    }
}

/// An open wgpu device with the adapter's own limits.
#[derive(Debug)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Chosen by `--device auto`: a graph beyond the adapter's limits then runs on the
    /// CPU instead of failing.
    pub auto: bool,
}

impl Gpu {
    /// The largest storage buffer one binding may hold, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Whether the adapter is a software rasteriser (lavapipe, llvmpipe, WARP).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }
}

/// Where a kernel runs.
#[derive(Clone, Debug)]
pub enum Backend {
    Cpu,
    Gpu(Arc<Gpu>),
}

impl Backend {
    /// A short description for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu => format!("cpu (rayon, {} threads)", rayon::current_num_threads()),
            Backend::Gpu(g) => format!(
                "gpu {} ({:?}, {:?})",
                g.info.name, g.info.device_type, g.info.backend
            ),
        }
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    // Compute needs no GL: unless WGPU_BACKEND asks, skip it (probing EGL on a headless
    // machine only prints driver errors).
    desc.backends = wgpu::Backends::PRIMARY;
    wgpu::Instance::new(desc.with_env())
}

fn open(adapter: wgpu::Adapter, auto: bool) -> Result<Gpu> {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let desc = wgpu::DeviceDescriptor {
        label: Some("ferret"),
        required_limits: limits.clone(),
        ..Default::default()
    };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::Device {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
    Ok(Gpu {
        device,
        queue,
        info,
        limits,
        auto,
    })
}

/// Opens the backend for `choice`, logging which one runs.
pub fn select(choice: DeviceChoice) -> Result<Backend> {
    let backend = match choice {
        DeviceChoice::Cpu => Backend::Cpu,
        DeviceChoice::Gpu => {
            let adapter =
                pollster::block_on(instance().request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                }))
                .map_err(|_| Error::NoAdapter)?;
            Backend::Gpu(Arc::new(open(adapter, false)?))
        }
        DeviceChoice::Auto => {
            let adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
            let hardware = adapters.into_iter().find(|a| {
                matches!(
                    a.get_info().device_type,
                    wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
                )
            });
            match hardware {
                Some(a) => Backend::Gpu(Arc::new(open(a, true)?)),
                None => Backend::Cpu,
            }
        }
    };
    tracing::info!(device = %backend.describe(), ?choice, "kernel device");
    Ok(backend)
}

/// A compiled shader: the bind group layout (a uniform at binding 0, then storage
/// buffers) and one compute pipeline per entry point, in the order asked.
pub(crate) struct Compiled {
    pub layout: wgpu::BindGroupLayout,
    pub pipelines: Vec<wgpu::ComputePipeline>,
}

/// Compiles `source`. `storage_read_only` gives bindings 1, 2, … in the WGSL's order.
pub(crate) fn compile(
    gpu: &Gpu,
    label: &'static str,
    source: &str,
    storage_read_only: &[bool],
    entry_points: &[&'static str],
) -> Result<Compiled> {
    let d = &gpu.device;
    let scope = d.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let entry = |binding: u32, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let entries: Vec<_> = std::iter::once(entry(0, wgpu::BufferBindingType::Uniform))
        .chain(
            storage_read_only
                .iter()
                .zip(1u32..)
                .map(|(&read_only, b)| entry(b, wgpu::BufferBindingType::Storage { read_only })),
        )
        .collect();
    let layout = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    });
    let pipeline_layout = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipelines = entry_points
        .iter()
        .map(|&entry| {
            d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        })
        .collect();
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Gpu {
            what: "pipeline",
            reason: e.to_string(),
        });
    }
    Ok(Compiled { layout, pipelines })
}

/// A bind group over whole buffers, bound 0, 1, … in order.
pub(crate) fn bind(
    gpu: &Gpu,
    layout: &wgpu::BindGroupLayout,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
        .iter()
        .zip(0u32..)
        .map(|(b, binding)| wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        })
        .collect();
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout,
        entries: &entries,
    })
}

/// The error scopes around one kernel run: out-of-memory inside validation.
pub(crate) struct RunScopes {
    // Fields drop in order: an early return pops the inner scope first, as wgpu requires
    // (the other order panics).
    oom: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
}

impl RunScopes {
    pub(crate) fn push(gpu: &Gpu) -> Self {
        let validation = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        Self { oom, validation }
    }

    /// Pops both scopes, innermost first: any error they caught fails the run.
    pub(crate) fn check(self) -> Result<()> {
        if let Some(e) = pollster::block_on(self.oom.pop()) {
            return Err(Error::Gpu {
                what: "memory",
                reason: e.to_string(),
            });
        }
        if let Some(e) = pollster::block_on(self.validation.pop()) {
            return Err(Error::Gpu {
                what: "validation",
                reason: e.to_string(),
            });
        }
        Ok(())
    }
}

/// A kernel's `changed` flag: one `u32` the shader sets, cleared by the host before each
/// round and read back after it ([`changed_flag`]).
pub(crate) fn changed_buffer(gpu: &Gpu) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("changed"),
        size: 4,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Reads a kernel's `changed` flag: 0 or 1, anything else means the kernel never ran.
pub(crate) fn changed_flag(gpu: &Gpu, flag: &wgpu::Buffer, what: &'static str) -> Result<bool> {
    match read_back(gpu, flag, 1)?[0] {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Error::Gpu {
            what,
            reason: format!("changed flag read back as {other:#x}: the kernel did not run"),
        }),
    }
}

/// Runs `gpu_run` on the GPU; when the adapter was chosen by `auto` and the graph is beyond
/// its limits, runs `cpu_run` instead (and says so).
pub(crate) fn gpu_or_cpu<T>(
    gpu: &Gpu,
    gpu_run: impl FnOnce() -> Result<T>,
    cpu_run: impl FnOnce() -> T,
) -> Result<T> {
    match gpu_run() {
        Err(Error::TooLarge(why)) if gpu.auto => {
            tracing::warn!(%why, adapter = %gpu.info.name, "beyond the GPU's limits: running on the CPU");
            Ok(cpu_run())
        }
        other => other,
    }
}

/// Workgroups for `items` threads, spilling into y past the per-dimension limit.
pub(crate) fn dispatch_dims(items: u32, gpu: &Gpu) -> (u32, u32) {
    let groups = items.div_ceil(WORKGROUP_SIZE).max(1);
    let max_x = gpu.limits.max_compute_workgroups_per_dimension.max(1);
    let x = groups.min(max_x);
    (x, groups.div_ceil(x))
}

/// Copies `len` u32s of `buf` into a staging buffer pre-filled with a sentinel and reads
/// them back (a failed copy shows as the sentinel, never as plausible zeros).
pub(crate) fn read_back(gpu: &Gpu, buf: &wgpu::Buffer, len: usize) -> Result<Vec<u32>> {
    let d = &gpu.device;
    let size = (len * 4) as u64;
    let sentinel = vec![0xffu8; len * 4];
    let staging = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("staging"),
        contents: &sentinel,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    });
    let mut enc = d.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
    gpu.queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    d.poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| gpu_err("poll")(e.to_string()))?;
    rx.recv()
        .map_err(|e| gpu_err("map")(e.to_string()))?
        .map_err(|e| gpu_err("map")(e.to_string()))?;
    let view = staging
        .get_mapped_range(..)
        .map_err(|e| gpu_err("map")(e.to_string()))?;
    let out = bytemuck::cast_slice::<u8, u32>(&view).to_vec();
    drop(view);
    staging.unmap();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_the_cpu_beyond_the_limits_and_gpu_does_not() {
        let Some(g) = crate::testing::gpu() else {
            return;
        };
        let too_large = || -> Result<u32> { Err(Error::TooLarge("a test graph".into())) };
        // `--device gpu`: the error stands.
        assert!(matches!(
            gpu_or_cpu(&g, too_large, || 7),
            Err(Error::TooLarge(_))
        ));
        // `--device auto`: the CPU answers.
        let auto = Gpu {
            device: g.device.clone(),
            queue: g.queue.clone(),
            info: g.info.clone(),
            limits: g.limits.clone(),
            auto: true,
        };
        assert_eq!(gpu_or_cpu(&auto, too_large, || 7).expect("cpu"), 7);
        // Other errors are not hidden.
        let lost = || -> Result<u32> {
            Err(Error::Gpu {
                what: "test",
                reason: "lost".into(),
            })
        };
        assert!(gpu_or_cpu(&auto, lost, || 7).is_err());
    }
}
